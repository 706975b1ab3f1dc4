# Two commands do everything on a fresh clone: `make repro` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# what Triton's Python models import, installed in .venv/triton-env at .venv's versions
TRITON_ENV_PACKAGES := onnxruntime onnx pillow scikit-learn scipy numba
export PINNED = import sys; from importlib.metadata import version; print(*(f"{p}=={version(p)}" for p in sys.argv[1:]))

.PHONY: help setup test test-cpu-paths repro params serve bench clean
.DEFAULT_GOAL := help

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

setup: $(STAMP) ## create .venv and install the project with its test dependencies

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	# TAO's own code for the compatibility tests: TAO Deploy's spec messages, TensorFile reader,
	# post-processing and KITTI metric, the launcher's mounts-file and task handling. Importable (a .pth
	# file) but off PATH: their commands need TAO's container, and their dependencies are the container's
	# (hence --no-deps). Exact versions: the tests read their internals, which move between releases.
	rm -rf $(VENV)/tao-reference
	$(PY) -m pip install -q --no-deps --target $(VENV)/tao-reference 'nvidia-tao-deploy==7.3.0' 'nvidia-tao==6.26.3'
	$(PY) -c 'import pathlib, site, sys; pathlib.Path(site.getsitepackages()[0], "tao-reference.pth").write_text(sys.argv[1] + "\n")' "$(abspath $(VENV))/tao-reference"
	# Triton for `make serve` and the serving tests: the tritonserver that nvidia-pytriton bundles (Python
	# backend only). Its Python code wants numpy<2, so only its binary and libraries are used: --no-deps,
	# off sys.path. The Python backend needs the stub built for this Python beside it.
	rm -rf $(VENV)/triton
	$(PY) -m pip install -q --no-deps --target $(VENV)/triton 'nvidia-pytriton==0.7.0'
	chmod +x $(VENV)/triton/pytriton/tritonserver/bin/tritonserver
	cp $(VENV)/triton/pytriton/tritonserver/python_backend_stubs/$$($(PY) -c 'import sys; print("%d.%d" % sys.version_info[:2])')/triton_python_backend_stub \
	   $(VENV)/triton/pytriton/tritonserver/backends/python/
	chmod +x $(VENV)/triton/pytriton/tritonserver/backends/python/triton_python_backend_stub
	# The environment Triton's Python models run in (EXECUTION_ENV_PATH): the project and the same
	# library versions as .venv, but numpy<2. That stub was built against numpy 1: under numpy 2 it
	# garbles every TYPE_STRING input (the length of an encoded image is read as its first byte, 4 times).
	rm -rf $(VENV)/triton-env
	$(PYTHON) -m venv $(VENV)/triton-env
	$(VENV)/triton-env/bin/pip install -q 'numpy<2' $$($(PY) -c "$$PINNED" $(TRITON_ENV_PACKAGES))
	$(VENV)/triton-env/bin/pip install -q --no-deps -e .
	touch $(STAMP)

test: setup ## run the test suite
	$(PY) -m pytest -q

test-cpu-paths: setup ## run the test suite on other CPUs' kernels, one path at a time (tests/cpu_paths.py)
	$(PY) tests/cpu_paths.py

repro: setup ## run the whole pipeline on the bundled sample (open backend, no TAO, no GPU)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" dvc repro

params: setup ## rewrite params.yaml from conf/ (make params experiment=NAME: with conf/experiment/NAME.yaml)
	$(PY) -m stages.params $(if $(experiment),experiment=$(experiment))

serve: setup ## serve artifacts/triton with Triton on localhost (HTTP 8000, gRPC 8001; after make repro)
	$(PY) -m stages.serving.server --repository artifacts/triton

bench: setup ## run the benchmarks in bench/
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean: ## remove the virtual environment
	rm -rf $(VENV)
