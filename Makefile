# Two commands do all the set-up on a fresh machine:
#   make demo   creates .venv, installs the project, runs `flashvid demo`: clips made from
#               scikit-image's bundled photographs, compressed at 10%, summary + PNG figures
#   make test   the same set-up, then the test suite (without a GPU the Triton kernels run in
#               the CPU interpreter: tests/conftest.py sets TRITON_INTERPRET=1)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# CPU machines: this pin takes the CPU wheel; where torch is already importable it is kept.
TORCH_PIN ?= torch==2.13.0

.PHONY: setup demo test lint clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e ".[test,hf,viz,demo]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/flashvid demo

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m pip install -q ruff && $(PY) -m ruff check flashvid flashvid_kernels benchmarks tests

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
