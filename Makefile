# Set-up and entry points. `make demo` and `make test` work on a fresh machine: they create the
# virtual environment when missing, install the pinned torch/torchvision pair first, then uncol.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.uncol-installed

.PHONY: install demo test test-all lint docs clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt torch torchvision
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/uncol demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest

test-all: $(STAMP)
	$(VENV)/bin/python -m pytest -m ""

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

docs: $(STAMP)
	$(VENV)/bin/uncol config docs > docs/configuration.md

clean:
	rm -rf $(VENV) runs
