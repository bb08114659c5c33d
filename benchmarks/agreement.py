"""Agreement figures for the README (correctness, not speed).

    python -m benchmarks.agreement backends [--cases 1000] [--backends reference,torch,triton]
    python -m benchmarks.agreement half

``backends``: a seeded sweep of small random float32 videos and configurations through every
backend; prints how many cases give different output positions (or kinds, sources, segments)
than the reference, and which stage first differs. The triton backend runs its kernels in the
CPU interpreter when there is no GPU (TRITON_INTERPRET=1 is set here).

``half``: the three published half-precision runs (tests/data/half/, computed by the published
code with bfloat16/float16 input on the CPU) against ``compress`` on the same half input (every
backend decides in float32): how many output positions agree (|ours & published| / |published|,
and the Jaccard index of the two sets), and how many segments and ADTS picks.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path

import numpy as np
import torch

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
METHODS = {"attn_div_v2": "adts", "attn_div": "adts_v1", "attn": "attention", "div": "diversity"}


def sweep_case(seed: int):
    """A small random float32 video (temporally correlated, a shared offset, a few scene
    changes) and a random configuration."""
    import flashvid

    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    frames, n, dim = rng.randint(1, 9), rng.choice([1, 2, 5, 9, 14, 16, 25, 32, 49, 64]), \
        rng.choice([1, 3, 8, 16, 32])
    rho = rng.choice([0.5, 0.9, 0.97])
    x = torch.empty(frames, n, dim)
    x[0] = torch.randn(n, dim, generator=gen)
    for t in range(1, frames):
        fresh = torch.randn(n, dim, generator=gen)
        x[t] = fresh if rng.random() < 0.15 else rho * x[t - 1] + (1 - rho**2) ** 0.5 * fresh
    x += rng.choice([0.0, 0.5, 2.0]) * torch.randn(dim, generator=gen)
    a = torch.softmax(torch.randn(frames, n, generator=gen) * rng.choice([0.5, 2.0, 8.0]), -1)
    cfg = flashvid.FlashVIDConfig(
        retention_ratio=rng.choice([0.1, 0.2, 0.3, 0.5]), alpha=rng.choice([0.0, 0.5, 0.7, 1.0]),
        selection=rng.choice(flashvid.config.SELECTIONS),
        temporal_threshold=rng.choice([0.5, 0.8, 0.9]), min_segments=rng.choice([1, 2, 4, 8]),
        segment_threshold=rng.choice([0.8, 0.9, 0.99]), aggregation=rng.choice(["official",
                                                                                 "mean"]),
        dedupe=rng.random() < 0.2)
    return x, a, cfg


def first_difference(got, want) -> str | None:
    if got.segment_lengths.tolist() != want.segment_lengths.tolist():
        return "dyseg"
    adts = [o.indices[o.kinds == 0] for o in (got, want)]
    if not torch.equal(*adts):
        return "adts"
    if not torch.equal(got.parents, want.parents):
        return "tstm"
    if not (torch.equal(got.indices, want.indices) and torch.equal(got.kinds, want.kinds)
            and torch.equal(got.source, want.source)):
        return "dpc"
    return None


def backends_command(args) -> int:
    os.environ.setdefault("TRITON_INTERPRET", "0" if torch.cuda.is_available() else "1")
    import flashvid

    names = [b for b in args.backends.split(",") if b != "reference"]
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    differ = {b: [] for b in names}
    for seed in range(args.cases):
        x, a, cfg = sweep_case(seed)
        x, a = x.to(dev), a.to(dev)
        want = flashvid.compress(x, a, cfg, backend="reference")
        for b in names:
            stage = first_difference(flashvid.compress(x, a, cfg, backend=b), want)
            if stage:
                differ[b].append((seed, stage, tuple(x.shape), cfg.selection, cfg.dedupe))
        if args.progress and seed % 100 == 99:
            print(f"  {seed + 1} cases", file=sys.stderr, flush=True)
    print(f"{args.cases} seeded float32 cases (python -m benchmarks.agreement backends "
          f"--cases {args.cases}), device {dev}:")
    for b in names:
        stages = {}
        for _, s, *_ in differ[b]:
            stages[s] = stages.get(s, 0) + 1
        print(f"  {b:>7} vs reference: {len(differ[b])} differ "
              f"({100 * len(differ[b]) / args.cases:.2f}%) {stages}")
        for case in differ[b][:10]:
            print(f"          seed {case[0]}: first differs at {case[1]}, shape {case[2]}, "
                  f"selection {case[3]}, dedupe {case[4]}")
    return 0


def half_command(args) -> int:
    import flashvid

    dtypes = {"bfloat16": torch.bfloat16, "float16": torch.float16}
    rows = []
    for path in sorted((DATA / "half").glob("*.npz")):
        with np.load(path) as d:
            meta = json.loads(str(d["meta_json"]))["args"]
            dtype = dtypes[meta["dtype"]]
            x = torch.from_numpy(d["input_video_features"]).to(dtype)
            a = torch.from_numpy(d["input_cls_attention"]).to(dtype)
            want = set(d["final_global_indices"].tolist())
            want_segments = [s for s in d["segment_lengths"].tolist() if s > 0]
            n = x.shape[1]
            want_adts = set()
            for s, length in enumerate(d["segment_lengths"].tolist()):
                if length:
                    want_adts |= set(d[f"seg{s}_adts_global_indices"].reshape(-1).tolist())
        cfg = flashvid.FlashVIDConfig(
            retention_ratio=meta["retention"], alpha=meta["alpha"],
            selection=METHODS[meta["method"]], temporal_threshold=meta["temporal_threshold"],
            segment=not meta["no_segment"], segment_threshold=meta["segment_threshold"],
            min_segments=meta["min_segment_num"],
            complementary_segments=not meta["no_complementary"], expansion=meta["expansion"])
        outs = {b: flashvid.compress(x, a, cfg, backend=b) for b in args.backends.split(",")}
        ref = outs["reference"]
        got = set(ref.indices.tolist())
        got_adts = set(ref.indices[ref.kinds == 0].tolist())
        same = all(torch.equal(o.indices, ref.indices) for o in outs.values())
        rows.append((path.stem, meta["dtype"], tuple(x.shape), len(got & want), len(want),
                     len(got & want) / len(got | want), ref.segment_lengths.tolist() ==
                     want_segments, len(got_adts & want_adts), len(want_adts), same))
        del n
    print("published half-precision runs vs compress on the same half input "
          "(python -m benchmarks.agreement half):")
    print("| run | dtype | F x N x D | positions agreeing | Jaccard | same segments | ADTS "
          "picks agreeing | backends identical |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {'x'.join(map(str, r[2]))} | {r[3]}/{r[4]} "
              f"({100 * r[3] / r[4]:.1f}%) | {r[5]:.3f} | {'yes' if r[6] else 'no'} | "
              f"{r[7]}/{r[8]} | {'yes' if r[9] else 'no'} |")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.agreement", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("backends", help="backend disagreement over a seeded float32 sweep")
    b.add_argument("--cases", type=int, default=1000)
    b.add_argument("--backends", default="reference,torch,triton")
    b.add_argument("--progress", action="store_true")
    b.set_defaults(run=backends_command)
    h = sub.add_parser("half", help="agreement with the published half-precision runs")
    h.add_argument("--backends", default="reference,torch")
    h.set_defaults(run=half_command)
    args = p.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
