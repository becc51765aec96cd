# spatia — set-up and main jobs. `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.spatia-installed
DEV    := $(VENV)/.spatia-dev-installed

.PHONY: demo test lint bench bench-quick render-bench sysdeps clean-demo help

help:
	@echo "make demo        set up .venv and run configs/demo.yaml into runs/demo"
	@echo "make test        set up .venv (with dev extras) and run the test suite"
	@echo "make bench       full benchmark suite into runs/bench (about 7 min here)"
	@echo "make bench-quick quick benchmark smoke run into runs/bench-quick"
	@echo "make lint        ruff"

# open3d's shared library needs libusb-1.0 at import time.
sysdeps:
	@if ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then :; \
	elif [ "$$(id -u)" = "0" ]; then \
	  echo "installing Debian package libusb-1.0-0 (needed by open3d)"; \
	  (apt-get install -y -q libusb-1.0-0 >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q libusb-1.0-0 >/dev/null)) \
	    || { echo "error: could not install libusb-1.0-0 with apt-get" >&2; exit 1; }; \
	else \
	  echo "error: open3d needs the system library libusb-1.0. Install it as root: apt-get install libusb-1.0-0" >&2; exit 1; \
	fi

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first and pinned: 2.13.0 resolves to the CPU wheel already on these machines
# (an unpinned torch would pull several GB of CUDA packages).
$(STAMP): setup.cfg pyproject.toml | $(BIN)/python sysdeps
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e .
	@touch $@

$(DEV): $(STAMP)
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

# Starts runs/demo, or resumes/finishes it if it is already there (nothing is overwritten).
demo: sysdeps $(STAMP)
	@if [ -f runs/demo/config.yaml ]; then \
	  $(BIN)/spatia run --out runs/demo --resume; \
	else \
	  $(BIN)/spatia run --config configs/demo.yaml --out runs/demo; \
	fi

clean-demo:
	rm -rf runs/demo

test: sysdeps $(DEV)
	$(BIN)/python -m pytest -q -m "not slow" tests

test-all: sysdeps $(DEV)
	$(BIN)/python -m pytest -q tests

lint: $(DEV)
	$(BIN)/ruff check spatia_py slam render tests examples

bench: sysdeps $(STAMP)
	$(BIN)/spatia bench --out runs/bench

bench-quick: sysdeps $(STAMP)
	$(BIN)/spatia bench --quick --out runs/bench-quick

render-bench: sysdeps $(STAMP)
	$(BIN)/python -m render.benchmark
