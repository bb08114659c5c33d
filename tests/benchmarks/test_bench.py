"""``flashvid bench``: the quick CPU run writes well-formed results and plots (structure and
correctness flags are checked, never times)."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys

import pytest
import torch

from benchmarks import FIELDS, PROVIDERS, STAGES
from flashvid.cli import main


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    code = main(["bench", "--quick", "--device", "cpu", "--repeats", "3", "--min-time", "0",
                 "--out", str(out)])
    assert code == 0
    return out


def test_quick_run_writes_jsonl_and_csv(quick_run, capsys):
    rows = [json.loads(line) for line in (quick_run / "bench.jsonl").read_text().splitlines()]
    assert rows and all(set(r) == set(FIELDS) for r in rows)
    shapes = {(r["frames"], r["tokens"], r["dim"]) for r in rows}
    assert len(shapes) == 2  # two frame counts: a (tiny) scaling sweep
    for shape in shapes:
        got = {(r["provider"], r["stage"]) for r in rows if (r["frames"], r["tokens"], r["dim"])
               == shape}
        assert got == {(p, s) for p in ("reference", "torch") for s in STAGES}
    for r in rows:
        assert r["provider"] in PROVIDERS and r["device"].startswith("CPU")
        assert r["correct"] is True, r  # every provider agreed with the reference
        assert 0 < r["p20_ms"] <= r["median_ms"] <= r["p80_ms"]
        assert r["repeats"] >= 3 and r["floor_ms"] > 0 and r["vs_floor"] > 0
        assert r["torch"] and r["git"]
        if r["provider"] == "reference":
            assert r["vs_reference"] == pytest.approx(1.0)
        else:
            ref = next(q for q in rows if q["provider"] == "reference" and q["stage"] == r["stage"]
                       and q["frames"] == r["frames"])
            assert r["vs_reference"] == pytest.approx(ref["median_ms"] / r["median_ms"])
    with open(quick_run / "bench.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["stage"] for r in table] == [r["stage"] for r in rows]
    assert list(table[0]) == FIELDS


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="needs matplotlib")
def test_plot_writes_pngs(quick_run):
    assert main(["bench", "--plot", "--out", str(quick_run)]) == 0
    for name in ("latency_vs_frames.png", "stages.png"):
        data = (quick_run / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_bad_arguments_are_reported(tmp_path, capsys):
    assert main(["bench", "--shape", "32x196", "--out", str(tmp_path)]) == 2
    assert "expected FRAMESxTOKENSxDIM" in capsys.readouterr().err
    assert main(["bench", "--quick", "--backends", "torch,cuda", "--out", str(tmp_path)]) == 2
    assert "unknown ['cuda']" in capsys.readouterr().err
    assert main(["bench", "--plot", "--out", str(tmp_path / "none")]) == 2
    assert "no results to plot" in capsys.readouterr().err


def test_python_m_benchmarks_entry_point(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--shape", "6x16x8", "--stages",
                           "compress", "--backends", "torch", "--repeats", "3", "--min-time", "0",
                           "--out", str(tmp_path)], capture_output=True, text=True, check=True)
    assert "compress" in proc.stdout and (tmp_path / "bench.jsonl").exists()


def test_product_flops_counts_each_matrix_product_once():
    """benchmarks.published counts 2·M·N·K per product, for every way torch reaches one."""
    from benchmarks.published import product_flops

    a, b = torch.randn(3, 40, 16), torch.randn(3, 30, 16)
    want = 2.0 * 3 * 40 * 30 * 16
    assert product_flops(lambda: torch.bmm(a, b.transpose(1, 2))) == want
    assert product_flops(lambda: torch.einsum("bnd,bmd->bnm", a, b)) == want
    assert product_flops(lambda: torch.cdist(a, b)) == want  # the matrix-product path
    assert product_flops(lambda: torch.cdist(a[:, :5], b[:, :5])) == 2.0 * 3 * 5 * 5 * 16
    assert product_flops(lambda: a[0] @ b[0].T) == want / 3
    assert product_flops(lambda: torch.addmm(torch.zeros(40, 30), a[0], b[0].T)) == want / 3
    assert product_flops(lambda: (a * 2).sum()) == 0


def test_breakdown_times_every_stage_inside_calls_and_restores_them(tmp_path, capsys):
    """``python -m benchmarks.breakdown`` on a tiny clip: every stage is timed inside the calls
    (their sum is within the call), the floors are reported, and the stage functions are the
    original ones again afterwards."""
    import json

    import flashvid.pipeline as pipeline
    from benchmarks import breakdown

    before = (pipeline.adts, pipeline.trees, pipeline.assemble)
    out = tmp_path / "breakdown.json"
    assert breakdown.main(["--shape", "6x64x16", "--repeats", "2", "--threads", "1",
                           "--json", str(out)]) == 0
    assert (pipeline.adts, pipeline.trees, pipeline.assemble) == before
    written = json.loads(out.read_text())
    assert {"device", "torch", "git", "command"} <= set(written["meta"])
    (result,) = written["results"]
    stages = result["stages_ms"]
    assert set(stages) == {label for _, _, label in breakdown.TIMED}
    assert all(ms > 0 for ms in stages.values())
    assert sum(stages.values()) <= result["call_ms"]
    assert set(result["floor_ms"]) == {"Gram, event term", "TSTM", "DPC-kNN"}
    assert "6x64x16 (llava_onevision, 1 threads)" in capsys.readouterr().out
