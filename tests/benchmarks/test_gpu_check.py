"""benchmarks/gpu_check.sh --dry-run: the GPU check's every step, end to end, on the CPU under
the Triton interpreter on tiny shapes (this proves the script, not the GPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_check_dry_run_end_to_end(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLASHVID_KERNELS_")}
    env.update(PYTHON=sys.executable, GPU_CHECK_BUDGET_S="900")
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run",
                           "--out", str(tmp_path)], capture_output=True, text=True, env=env,
                          timeout=1200, cwd=tmp_path)
    assert done.returncode == 0, (done.stdout[-4000:], done.stderr[-2000:])
    summary = (tmp_path / "summary.txt").read_text()
    assert "all steps passed" in summary and "--dry-run" in summary
    env_json = json.loads((tmp_path / "env.json").read_text())
    assert env_json["mode"].startswith("dry run") and env_json["triton"]
    graph = json.loads((tmp_path / "graph.json").read_text())
    assert graph["ok"] and len(graph["inputs"]) == 2
    assert all(i["equal_to_eager"] for i in graph["inputs"])
    timing = json.loads((tmp_path / "timing.json").read_text())["rows"]
    assert [r["preset"] for r in timing] == ["llava_onevision", "qwen2_5_vl"]
    for r in timing:
        for key in ("token_stats", "adts_select", "tstm_edges", "compress_triton",
                    "compress_reference", "floor_gram"):
            assert r[key]["median_ms"] > 0, key
        assert r["triton_vs_reference"] > 0 and r["triton_vs_floor"] > 0
    memory = json.loads((tmp_path / "memory.json").read_text())["rows"]
    assert memory and memory[0]["peak_extra_mib"] is None  # no CUDA statistics on the CPU
    assert "passed" in (tmp_path / "pytest.log").read_text()
    assert "passed" in (tmp_path / "order-reversed.log").read_text()
    bench = [json.loads(line) for line in (tmp_path / "bench.jsonl").read_text().splitlines()]
    assert {r["provider"] for r in bench} == {"reference", "torch", "triton"}
    assert all(r["correct"] for r in bench)
    report = (tmp_path / "report.txt").read_text()
    assert "cross-program protocol" in report and "adts_select" in report
    assert "FAIL" not in report
