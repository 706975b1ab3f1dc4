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
