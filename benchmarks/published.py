"""This project against the published FlashVID code, side by side in one run.

    python -m benchmarks.published --published ~/src/FlashVID            # the default shapes
    python -m benchmarks.published --published DIR --shape 32x196x3584 --rounds 5 --calls 3

DIR is a checkout of the published repository (github.com/Fanziyang-v/FlashVID) that the user
has; nothing of it is part of this project. Its ``flashvid/utils.py`` (``flashvid_compression``)
is imported from DIR without running its package ``__init__`` (which patches transformers), so
only torch is needed.

For every shape, one seeded clip (``flashvid.synthetic``) goes to the published code, this
project's default mode and its exact-count mode (``backend="torch"`` on the CPU, the
``--device``'s default backend elsewhere), in one process: the run alternates between them,
``--calls`` timed calls each per round, for ``--rounds`` rounds, so that the speed drift of a
shared machine affects all three alike. The published code mutates its input, so it gets a
fresh copy before each call (outside the timed region). A fourth entry, ``floor``, times the
matrix products this project cannot avoid on the same clip (``benchmarks.floors``: each frame's
Gram from its distinct blocks, the adjacent-frame similarities between the tokens TSTM may
link, each DPC frame's product), interleaved like the others: the published code's time over
the floor is the most any implementation of the same arithmetic could gain on this machine.
The matrix-product FLOPs of one call of the published code and of this project are counted at
the dispatcher (mm, bmm, addmm, baddbmm, cdist's distance product). Reported: the median per
provider, the published code's time over each mode's and over the floor, exact-count over
default, and the growth from the shortest to the longest clip of the same N. ``--memory`` adds
the peak memory of one ``compress`` call at 32, 160 and 320 frames, from the allocator (CUDA)
or the process's peak resident set over its resident set before the call (CPU, a fresh process
per measurement, the peak reset after the clip is made). Everything goes to ``published.json`` with
the device, versions and git revision.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# (F, N, D, preset): the published evaluation workloads (Qwen: 16 temporal patches)
SHAPES = [(32, 196, 3584, "llava_onevision"), (64, 169, 3584, "llava_video"),
          (16, 266, 3584, "qwen2_5_vl"), (160, 196, 3584, "llava_onevision"),
          (16, 1024, 3584, "qwen2_5_vl")]
PROVIDERS = ("published", "default", "exact")
TIMED = (*PROVIDERS, "floor")


def product_flops(fn: Callable[[], object]) -> float:
    """FLOPs of the matrix products one call of ``fn`` runs (2·M·N·K per product; cdist's
    distance product as 2·B·P·R·D), counted as the ops reach the dispatcher."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    aten = torch.ops.aten
    total = [0.0]

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            packet = getattr(func, "overloadpacket", None)
            if packet in (aten.mm, aten.addmm):
                a, b = args[-2], args[-1]
                total[0] += 2.0 * a.shape[0] * a.shape[1] * b.shape[1]
            elif packet in (aten.bmm, aten.baddbmm):
                a, b = args[-2], args[-1]
                total[0] += 2.0 * a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]
            elif packet in (aten._cdist_forward, aten._euclidean_dist, aten.cdist):
                a, b = args[0], args[1]
                batch = a.numel() // (a.shape[-2] * a.shape[-1])
                total[0] += 2.0 * batch * a.shape[-2] * b.shape[-2] * a.shape[-1]
            return func(*args, **kwargs)

    with Count():
        fn()
    return total[0]

def load_published(published: Path):
    """The published ``flashvid/utils.py`` and ``configuration_flashvid.py`` from a checkout,
    imported without the package's ``__init__`` (which patches transformers)."""
    pkg = types.ModuleType("published_flashvid")
    pkg.__path__ = [str(published / "flashvid")]
    sys.modules["published_flashvid"] = pkg
    utils = importlib.import_module("published_flashvid.utils")
    conf = importlib.import_module("published_flashvid.configuration_flashvid")
    return utils, conf


