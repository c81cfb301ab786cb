# One entry point. Every target uses the virtual environment at .venv (created on demand).
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
PROFILE ?= toy

.PHONY: venv test book study clean-book bench help

help:
	@echo "make test    - create .venv (if needed) and run the test suite"
	@echo "make book    - create .venv, build the organism, run the study (PROFILE=$(PROFILE)) and render the book"
	@echo "make bench   - run the merge benchmark (needs ~10 GB free disk)"

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install -c constraints.txt -e ".[dev,book]"
	@touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

book: $(STAMP)
	$(VENV)/bin/l2s study --profile $(PROFILE)

study: book

bench: $(STAMP)
	$(PY) benchmarks/merge_bench.py

clean-book:
	rm -rf book/_build
