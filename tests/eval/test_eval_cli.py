"""`flashvid eval` on the command line: lazy imports, option checks, --plot. Runs in every
environment (the lmms-eval runs are in test_lmms_sweep.py)."""

import json
import subprocess
import sys

import pytest

from flashvid.cli import main
from flashvid.eval import rows

pytestmark = pytest.mark.slow  # fresh interpreters


def _python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                          text=True).stdout


def test_help_imports_nothing_heavy():
    out = _python(
        "import sys, contextlib, io\n"
        "from flashvid.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as f:\n"
        "    try: main(['eval', '--help'])\n"
        "    except SystemExit: pass\n"
        "heavy = [m for m in ('lmms_eval', 'transformers', 'matplotlib') if m in sys.modules]\n"
        "print(repr(heavy)); print(f.getvalue())\n")
    first, _, text = out.partition("\n")
    assert first == "[]"
    assert "--retention" in text and "--pairs" in text and "flashvid_llava_hf" in text


@pytest.mark.parametrize("argv, message", [
    (["eval", "--tasks", "t"], "--model"),
    (["eval", "--model", "flashvid_qwen2_5_vl", "--tasks", "t", "--pairs", "0.1:16",
      "--retention", "0.1"], "--pairs replaces"),
    (["eval", "--model", "m", "--tasks", "t", "--resume", "--overwrite"], "exclude"),
    (["eval", "--model", "m", "--tasks", "t", "--batch-size", "0"], "--batch-size"),
])
def test_bad_options(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_bad_list_values(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--model", "m", "--tasks", "t", "--pairs", "0.1-16"])
    assert "R:F pairs" in capsys.readouterr().err


def test_plot_redraws_from_the_rows(tmp_path, capsys):
    row = rows.complete({"run": "r", "benchmark": "t", "task": "t", "metric": "acc",
                         "score": 1.0, "mode": "vanilla", "retention": 1.0, "frames": 8,
                         "visual_tokens": 100.0})
    (tmp_path / rows.JSONL).write_text(json.dumps(row) + "\n")
    assert main(["eval", "--plot", str(tmp_path)]) == 0
    assert (tmp_path / "accuracy_vs_retention.png").is_file()
    assert (tmp_path / "accuracy_vs_frames.png").is_file()
    assert "| t | acc | 8 | vanilla |" in (tmp_path / "summary.md").read_text()
    assert main(["eval", "--plot", str(tmp_path / "none")]) == 2
    assert "no result rows" in capsys.readouterr().err


def test_without_lmms_eval_the_error_says_how_to_install(capsys):
    import importlib.util

    if importlib.util.find_spec("lmms_eval") is not None:
        pytest.skip("lmms-eval is installed here (the message is for environments without it)")
    assert main(["eval", "--model", "flashvid_qwen2_5_vl", "--tasks", "t"]) == 2
    assert "pip install 'flashvid[eval]'" in capsys.readouterr().err