def providers(shape, device: str, published: Path) -> dict[str, Callable[[], tuple[float, int]]]:
    """Zero-argument timed calls of each provider on the same seeded clip: (seconds, rows)."""
    import torch

    from flashvid import FlashVIDConfig, compress
    from flashvid.synthetic import synthetic_clip

    f, n, d, preset = shape
    x, a = synthetic_clip(f, n, d, seed=0)
    x, a = x.to(device), a.to(device)
    cfg = FlashVIDConfig.preset(preset, backend="torch" if device == "cpu" else "auto")
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    utils, conf = load_published(published)
    pcfg = conf.FlashVidConfig(
        retention_ratio=cfg.retention_ratio, alpha=cfg.alpha,
        temporal_threshold=cfg.temporal_threshold, do_segment=cfg.segment,
        segment_threshold=cfg.segment_threshold, min_segment_num=cfg.min_segments,
        complementary_segment=cfg.complementary_segments, expansion=cfg.expansion,
        token_selection_method={"adts": "attn_div_v2", "adts_v1": "attn_div"}[cfg.selection])

    def published_call():
        y = x.clone()  # the published code writes into its input
        sync()
        t = time.perf_counter()
        with torch.no_grad():
            out = utils.flashvid_compression(y, a, pcfg)
        sync()
        return time.perf_counter() - t, int(out[0].shape[0])

    def ours(run):
        def call():
            sync()
            t = time.perf_counter()
            out = compress(x, a, run)
            sync()
            return time.perf_counter() - t, int(out.tokens.shape[0])
        return call

    from benchmarks.floors import cpu_floor_fns
    from benchmarks.stages import prepare

    floor_fn = cpu_floor_fns(prepare(x, a, cfg))["compress"]

    def floor_call():
        sync()
        t = time.perf_counter()
        floor_fn()
        sync()
        return time.perf_counter() - t, 0

    return {"published": published_call, "default": ours(cfg),
            "exact": ours(cfg.replace(exact_count=True)), "floor": floor_call}


