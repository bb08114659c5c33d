"""Exact-count mode against the default mode: cost in time and in fidelity (CPU).

    python -m benchmarks.exact timing  [--out benchmarks/results/cpu]
    python -m benchmarks.exact fidelity [--out benchmarks/results/cpu]

``timing``: ``compress`` on the seeded LLaVA-OneVision-shaped clip (32 x 196 x 3584, float32,
r = 0.10, torch backend) in the default mode, in exact-count mode (eager), and in exact-count
mode compiled with ``torch.compile(fullgraph=True)`` (inductor), timed in interleaved rounds
after a warm-up (the compilation time is reported separately). Writes ``exact_timing.json``.

``fidelity``: the demo's fidelity metric (``flashvid.demo.metrics``) on the demo clips (the
three bundled videos and the three photo clips) at r = 0.10/0.15/0.20/0.25: the default mode
against exact-count mode asked for the same number of rows (``num_tokens`` = the default's
count), and against exact-count mode at its own count F * B. Writes ``exact_fidelity.json``
and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import flashvid
from flashvid.synthetic import synthetic_clip

from .bench import environment


def timing(args) -> int:
    torch.set_num_threads(args.threads)
    x, a = synthetic_clip(32, 196, 3584, seed=0)
    base = flashvid.FlashVIDConfig(backend="torch")
    exact = base.replace(exact_count=True)
    started = time.perf_counter()
    compiled = torch.compile(functools.partial(flashvid.compress, config=exact), fullgraph=True)
    first = compiled(x, a)
    compile_s = time.perf_counter() - started
    runs = {"default": lambda: flashvid.compress(x, a, base),
            "exact": lambda: flashvid.compress(x, a, exact),
            "exact_compiled": lambda: compiled(x, a)}
    eager = flashvid.compress(x, a, exact)
    same = bool(torch.equal(first.indices, eager.indices))
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(2):
        for fn in runs.values():
            fn()
    for _ in range(args.repeats):
        for name, fn in runs.items():
            begin = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - begin)
    rows = {name: {"median_ms": float(np.median(t) * 1e3),
                   "p20_ms": float(np.percentile(t, 20) * 1e3),
                   "p80_ms": float(np.percentile(t, 80) * 1e3)} for name, t in times.items()}
    result = {**environment(torch.device("cpu")), "shape": [32, 196, 3584], "dtype": "float32",
              "retention": 0.10, "repeats": args.repeats, "compile_seconds": compile_s,
              "compiled_indices_equal_eager": same, "rows_default":
              int(flashvid.compress(x, a, base).tokens.shape[0]), "rows_exact":
              int(eager.tokens.shape[0]), "times": rows,
              "command": "python -m benchmarks.exact timing"}
    _write(args.out, "exact_timing.json", result)
    ref = rows["default"]["median_ms"]
    print(f"compress 32x196x3584 float32, {args.threads} threads, {args.repeats} interleaved "
          f"rounds (torch backend):")
    for name, r in rows.items():
        print(f"  {name:>15}: {r['median_ms']:8.1f} ms (p20 {r['p20_ms']:.1f}, p80 "
              f"{r['p80_ms']:.1f}), {r['median_ms'] / ref:.2f}x the default")
    print(f"  compilation (inductor, first call): {compile_s:.1f} s; compiled indices equal "
          f"eager: {same}; rows: default {result['rows_default']}, exact {result['rows_exact']}")
    return 0


def fidelity(args) -> int:
    from flashvid.demo.features import importance, patch_features
    from flashvid.demo.inputs import ALL_CLIPS, demo_input
    from flashvid.demo.metrics import fidelity as score

    torch.set_num_threads(args.threads)
    rows = []
    for name in ALL_CLIPS:
        clip = demo_input(name)
        x = patch_features(clip.frames)
        a = importance(x)
        for r in (0.10, 0.15, 0.20, 0.25):
            cfg = flashvid.FlashVIDConfig(retention_ratio=r, backend="torch")
            default = flashvid.compress(x, a, cfg)
            same = flashvid.compress(x, a, cfg, num_tokens=default.tokens.shape[0])
            own = flashvid.compress(x, a, cfg.replace(exact_count=True))
            f_default, f_same, f_own = (score(x, o) for o in (default, same, own))
            rows.append({"clip": name, "retention": r, "rows_default": f_default.count,
                         "rows_exact_own": f_own.count, "mean_default": f_default.mean,
                         "mean_exact_same": f_same.mean, "mean_exact_own": f_own.mean,
                         "worst_default": f_default.worst_frame,
                         "worst_exact_same": f_same.worst_frame,
                         "worst_exact_own": f_own.worst_frame})
    _write(args.out, "exact_fidelity.json", {**environment(torch.device("cpu")), "rows": rows,
                                            "command": "python -m benchmarks.exact fidelity"})
    print("| clip | r | rows (default / exact F·B) | mean fidelity: default | exact, same rows "
          "| exact, F·B rows | worst frame: default | exact, same rows |")
    print("|---|---|---|---|---|---|---|---|")
    for q in rows:
        print(f"| {q['clip']} | {q['retention']:.2f} | {q['rows_default']} / "
              f"{q['rows_exact_own']} | {q['mean_default']:.4f} | {q['mean_exact_same']:.4f} | "
              f"{q['mean_exact_own']:.4f} | {q['worst_default']:.4f} | "
              f"{q['worst_exact_same']:.4f} |")
    diff = np.array([q["mean_exact_same"] - q["mean_default"] for q in rows])
    print(f"exact minus default at the same row count, mean fidelity: mean {diff.mean():+.4f}, "
          f"min {diff.min():+.4f}, max {diff.max():+.4f} over {len(rows)} (clip, r) pairs")
    return 0


def _write(out: str, name: str, payload: dict) -> None:
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    (path / name).write_text(json.dumps(payload, indent=1) + "\n")
    print(f"wrote {path / name}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.exact", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name, fn in (("timing", timing), ("fidelity", fidelity)):
        q = sub.add_parser(name)
        q.add_argument("--out", default="benchmarks/results/cpu")
        q.add_argument("--threads", type=int, default=2)
        q.add_argument("--repeats", type=int, default=20)
        q.set_defaults(run=fn)
    args = p.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
