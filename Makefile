# Two commands do everything on a fresh clone: `make repro` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: help setup test repro params bench clean
.DEFAULT_GOAL := help

help: ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

setup: $(STAMP) ## create .venv and install the project with its test dependencies

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	# TAO's spec messages and TensorFile reader, for compatibility tests; its own deps are TAO's container.
	$(PY) -m pip install -q --no-deps 'nvidia-tao-deploy>=5.0'
	touch $(STAMP)

test: setup ## run the test suite
	$(PY) -m pytest -q

repro: setup ## run the whole pipeline on the bundled sample (open backend, no TAO, no GPU)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" dvc repro

params: setup ## rewrite params.yaml from the Hydra configs in conf/
	$(PY) -m stages.params

bench: setup ## run the benchmarks in bench/
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean: ## remove the virtual environment
	rm -rf $(VENV)