MEMORY = r"""
import json, re, resource, sys, torch
f, n, d, preset, threads, device, exact = json.loads(sys.argv[1])
torch.set_num_threads(threads)
from flashvid import FlashVIDConfig, compress
from flashvid.synthetic import synthetic_clip
x, a = synthetic_clip(f, n, d, seed=0)
x, a = x.to(device), a.to(device)
cfg = FlashVIDConfig.preset(preset, backend="torch" if device == "cpu" else "auto",
                            exact_count=exact)
if device.startswith("cuda"):
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    compress(x, a, cfg)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
else:
    # Linux: reset the peak resident set (clear_refs 5), so the clip's own making is not
    # counted; the parent sets MALLOC_MMAP_THRESHOLD_ so that freed blocks leave the process and
    # compress cannot reuse them unseen. Elsewhere: the growth of the lifetime peak.
    def status(key):
        with open("/proc/self/status") as f:
            return int(re.search(key + r":\s+(\d+) kB", f.read()).group(1)) * 1024
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = status("VmRSS")
        compress(x, a, cfg)
        peak = status("VmHWM") - before
    except OSError:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        compress(x, a, cfg)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
print(json.dumps({"peak_bytes": peak, "input_bytes": x.numel() * x.element_size()}))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.published",
        description="Time this project (default and exact-count mode) against the published "
                    "FlashVID code on the same seeded inputs, interleaved in one run.")
    parser.add_argument("--published", required=True, metavar="DIR",
                        help="a checkout of the published FlashVID repository")
    parser.add_argument("--shape", action="append", metavar="FxNxD",
                        help="a workload (repeatable; default: the five published workloads)")
    parser.add_argument("--preset", default=None,
                        help="configuration preset for --shape (default: llava_onevision)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=3, help="timed calls per provider per round")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--memory", action="store_true",
                        help="also the peak memory of compress at 32, 160 and 320 frames")
    parser.add_argument("--out", default="bench-results", help="folder for published.json")
    args = parser.parse_args(argv)
    published = Path(args.published).expanduser().resolve()
    if not (published / "flashvid" / "utils.py").is_file():
        parser.error(f"--published {published}: expected a checkout of the published FlashVID "
                     "repository (with flashvid/utils.py)")
    shapes = SHAPES if not args.shape else [
        (*_shape(s, parser), args.preset or "llava_onevision") for s in args.shape]
    import torch

    torch.set_num_threads(args.threads)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    results = []
    for shape in shapes:
        f, n, d, preset = shape
        print(f"{f}x{n}x{d} ({preset}): ", end="", flush=True)
        calls = providers(shape, args.device, published)
        rows = {p: call()[1] for p, call in calls.items() if p in PROVIDERS}  # warm-up
        calls["floor"]()
        flops = {p: product_flops(calls[p]) for p in ("published", "default")}
        times: dict[str, list[float]] = {p: [] for p in TIMED}
        for _ in range(args.rounds):
            for p, call in calls.items():
                times[p] += [call()[0] for _ in range(args.calls)]
            print(".", end="", flush=True)
        del calls
        med = {p: statistics.median(t) * 1e3 for p, t in times.items()}
        row = {"frames": f, "tokens": n, "dim": d, "preset": preset, "rows": rows,
               "median_ms": med, "times_ms": {p: [t * 1e3 for t in v] for p, v in times.items()},
               "published_over_default": med["published"] / med["default"],
               "published_over_exact": med["published"] / med["exact"],
               "exact_over_default": med["exact"] / med["default"],
               "published_over_floor": med["published"] / med["floor"],
               "product_gflop": {p: v / 1e9 for p, v in flops.items()}}
        results.append(row)
        print(f" published {med['published']:.0f} ms, default {med['default']:.0f} ms "
              f"({row['published_over_default']:.2f}x faster), exact {med['exact']:.0f} ms "
              f"({row['published_over_exact']:.2f}x faster; {row['exact_over_default']:.2f}x "
              f"default); floor {med['floor']:.0f} ms (published {row['published_over_floor']:.2f}"
              f"x it); products {flops['published'] / 1e9:.1f} vs {flops['default'] / 1e9:.1f} "
              "GFLOP", flush=True)
    growth = _growth(results)
    for g in growth:
        print(f"growth {g['from']} -> {g['to']} frames at N={g['tokens']}: "
              + ", ".join(f"{p} x{g[p]:.2f}" for p in PROVIDERS))
    memory = _memory(args, env) if args.memory else []
    report = {"meta": _meta(args, published), "results": results, "growth": growth,
              "memory": memory}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "published.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out / 'published.json'}")
    return 0


def _growth(results: list[dict]) -> list[dict]:
    """Time ratio from the fewest to the most frames among shapes of one (N, D, preset)."""
    out = []
    keys = {(r["tokens"], r["dim"], r["preset"]) for r in results}
    for key in sorted(keys):
        same = sorted((r for r in results if (r["tokens"], r["dim"], r["preset"]) == key),
                      key=lambda r: r["frames"])
        if len(same) > 1:
            lo, hi = same[0], same[-1]
            out.append({"tokens": key[0], "from": lo["frames"], "to": hi["frames"],
                        **{p: hi["median_ms"][p] / lo["median_ms"][p] for p in PROVIDERS}})
    return out


def _memory(args, env) -> list[dict]:
    rows = []
    for frames in (32, 160, 320):
        for exact in (False, True):
            spec = json.dumps([frames, 196, 3584, "llava_onevision", args.threads, args.device,
                               exact])
            res = subprocess.run([sys.executable, "-c", MEMORY, spec], capture_output=True,
                                 text=True, env=dict(env, MALLOC_MMAP_THRESHOLD_="65536"),
                                 cwd=ROOT, check=True)
            got = json.loads(res.stdout.strip().splitlines()[-1])
            rows.append({"frames": frames, "exact": exact, **got,
                         "peak_over_input": got["peak_bytes"] / got["input_bytes"]})
            print(f"memory {frames}x196x3584 {'exact' if exact else 'default'}: peak "
                  f"{got['peak_bytes'] / 2**20:.0f} MiB = {rows[-1]['peak_over_input']:.2f}x "
                  "the input", flush=True)
    return rows


def _meta(args, published: Path) -> dict:
    import torch

    from benchmarks.bench import _cpu_name

    def git(*cmd: str, cwd: Path = ROOT) -> str:
        try:
            return subprocess.run(["git", *cmd], cwd=cwd, capture_output=True, text=True,
                                  check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return "unknown"

    dev = args.device
    name = torch.cuda.get_device_name(dev) if dev.startswith("cuda") else _cpu_name()
    return {"time_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "device": name, "threads": args.threads, "torch": torch.__version__,
            "python": platform.python_version(), "git": git("rev-parse", "--short", "HEAD"),
            "published_git": git("rev-parse", "--short", "HEAD", cwd=published),
            "rounds": args.rounds, "calls": args.calls,
            "command": "python -m benchmarks.published " + " ".join(sys.argv[1:])}


def _shape(text: str, parser: argparse.ArgumentParser) -> tuple[int, int, int]:
    try:
        f, n, d = (int(v) for v in text.lower().split("x"))
    except ValueError:
        parser.error(f"--shape {text!r}: expected FxNxD, e.g. 32x196x3584")
    return f, n, d


if __name__ == "__main__":
    sys.exit(main())
