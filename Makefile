# One entry point. Every target uses the virtual environment at .venv (created on demand).
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
PROFILE ?= toy

.PHONY: venv test book book-from-scratch organism-ship study clean-book bench help

help:
	@echo "make test    - create .venv (if needed) and run the test suite"
	@echo "make book    - create .venv, build the organism, run the study (PROFILE=$(PROFILE)) and render the book"
	@echo "make book-from-scratch - the same, but retrain the organism ladder here instead of using the shipped weights"
	@echo "make organism-ship     - (maintainers) train the ladder from scratch, check the premise, copy it to data/organism"
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

book-from-scratch: $(STAMP)
	L2S_ORGANISM_FROM_SCRATCH=1 $(VENV)/bin/l2s study --profile $(PROFILE)

organism-ship: $(STAMP)
	$(VENV)/bin/l2s organism --scale ladder --from-scratch --premise --ship

study: book

bench: $(STAMP)
	$(PY) benchmarks/merge_bench.py

clean-book:
	rm -rf book/_build
