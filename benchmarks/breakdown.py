"""Where one ``flashvid.compress`` call spends its time, stage by stage, in the pipeline.

    python -m benchmarks.breakdown                                   # 32x196x3584 and 160x196x3584
    python -m benchmarks.breakdown --shape 16x1024x3584 --preset qwen2_5_vl --repeats 5

``flashvid bench`` times each stage alone on prepared inputs; this times the stages inside a
real call, where they share caches and the workspace. The stage functions the pipeline calls
(``flashvid.pipeline``'s module attributes, and the torch backend's statistics methods) are
wrapped with wall-clock timers in this process only, for the duration of the run; each shape is
one seeded clip (``flashvid.synthetic``), compressed ``--repeats`` times after a warm-up. It
prints the milliseconds per call of each stage, their share of the call, and the floor (the
stage's unavoidable matrix products, ``benchmarks.floors``) for the product stages.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import sys
import time
from collections.abc import Iterator

from flashvid import pipeline
from flashvid.backends.pytorch import TorchBackend

# (owner, attribute, label): the pipeline's stages in call order, where the pipeline looks
# them up (its stage modules' functions, its own imported names, the torch backend's methods)
TIMED = [
    (pipeline.dyseg, "frame_means", "frame means"),
    (TorchBackend, "token_norms", "norms, unit rows"),
    (TorchBackend, "frame_stats", "Gram, event term"),
    (pipeline, "adts", "ADTS selection"),
    (pipeline.tstm_stage, "tstm", "TSTM"),
    (pipeline, "trees", "trees"),
    (pipeline.dpc_stage, "dpc", "DPC-kNN"),
    (pipeline, "assemble", "assemble"),
]


@contextlib.contextmanager
def timed_stages(acc: dict[str, float]) -> Iterator[None]:
    """Wrap every stage of TIMED with a timer adding its seconds to ``acc[label]``."""
    saved = []
    for owner, attr, label in TIMED:
        original = getattr(owner, attr)

        def wrapper(*args, _f=original, _label=label, **kwargs):
            t = time.perf_counter()
            try:
                return _f(*args, **kwargs)
            finally:
                acc[_label] += time.perf_counter() - t

        saved.append((owner, attr, original))
        setattr(owner, attr, wrapper)
    try:
        yield
    finally:
        for owner, attr, original in reversed(saved):
            setattr(owner, attr, original)


def breakdown(shape: tuple[int, int, int], preset: str, repeats: int) -> dict:
    """Per-stage milliseconds per call of the torch backend on one seeded clip."""
    import torch

    from benchmarks.floors import cpu_floor_fns
    from benchmarks.stages import prepare
    from flashvid import FlashVIDConfig, compress
    from flashvid.synthetic import synthetic_clip

    f, n, d = shape
    x, a = synthetic_clip(f, n, d, seed=0)
    cfg = FlashVIDConfig.preset(preset, backend="torch")
    for _ in range(2):
        compress(x, a, cfg)
    acc: dict[str, float] = collections.defaultdict(float)
    total = 0.0
    with timed_stages(acc):
        for _ in range(repeats):
            t = time.perf_counter()
            compress(x, a, cfg)
            total += time.perf_counter() - t
    floors = cpu_floor_fns(prepare(x, a, cfg))
    floor_ms = {}
    for key, label in (("adts", "Gram, event term"), ("tstm", "TSTM"), ("dpc", "DPC-kNN")):
        fn = floors[key]
        fn()
        t = time.perf_counter()
        for _ in range(repeats):
            fn()
        floor_ms[label] = (time.perf_counter() - t) / repeats * 1e3
    stages = {label: acc[label] / repeats * 1e3 for _, _, label in TIMED}
    call = total / repeats * 1e3
    return {"shape": list(shape), "preset": preset, "threads": torch.get_num_threads(),
            "call_ms": call, "stages_ms": stages, "other_ms": call - sum(stages.values()),
            "floor_ms": floor_ms}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.breakdown",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", action="append", metavar="FxNxD",
                        help="clip shape (repeatable; default 32x196x3584 and 160x196x3584)")
    parser.add_argument("--preset", default="llava_onevision")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    import torch

    from benchmarks.published import _shape

    shapes = [_shape(s, parser) for s in (args.shape or ["32x196x3584", "160x196x3584"])]
    results = []
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        for shape in shapes:
            results.append(breakdown(shape, args.preset, args.repeats))
    finally:
        torch.set_num_threads(threads)
    for shape, r in zip(shapes, results):
        print(f"{'x'.join(map(str, shape))} ({args.preset}, {r['threads']} threads): "
              f"{r['call_ms']:.1f} ms per call")
        for label, ms in list(r["stages_ms"].items()) + [("other", r["other_ms"])]:
            floor = r["floor_ms"].get(label)
            extra = f"   floor {floor:6.1f} ms ({ms / floor:.2f}x)" if floor else ""
            print(f"  {label:18s} {ms:7.1f} ms  {100 * ms / r['call_ms']:5.1f}%{extra}")
    if args.json:
        import datetime
        import platform

        from benchmarks.bench import _cpu_name, _git_revision

        given = sys.argv[1:] if argv is None else argv
        meta = {"time_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                "device": _cpu_name(), "threads": args.threads, "torch": torch.__version__,
                "python": platform.python_version(), "git": _git_revision(),
                "command": "python -m benchmarks.breakdown " + " ".join(given)}
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "results": results}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
