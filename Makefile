# Two commands do everything on a fresh clone: `make repro` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
WORKERS ?= 2
HTTP_PORT ?= 8000
GRPC_PORT ?= 8001
METRICS_PORT ?= 8002

.PHONY: help setup lock test test-fast test-cpu-paths repro params serve docs bench clean
.DEFAULT_GOAL := help

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

setup: $(STAMP) ## create .venv exactly as the lock says: the project, its test dependencies, TAO's reference code, Triton

# environment/manage.py installs exactly what environment/cpython-<version>-linux-x86_64/ pins, every hash
# checked: .venv, .venv/tao-reference (TAO's own code, the tests' oracle), .venv/triton (tritonserver),
# .venv/triton-env (what Triton's Python models import) and .venv/perf-analyzer (Triton's load generator).
# A failed setup leaves no .venv behind.
$(STAMP): pyproject.toml Makefile environment/manage.py environment/uv.txt $(wildcard environment/*/*.txt)
	$(PYTHON) environment/manage.py install --venv $(VENV)

lock: ## refresh the lock from pyproject.toml and environment/*.in (make lock upgrade=PACKAGE: move one package)
	$(PYTHON) environment/manage.py lock $(foreach p,$(upgrade),--upgrade $(p))

test: setup ## run the test suite (on WORKERS processes, 2 by default: a test file per worker at a time)
	$(PY) -m pytest -q -n $(WORKERS) --dist loadfile

test-fast: setup ## run every test that builds no whole project (a few minutes): the loop while changing code
	$(PY) -m pytest -q -n $(WORKERS) --dist loadfile -m "not project"

test-cpu-paths: setup ## run the test suite on other CPUs' kernels, one path at a time (tests/cpu_paths.py)
	$(PY) tests/cpu_paths.py

repro: setup ## run the whole pipeline on the bundled sample (open backend, no TAO, no GPU)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" dvc repro

params: setup ## rewrite params.yaml from conf/ (make params experiment=NAME: with conf/experiment/NAME.yaml)
	$(PY) -m stages.params $(if $(experiment),experiment=$(experiment))

serve: setup ## serve artifacts/triton with Triton on localhost (HTTP_PORT=8000, GRPC_PORT=8001, METRICS_PORT=8002, CONTROL_HEADER=name=value)
	$(PY) -m stages.serving.server --repository artifacts/triton --http-port $(HTTP_PORT) --grpc-port $(GRPC_PORT) --metrics-port $(METRICS_PORT)$(if $(CONTROL_HEADER), --control-header $(CONTROL_HEADER))

docs: setup ## serve the documentation site on localhost:8008 (mkdocs; the sample's plots after make repro)
	$(PY) -m mkdocs serve --dev-addr 127.0.0.1:8008

bench: setup ## run the benchmarks in bench/
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean: ## remove the virtual environment
	rm -rf $(VENV)
