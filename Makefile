# The README's two commands, with their set-up:
#
#   make perf      the main job: pytest perf $(ARGS), e.g. make perf ARGS=--benchmark-autosave
#   make test      the tests: pytest -n auto tests perf
#   make venv      only the set-up; make lint: ruff check .; make clean: remove the environment
#
# Both run inside $(VENV), created on first use and updated whenever pyproject.toml changes.
# torch is installed first, pinned ($(TORCH)): with no torch installed, pip resolves an open
# range to a multi-GB CUDA build. Where a GPU is visible (nvidia-smi -L succeeds) pip installs
# the default build (CUDA on Linux); where none is, the CPU build is wanted: pip finds it where
# it is configured to (a local wheel, a mirror), or set TORCH_CPU_INDEX to PyTorch's CPU index:
#
#   make test TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
#
# (not the default: where that index cannot be reached, pip would wait on it and fail).

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
TORCH_CPU_INDEX ?=
GPU ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo visible)
ARGS ?=

BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_FROM := $(if $(GPU),,$(if $(TORCH_CPU_INDEX),--index-url $(TORCH_CPU_INDEX)))
# The environment's commands first, as after `. $(VENV)/bin/activate` (tests start subprocesses).
IN_VENV := PATH="$(abspath $(BIN)):$$PATH" VIRTUAL_ENV="$(abspath $(VENV))"

.PHONY: perf test venv lint clean

perf: $(STAMP)
	$(IN_VENV) pytest perf $(ARGS)

test: $(STAMP)
	$(IN_VENV) pytest -n auto tests perf

lint: $(STAMP)
	$(IN_VENV) ruff check .

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "GPU $(if $(GPU),visible: the default torch build,not visible: the CPU torch build)"
	$(BIN)/python -m pip install -q $(TORCH_FROM) '$(TORCH)'
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

clean:
	rm -rf $(VENV)
