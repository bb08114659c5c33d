"""``flashvid compress``: the built-in clip, user files in three formats, output files, errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import flashvid
from flashvid.cli import main
from flashvid.io import load_tensors, save_tensors
from flashvid.synthetic import synthetic_clip

SMALL = ["--frames", "6", "--tokens", "49", "--dim", "32"]


def test_default_clip_summary(capsys, tmp_path):
    out_file = tmp_path / "out.pt"
    assert main(["compress", *SMALL, "--output", str(out_file)]) == 0
    text = capsys.readouterr().out
    for needle in ("built-in synthetic clip", "6 frames x 49 tokens x 32 dims", "segments",
                   "ADTS", "TSTM", "DPC-kNN", "output", "time", "wrote"):
        assert needle in text
    saved = load_tensors(out_file)
    x, a = synthetic_clip(6, 49, 32)
    want = flashvid.compress(x, a)
    assert torch.equal(saved["indices"], want.indices)
    assert torch.equal(saved["tokens"], want.tokens)
    assert f"output     {want.tokens.shape[0]} tokens" in text


@pytest.mark.parametrize("suffix", [".pt", ".npz", ".safetensors"])
def test_user_file_roundtrip(tmp_path, suffix, capsys):
    x, a = synthetic_clip(5, 36, 16, seed=3)
    src = tmp_path / f"video{suffix}"
    save_tensors(src, {"tokens": x, "cls_attn": a})
    dst = tmp_path / f"result{suffix}"
    assert main(["compress", "--input", str(src), "--output", str(dst), "--retention", "0.25",
                 "--aggregation", "mean"]) == 0
    assert str(src) in capsys.readouterr().out
    got = load_tensors(dst)
    want = flashvid.compress(x, a, retention_ratio=0.25, aggregation="mean")
    for key, value in want.as_dict().items():
        np.testing.assert_array_equal(got[key].numpy(), value.numpy(), err_msg=key)


def test_missing_keys_and_bad_suffix(tmp_path, capsys):
    src = tmp_path / "bad.npz"
    np.savez(src, features=np.zeros((2, 3, 4), np.float32))
    assert main(["compress", "--input", str(src)]) == 2
    err = capsys.readouterr().err
    assert "missing ['tokens', 'cls_attn']" in err and "found ['features']" in err
    assert main(["compress", "--input", str(tmp_path / "nope.pt")]) == 2
    assert "no such file" in capsys.readouterr().err
    other = tmp_path / "video.txt"
    other.write_text("x")
    assert main(["compress", "--input", str(other)]) == 2
    assert "unsupported file type '.txt'" in capsys.readouterr().err


def test_bad_values_in_file_are_reported(tmp_path, capsys):
    x, a = synthetic_clip(3, 16, 8)
    src = tmp_path / "neg.pt"
    save_tensors(src, {"tokens": x, "cls_attn": -a})
    assert main(["compress", "--input", str(src)]) == 2
    assert "negative" in capsys.readouterr().err


def test_module_entry_point_runs():
    proc = subprocess.run([sys.executable, "-m", "flashvid", "compress", *SMALL, "--dedupe",
                           "--preset", "qwen2_5_vl"], capture_output=True, text=True, check=True)
    assert "selection adts_v1" in proc.stdout and "dedupe True" in proc.stdout
