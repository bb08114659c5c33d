"""tests/eval: the lmms-eval plugin and ``flashvid eval``.

The files named test_lmms_*.py need lmms-eval (``make test-eval`` builds .venv-eval for them);
elsewhere they are not collected, and the other files (model_args, the meter, rows, plots, the
command line) run in the main suite too. The lmms-eval tests share one session workspace:
tiny checkpoints (checkpoints.py) and the flashvid_clips_mc task's data (taskdata.py), built
in a temporary folder, with Hugging Face offline and its caches inside that folder.

The models are tiny: one torch thread each (two threads contend on a shared 2-core machine and
make every small matmul 100x slower), here and in the processes the tests start.
"""

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

if importlib.util.find_spec("lmms_eval") is None:
    collect_ignore_glob = ["test_lmms_*.py"]


@pytest.fixture(scope="session")
def workspace(tmp_path_factory):
    """A folder with ``data/`` (the task's clips and questions; run lmms-eval in it) and
    ``models/<family>`` (tiny checkpoints, built on first use by :func:`checkpoint`)."""
    root = tmp_path_factory.mktemp("eval")
    names = {"HF_HOME": root / "hf", "HF_DATASETS_CACHE": root / "hf" / "ds",
             "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
             "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update({name: str(value) for name, value in names.items()})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    import taskdata

    taskdata.write(root / "data")
    yield root
    torch.set_num_threads(threads)
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def checkpoint(workspace):
    """checkpoint(family) -> path of a tiny checkpoint, built once per session."""
    import checkpoints

    built = {}

    def get(family):
        if family not in built:
            built[family] = checkpoints.build(family, workspace / "models" / family)
        return built[family]

    return get


@pytest.fixture
def in_data(workspace, monkeypatch):
    """Run the test in the task's data folder (its data file is a relative path)."""
    monkeypatch.chdir(workspace / "data")
    return workspace / "data"
