"""``flashvid compress``: the built-in clip, user files in three formats, output files, errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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


@pytest.mark.slow  # a fresh interpreter: imports torch again
def test_module_entry_point_runs():
    proc = subprocess.run([sys.executable, "-m", "flashvid", "compress", *SMALL, "--dedupe",
                           "--preset", "qwen2_5_vl"], capture_output=True, text=True, check=True)
    assert "selection adts_v1" in proc.stdout and "dedupe True" in proc.stdout


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"flashvid {flashvid.__version__}"
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for command in ("compress", "demo", "viz", "bench"):
        assert f"    {command} " in text
    for command in ("compress", "demo", "viz"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        assert "%%" not in text and "``" not in text, command
    with pytest.raises(SystemExit):
        main(["bench", "--help"])  # registered by the benchmark module, loaded on demand
    assert "--repeats" in capsys.readouterr().out


@pytest.mark.slow  # a fresh interpreter: imports torch again
def test_subcommands_are_imported_lazily():
    """compress never loads the demo, the benchmark, matplotlib or PyAV; demo loads the demo."""
    code = ("import sys; from flashvid.cli import main; main(sys.argv[1:]); "
            "print(sorted({m.split('.')[0] if not m.startswith('flashvid.') else "
            "'.'.join(m.split('.')[:2]) for m in sys.modules}))")
    proc = subprocess.run([sys.executable, "-c", code, "compress", *SMALL], capture_output=True,
                          text=True, check=True)
    loaded = proc.stdout.strip().splitlines()[-1]
    for module in ("flashvid.demo", "benchmarks", "matplotlib", "'av'", "skvideo"):
        assert module not in loaded, module


def test_command_modules_have_no_import_cycle():
    """flashvid.cli names its command modules by string; none of them imports flashvid.cli."""
    import ast
    from pathlib import Path

    root = Path(flashvid.__file__).parent

    def imports(path: Path) -> set[str]:
        package = ".".join(("flashvid", *path.relative_to(root).parent.parts))
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base) if node.level else ""
                module = ".".join(p for p in (module, node.module or "") if p)
                found.add(module)
                found.update(f"{module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
        return found

    cli = imports(root / "cli.py")
    assert not any(m.startswith(("flashvid.demo", "flashvid.bench", "benchmarks")) for m in cli)
    for path in [root / "clitools.py", *sorted((root / "demo").glob("*.py"))]:
        assert "flashvid.cli" not in imports(path), path


def test_device_errors_are_one_line(capsys):
    assert main(["compress", *SMALL, "--device", "gpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flashvid compress: error: --device 'gpu' is not a device name")
    assert "Traceback" not in err
    if not torch.cuda.is_available():
        assert main(["compress", *SMALL, "--device", "cuda"]) == 2
        assert "--device cuda: CUDA is not available" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".pt", ".npz", ".safetensors"])
def test_corrupt_files_are_reported(tmp_path, capsys, suffix):
    junk = tmp_path / f"junk{suffix}"
    junk.write_bytes(bytes(range(256)) * 8)
    assert main(["compress", "--input", str(junk)]) == 2
    err = capsys.readouterr().err
    assert f"junk{suffix}: cannot read this {suffix} file" in err and "expected a file" in err
    # a valid file cut short
    x, a = synthetic_clip(2, 9, 4)
    good = tmp_path / f"good{suffix}"
    save_tensors(good, {"tokens": x, "cls_attn": a})
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert main(["compress", "--input", str(cut)]) == 2
    assert f"cut{suffix}: cannot read this {suffix} file" in capsys.readouterr().err


def test_pt_file_with_numpy_arrays(tmp_path, capsys):
    x, a = synthetic_clip(4, 16, 8, seed=2)
    src = tmp_path / "numpy.pt"
    torch.save({"tokens": x.numpy(), "cls_attn": a.numpy()}, src)
    loaded = load_tensors(src)
    assert torch.equal(loaded["tokens"], x) and torch.equal(loaded["cls_attn"], a)
    assert main(["compress", "--input", str(src)]) == 0
    torch.save({"tokens": x, "cls_attn": a, "names": np.array(["a"], dtype=object)}, src)
    assert main(["compress", "--input", str(src)]) == 2
    assert "entry 'names' is a ndarray of dtype object" in capsys.readouterr().err
    torch.save([x, a], src)
    assert main(["compress", "--input", str(src)]) == 2
    assert "expected a dict of tensors" in capsys.readouterr().err


def test_output_checked_before_compressing(tmp_path, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("compressed although the output could not be written")
    monkeypatch.setattr(sys.modules["flashvid.compress"], "compress", refuse)
    assert main(["compress", *SMALL, "--output", str(tmp_path / "out.txt")]) == 2
    assert "out.txt: unsupported file type '.txt'" in capsys.readouterr().err
    assert main(["compress", *SMALL, "--output", str(tmp_path / "no" / "out.pt")]) == 2
    assert "does not exist; expected an existing folder" in capsys.readouterr().err
    # a folder that exists but takes no new file: the output file is named, not a bare errno
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    for bad in ([Path("/proc/o.npz")] if Path("/proc").is_dir() else []) + [locked / "o.npz"]:
        if bad.parent == locked and os.access(locked, os.W_OK):  # root ignores the mode
            continue
        assert main(["compress", *SMALL, "--output", str(bad)]) == 2
        err = capsys.readouterr().err
        assert f"cannot write the output file {bad}" in err and "[Errno" not in err
        assert not bad.exists()
    locked.chmod(0o700)


def test_one_token_per_frame(capsys):
    assert main(["compress", "--frames", "4", "--tokens", "1", "--dim", "8"]) == 0
    text = capsys.readouterr().out
    assert "4 frames x 1 tokens x 8 dims" in text and "output     4 tokens" in text
    x, a = synthetic_clip(4, 1, 8)
    assert torch.isfinite(a).all() and torch.equal(a, torch.ones(4, 1))  # softmax of one token


def test_warmup_and_threads_are_explicit(capsys, monkeypatch):
    module = sys.modules["flashvid.compress"]
    real = module.compress
    calls = []

    def counting(*args, **kwargs):
        calls.append(torch.get_num_threads())
        return real(*args, **kwargs)
    monkeypatch.setattr(module, "compress", counting)
    before = torch.get_num_threads()
    assert main(["compress", *SMALL]) == 0
    assert len(calls) == 1  # no hidden warm-up call
    assert "(one call, no warm-up" in capsys.readouterr().out
    calls.clear()
    assert main(["compress", *SMALL, "--warmup", "2", "--threads", "1"]) == 0
    assert calls == [1, 1, 1] and torch.get_num_threads() == before
    text = capsys.readouterr().out
    assert "(one call after 2 untimed warm-up call(s))" in text and "1 CPU thread(s)" in text
    assert main(["compress", *SMALL, "--threads", "0"]) == 2
    assert "--threads must be >= 1, got 0" in capsys.readouterr().err
