"""The vLLM plugin tests run only where vLLM is installed (``make test-vllm`` builds that
environment: vLLM's CPU wheel pins transformers < 5.20, so it is not the main test
environment). Elsewhere this folder is not collected."""

import importlib.util
import sys
from pathlib import Path


def _vllm_installed() -> bool:
    # tests/ is on sys.path (tests/conftest.py), so this folder itself looks like a namespace
    # package named "vllm": only a regular package with an __init__.py is vLLM.
    spec = importlib.util.find_spec("vllm")
    return spec is not None and str(spec.origin or "").endswith("__init__.py")


if not _vllm_installed():
    collect_ignore_glob = ["*.py"]
else:
    sys.path.insert(0, str(Path(__file__).parent))
    import harness

    harness.in_process()  # before anything imports vLLM

    import pytest
    import tiny_models

    _results: dict = {}

    @pytest.fixture(scope="session")
    def checkpoints(tmp_path_factory):
        root = tmp_path_factory.mktemp("tiny")
        return {family: tiny_models.build(family, root / family)
                for family in tiny_models.ALL_FAMILIES}

    @pytest.fixture(scope="session")
    def scenario(checkpoints):
        """scenario(family, mode) -> harness.Result, each engine started once per session."""

        def get(family, mode):
            key = (family, mode)
            if key not in _results:
                _results[key] = harness.run_scenario(family, mode, checkpoints[family])
            return _results[key]

        return get
