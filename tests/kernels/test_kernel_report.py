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
    # token_stats twice: the norms, then the norms with the event term (after DySeg)
    assert sorted(r["kernel"].split(":")[1] for r in rows) == [
        "_adts_select_kernel", "_token_stats_kernel", "_token_stats_kernel", "_tstm_edges_kernel"]
    assert sorted(r["meta"]["HAS_MU"] for r in rows if "token_stats" in r["kernel"]) == [
        False, True]
    for r in rows:
        assert r["ok"] and r["arch"] == 80 and 0 < r["regs"] <= 255
        assert r["stack"] == r["spill_stores"] == r["spill_loads"] == 0
        assert r["ctas_per_sm"] >= 1 and r["programs"] >= 128
        assert r["protocol"]["ok"] and r["codegen"]["ok"], (r["protocol"], r["codegen"])
        assert all(d["min"] >= 16 for d in r["codegen"]["dots"])
    by_name = {r["kernel"].split(":")[1]: r for r in rows}
    adts = by_name["_adts_select_kernel"]["protocol"]
    assert adts["cross_program"] and adts["counters"] == ["ticket_ptr"]
    assert adts["scratch"] == ["dist_ptr", "part_ptr"]
    (ticket,) = adts["atomics"]
    assert ticket["sem"] == "acq_rel" and ticket["scope"] == "gpu" and not ticket["float"]
    assert "atom.global.gpu.acq_rel.add" in ticket["ptx"]
    assert len(adts["checks"]) == 8 and all(c["ok"] for c in adts["checks"].values())
    assert "ld.global.cg" in adts["checks"]["scratch_reads"]["detail"]
    for name in ("_token_stats_kernel", "_tstm_edges_kernel"):
        assert not by_name[name]["protocol"]["cross_program"]
    assert [len(by_name[n]["codegen"]["dots"]) for n in sorted(by_name)] == [1, 0, 1]


@pytest.mark.slow
def test_the_largest_shape_shares_the_audited_specialisation():
    """1024 x 4096 x 8192 compiles to the specialisation of the N4096 workload (one row for
    both), whose TTIR shows the frame index widened to int64 before any arithmetic."""
    cmd = [sys.executable, "-m", "flashvid_kernels.report", "--json", "--jobs", "1",
           "--workload", "F1024_N4096_D8192", "N4096", "--arch", "90", "--dtype", "bfloat16",
           "--kernel", "adts_select"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted(w.split("/")[0] for w in row["workloads"]) == ["F1024_N4096_D8192", "N4096"]
    check = row["codegen"]["checks"]["int64_frame_offsets"]
    assert check["ok"] and "no int32 arithmetic" in check["detail"], check
    assert row["protocol"]["ok"]


VARIANTS = """
import json, sys, tempfile
import protocol_variants as pv
from flashvid_kernels.report import Spec, compile_spec
args = [("tensor", "float32"), ("tensor", "int32"), ("tensor", "float32")]
out, tmp = {}, tempfile.mkdtemp()
for name, (change, _) in [("good", ({}, None)), *pv.BROKEN.items()]:
    spec = Spec("protocol_variants:ticket_kernel", args, {**pv.GOOD, **change}, 90)
    row = compile_spec(spec, save_asm=tmp if name == "good" else None)
    assert row["ok"], row.get("error")
    out[name] = row["protocol"]
    if name == "good":
        out["good_ptx"] = open(row["asm"] + ".ptx").read()
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def variant_audits():
    """The audit of a tiny kernel with the ticket protocol and of variants that break it,
    compiled for sm_90 in a subprocess (the report's compiler, outside the interpreter)."""
    import os
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    here = Path(__file__).parent
    env["PYTHONPATH"] = os.pathsep.join([str(here), str(here.parents[1]),
                                         env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", VARIANTS], capture_output=True, text=True,
                          timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.slow
def test_audit_fails_each_broken_protocol(variant_audits):
    """The good variant passes every check; each broken one fails the check it breaks."""
    from protocol_variants import BROKEN

    good = variant_audits["good"]
    assert good["ok"] and good["cross_program"], good["checks"]
    for name, (_, check) in BROKEN.items():
        audit = variant_audits[name]
        assert not audit["ok"], name
        assert not audit["checks"][check]["ok"], (name, audit["checks"])


@pytest.mark.slow
def test_audit_fails_edited_ptx(variant_audits):
    """Edits of the good PTX that a compiler could make: no barrier before the ticket, the
    partials read through the non-coherent path, the broadcast barrier gone, the atomic's
    qualifiers dropped."""
    from flashvid_kernels.audit import audit_ptx

    ptx = variant_audits["good_ptx"]
    params = ["part_ptr", "ticket_ptr", "out_ptr"]
    assert audit_ptx(ptx, params)["ok"]
    lines = ptx.splitlines()
    atom = next(i for i, line in enumerate(lines) if "atom.global" in line)
    no_bar = [line for i, line in enumerate(lines) if not (i < atom and "bar.sync" in line)]
    got = audit_ptx("\n".join(no_bar), params)
    assert not got["checks"]["barrier_before"]["ok"]
    got = audit_ptx(ptx.replace("ld.global.cg", "ld.global.nc"), params)
    assert not got["checks"]["scratch_reads"]["ok"] and "non-coherent" in \
        got["checks"]["scratch_reads"]["detail"]
    no_bar_after = [line for i, line in enumerate(lines) if not (i > atom and "bar.sync" in line)]
    assert not audit_ptx("\n".join(no_bar_after), params)["checks"]["barrier_after"]["ok"]
    bare = audit_ptx(ptx.replace("atom.global.gpu.acq_rel.", "atom.global."), params)
    assert not bare["checks"]["sem_scope"]["ok"]  # PTX's default for atom: relaxed
    assert "relaxed (PTX default)" in bare["checks"]["sem_scope"]["detail"]

