# The two commands a new user needs (see README):
#   make demo   - installs what is missing, then runs the main job on the embedded default
#   make test   - installs what is missing, then runs the test suite
# Installation is driven by requirements.lock and re-runs only when it or pyproject.toml changes.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
UV_VERSION := 0.13.9
# torch's CPU-only wheel: from a local wheel folder when there is one, else PyTorch's CPU index.
FIND_LINKS ?= $(if $(wildcard /opt/wheels/torch-*.whl),--find-links /opt/wheels,--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)

.PHONY: demo test lint lock bench clean-venv

$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required (PYTHON=$(PYTHON))")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# A venv made by uv has no pip; give it one rather than failing.
	@$(BIN)/python -m pip --version >/dev/null 2>&1 || $(BIN)/python -m ensurepip --upgrade >/dev/null
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	@# Byte-compile at install: imports take half the time, and PYTHONDONTWRITEBYTECODE (set on some
	@# machines) would otherwise keep every process compiling the stack from source.
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python $(FIND_LINKS) -r requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/ipa sweep --all

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# Regenerate the lock after changing a pin in pyproject.toml.
lock:
	$(BIN)/uv pip compile pyproject.toml $(FIND_LINKS) --extra dev --python-version 3.11 --quiet -o requirements.lock

bench: $(STAMP)
	$(BIN)/python benchmarks/solver_scaling.py

clean-venv:
	rm -rf $(VENV)
