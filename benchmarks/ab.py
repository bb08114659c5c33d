"""A/B timing of ``flashvid.compress`` between two revisions, interleaved in one run.

    python -m benchmarks.ab --base HEAD~1                  # this checkout against its parent
    python -m benchmarks.ab --base v1 --head v2 --shape 32x196x3584 --repeats 40

Each revision is checked out into a temporary git worktree (the working tree itself for
``--head`` left out) and imported by its own worker process; the workers build the same seeded
clip and time ``compress`` alternately, one call each per round, so that the speed drift of a
shared machine affects both alike. Both results are checked to be identical first. Prints the
median and p20/p80 of each and the ratio head / base.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

WORKER = r"""
import json, sys, time, torch
from flashvid import FlashVIDConfig, compress
from flashvid.synthetic import synthetic_clip
f, n, d, threads, preset = json.loads(sys.argv[1])
torch.set_num_threads(threads)
x, a = synthetic_clip(f, n, d, seed=0)
cfg = FlashVIDConfig.preset(preset, backend="torch")
out = compress(x, a, cfg)
print(json.dumps([out.indices.tolist()[:64], float(out.tokens.double().sum()),
                  out.tokens.shape[0]]), flush=True)
for line in sys.stdin:
    t = time.perf_counter(); compress(x, a, cfg); dt = time.perf_counter() - t
    print(dt, flush=True)
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ab", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="git revision to compare against")
    p.add_argument("--head", default=None, help="git revision (default: the working tree)")
    p.add_argument("--shape", default="32x196x3584", metavar="FxNxD")
    p.add_argument("--preset", default="llava_onevision")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    shape = [int(v) for v in args.shape.lower().split("x")]
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"base": _checkout(args.base, Path(tmp) / "base")}
        trees["head"] = _checkout(args.head, Path(tmp) / "head") if args.head else ROOT
        try:
            workers = {k: _start(path, [*shape, args.threads, args.preset])
                       for k, path in trees.items()}
            first = {k: json.loads(w.stdout.readline()) for k, w in workers.items()}
            same = first["base"] == first["head"]
            times: dict[str, list[float]] = {"base": [], "head": []}
            for _ in range(args.repeats + 2):  # two warm-up rounds
                for k, w in workers.items():
                    w.stdin.write("go\n")
                    w.stdin.flush()
                    times[k].append(float(w.stdout.readline()))
            for w in workers.values():
                w.stdin.close()
                w.wait()
        finally:
            for name in ("base", "head"):
                if trees.get(name) not in (None, ROOT):
                    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                                    str(trees[name])], capture_output=True)
    stats = {k: np.percentile(np.asarray(v[2:]) * 1e3, [20, 50, 80]) for k, v in times.items()}
    print(f"compress {args.shape} {args.preset}, {args.threads} threads, {args.repeats} "
          f"interleaved rounds; outputs identical: {same}")
    for k in ("base", "head"):
        rev = args.base if k == "base" else (args.head or "working tree")
        lo, mid, hi = stats[k]
        print(f"  {k:4} {rev:>14}: median {mid:8.2f} ms  (p20 {lo:.2f}, p80 {hi:.2f})")
    print(f"  head / base = {stats['head'][1] / stats['base'][1]:.3f}")
    return 0 if same else 1


def _checkout(rev: str, path: Path) -> Path:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), rev],
                   check=True, capture_output=True)
    return path


def _start(tree: Path, spec: list) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(spec)], cwd=str(tree),
                            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


if __name__ == "__main__":
    sys.exit(main())
