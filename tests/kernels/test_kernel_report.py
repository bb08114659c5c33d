"""The compile report (flashvid_kernels.report): its workloads are the presets, it records what
compress launches, and it compiles without a GPU."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from helpers import random_video

import flashvid
from flashvid import FlashVIDConfig
from flashvid_kernels import report
from flashvid_kernels._runtime import recording

PRESETS = [w for w in report.WORKLOADS if w.preset]


@pytest.mark.parametrize("w", PRESETS, ids=lambda w: w.name)
def test_report_workloads_are_the_presets(w):
    cfg = FlashVIDConfig.preset(w.name, retention_ratio=0.10)
    assert w.k == cfg.budget(w.tokens).adts
    assert w.selection == cfg.selection


def kernels_and_constexprs(launches):
    return sorted((launch.kernel.__name__, sorted(launch.meta.items())) for launch in launches)


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["llava_onevision", "qwen2_5_vl"])
def test_report_records_what_compress_launches(preset):
    """The report's call sequence gives the kernels and specialisations of a real compress with
    the Triton backend (interpreter) on the same shape."""
    cfg = FlashVIDConfig.preset(preset, backend="triton", min_segments=2)  # TSTM runs too
    x, a = random_video(4, 100, 16, seed=1)
    with recording() as launches:
        flashvid.compress(x, a, cfg)
    w = report.Workload("tiny", 4, 100, 16, cfg.selection, True)
    assert kernels_and_constexprs(launches) == kernels_and_constexprs(
        report.compress_launches(w, torch.float32))


def test_occupancy():
    """Register-, warp- and shared-memory-limited cases of the occupancy calculator."""
    assert report.occupancy(90, 255, 4, 0)["ctas_per_sm"] == 2  # 256 regs/thread -> 2 x 4 warps
    assert report.occupancy(90, 32, 4, 0)["ctas_per_sm"] == 16  # 64 warps / 4
    assert report.occupancy(90, 32, 4, 100_000) == {
        "ctas_per_sm": 2, "occupancy": 0.125, "limited_by": "shared"}
    assert report.occupancy(80, 32, 4, 200_000)["ctas_per_sm"] == 0  # over the block limit


@pytest.mark.slow
def test_report_compiles_without_a_gpu():
    """End to end in a subprocess (the report leaves the interpreter): one preset, one target."""
    cmd = [sys.executable, "-m", "flashvid_kernels.report", "--json", "--jobs", "1",
           "--workload", "llava_onevision", "--arch", "80", "--dtype", "bfloat16"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted(r["kernel"].split(":")[1] for r in rows) == [
        "_adts_select_kernel", "_token_stats_kernel", "_tstm_edges_kernel"]
    for r in rows:
        assert r["ok"] and r["arch"] == 80 and 0 < r["regs"] <= 255
        assert r["stack"] == r["spill_stores"] == r["spill_loads"] == 0
        assert r["ctas_per_sm"] >= 1 and r["programs"] >= 128
