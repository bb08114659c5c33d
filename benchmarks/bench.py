"""``flashvid bench`` (also ``python -m benchmarks``): stage and end-to-end microbenchmarks.

For each shape and provider (reference, torch, triton) and each stage (dyseg, adts, tstm, trees,
dpc, compress), the provider's output is first checked against the reference on the same inputs,
then timed after a warm-up: CUDA events on the GPU, a monotonic clock with synchronisation
elsewhere; the median and p20/p80 of the repeats are reported, with ratios against the reference
and against the floor measured in the same run (see ``floors``). Results go to JSON lines and
CSV with the device, versions and git revision; ``--plot`` draws PNGs from those files.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from flashvid.config import DTYPES, PRESETS, FlashVIDConfig, preset_name
from flashvid.synthetic import synthetic_clip

from .floors import cpu_floor_fns, gpu_ceilings, stage_work
from .stages import STAGES, check, fast_stage, prepare, reference_stage

# the workload of each configuration preset: frames x tokens per frame x dim of its published
# evaluation (Qwen: 32 video frames = 16 temporal patches of 32x32 merged tokens)
PRESET_SHAPES: dict[str, tuple[int, int, int]] = {
    "llava_onevision": (32, 196, 3584),
    "llava_video": (64, 169, 3584),
    "qwen2_5_vl": (16, 1024, 3584),
    "qwen3_vl": (16, 1024, 4096),
    # no published evaluation: the Qwen3-VL video, at the width of transformers' default configs
    # (Qwen3-VL-30B-A3B, Qwen3.5-9B, Qwen3.5-35B-A3B)
    "qwen3_vl_moe": (16, 1024, 2048),
    "qwen3_5": (16, 1024, 4096),
    "qwen3_5_moe": (16, 1024, 2048),
}
QUICK = ("llava_onevision", [(12, 49, 64), (24, 49, 64)])
PROVIDERS = ("reference", "torch", "triton")
DEFAULT_OUT = "bench-results"
DESCRIPTION = (
    "Stage and end-to-end microbenchmarks of FlashVID. For each shape, provider (reference, "
    "torch, triton) and stage (dyseg, adts, tstm, trees, dpc, compress), the provider's output "
    "is first checked against the reference on the same inputs, then timed after a warm-up "
    "(CUDA events on a GPU, a monotonic clock elsewhere). It reports the median and p20/p80 "
    "of the repeats, with ratios against the reference and against the floor measured in the "
    "same run, and writes bench.jsonl and bench.csv (device, versions, git revision); --plot "
    "draws PNG plots from those files.")
FIELDS = ["run", "time_utc", "device", "torch", "triton", "cuda", "git", "threads", "preset",
          "frames", "tokens", "dim", "dtype", "retention", "provider", "stage", "median_ms",
          "p20_ms", "p80_ms", "repeats", "floor_ms", "vs_reference", "vs_floor", "correct",
          "check", "peak_mem_mb"]


def add_bench_command(sub: argparse._SubParsersAction) -> None:
    """Register ``bench`` on the ``flashvid`` parser."""
    p = sub.add_parser("bench", help="time each stage of each backend against the reference "
                                     "and the floor", description=DESCRIPTION)
    add_arguments(p)
    p.set_defaults(run=run_command)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", action="append", metavar="NAME",
                   help="a configuration preset and its workload (repeatable; default "
                        "llava_onevision): " + ", ".join(
                            f"{k} {f}x{n}x{d}" for k, (f, n, d) in PRESET_SHAPES.items()))
    p.add_argument("--shape", action="append", metavar="FxNxD",
                   help="an extra shape, frames x tokens x dim (repeatable), run with the "
                        "--config preset")
    p.add_argument("--config", default="llava_onevision", metavar="NAME",
                   help=f"configuration preset for --shape and --quick (one of {list(PRESETS)})")
    p.add_argument("--quick", action="store_true", help="a small CPU run (two tiny shapes)")
    p.add_argument("--dtype", choices=[d for d in DTYPES if d != "float64"], default="float32")
    p.add_argument("--retention", type=float, default=0.10)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--backends", default=None,
                   help="comma-separated providers (default: reference,torch and triton on CUDA)")
    p.add_argument("--stages", default=",".join(STAGES), help="comma-separated stages")
    p.add_argument("--repeats", type=int, default=20, help="most timed repeats per measurement")
    p.add_argument("--min-time", type=float, default=1.0,
                   help="seconds of timed repeats to aim for (at least 3 repeats)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=DEFAULT_OUT,
                   help=f"folder for bench.jsonl and bench.csv (default: ./{DEFAULT_OUT})")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads for the run (default: torch's default)")
    p.add_argument("--append", action="store_true", help="add to existing result files")
    p.add_argument("--plot", action="store_true",
                   help="draw PNG plots from the result files in --out (no timing)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=DESCRIPTION)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_command(args)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"bench: error: {err}", file=sys.stderr)
        return 2


def run_command(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if args.plot:
        from .plot import plot_results

        for path in plot_results(out):
            print(f"wrote {path}")
        return 0
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    rows = run(args)
    out.mkdir(parents=True, exist_ok=True)
    write_results(rows, out, append=args.append)
    print(format_table(rows))
    print(f"wrote {out / 'bench.jsonl'} and {out / 'bench.csv'}")
    return 0


# --------------------------------------------------------------------------- the run
def shapes_of(args: argparse.Namespace) -> list[tuple[str, str, tuple[int, int, int]]]:
    """(label, config preset, shape) for every requested shape."""
    out = []
    config = preset_name(args.config)
    if args.quick:
        out += [("quick", config, s) for s in QUICK[1]]
    for name in args.preset or ([] if (args.quick or args.shape) else ["llava_onevision"]):
        preset = preset_name(name)
        out.append((preset, preset, PRESET_SHAPES[preset]))
    for text in args.shape or []:
        try:
            f, n, d = (int(v) for v in text.lower().split("x"))
        except ValueError:
            raise ValueError(f"--shape {text!r}: expected FRAMESxTOKENSxDIM, e.g. 32x196x3584") \
                from None
        if min(f, n, d) < 1:
            raise ValueError(f"--shape {text!r}: every size must be >= 1")
        out.append(("custom", config, (f, n, d)))
    return out


def providers_of(args: argparse.Namespace, device: torch.device) -> list[str]:
    if args.backends:
        names = [b.strip() for b in args.backends.split(",") if b.strip()]
        bad = [b for b in names if b not in PROVIDERS]
        if bad:
            raise ValueError(f"--backends: unknown {bad}; expected some of {list(PROVIDERS)}")
        return names
    return ["reference", "torch"] + (["triton"] if device.type == "cuda" else [])


def run(args: argparse.Namespace) -> list[dict]:
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise ValueError(f"--stages: unknown {bad}; expected some of {list(STAGES)}")
    providers = providers_of(args, device)
    shapes = shapes_of(args)
    timer = Timer(device, args.repeats, args.min_time)
    env = environment(device)
    ceilings = gpu_ceilings(device, dtype, timer.median) if device.type == "cuda" else None
    rows: list[dict] = []
    progress = Progress(len(shapes) * len(stages) * (len(providers) + 1))
    for label, preset, (frames, n, dim) in shapes:
        cfg = FlashVIDConfig.preset(preset, retention_ratio=args.retention)
        x, a = synthetic_clip(frames, n, dim, seed=args.seed, dtype=dtype)
        x, a = x.to(device), a.to(device)
        p = prepare(x, a, cfg)
        work = stage_work(p)
        floor_fns = cpu_floor_fns(p) if ceilings is None else None
        x_check = x.float() if dtype != torch.float32 else None
        for stage in stages:
            progress.step(f"{label} {frames}x{n}x{dim} floor {stage}")
            if ceilings is None:  # re-measured next to each fast provider below
                floor = timer.measure(floor_fns[stage])["median_ms"]
            else:
                nbytes, flops = work[stage]
                floor = 1e3 * max(nbytes / ceilings[0], flops / ceilings[1])
            want = reference_stage(p, stage, x_check)()  # checked on the same rounded values
            ref_ms = None
            for provider in providers:
                progress.step(f"{label} {frames}x{n}x{dim} {provider} {stage}")
                if provider == "reference":  # the oracle itself (already warm from `want`)
                    ok, detail = True, "oracle" + (" (published precision)" if x_check is not None
                                                   else "")
                    stats = timer.measure(reference_stage(p, stage), slow=True)
                    ref_ms = stats["median_ms"]
                else:
                    fn = fast_stage(p, stage, provider)
                    ok, detail = check(stage, fn(), want, p)
                    if ceilings is None:  # CPU: interleave with the floor, so drift cancels
                        stats, floor_stats = timer.measure_pair(fn, floor_fns[stage])
                        floor = floor_stats["median_ms"]
                    else:
                        stats = timer.measure(fn)
                rows.append({
                    **env, "preset": label, "frames": frames, "tokens": n, "dim": dim,
                    "dtype": args.dtype, "retention": args.retention, "provider": provider,
                    "stage": stage, **stats, "floor_ms": floor,
                    "vs_reference": (ref_ms / stats["median_ms"]) if ref_ms else None,
                    "vs_floor": stats["median_ms"] / floor if floor else None,
                    "correct": ok, "check": detail,
                })
    progress.done()
    return rows


class Timer:
    """Warm up, then repeat until ``min_time`` seconds (at least 3, at most ``repeats`` runs)."""

    def __init__(self, device: torch.device, repeats: int, min_time: float) -> None:
        self.device, self.repeats, self.min_time = device, max(3, repeats), min_time

    def _once(self, fn: Callable[[], object]) -> float:
        if self.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3
        begin = time.perf_counter()
        fn()
        return time.perf_counter() - begin

    def measure(self, fn: Callable[[], object], slow: bool = False) -> dict:
        """Timing statistics of ``fn``; ``slow`` (the reference): no warm-up, 3 repeats."""
        if not slow:
            fn()  # warm-up: compilation, allocator, caches
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            base = torch.cuda.memory_allocated(self.device)
        times: list[float] = []
        limit = 3 if slow else self.repeats
        while len(times) < 3 or (len(times) < limit and sum(times) < self.min_time):
            times.append(self._once(fn))
        peak = None
        if self.device.type == "cuda":
            peak = (torch.cuda.max_memory_allocated(self.device) - base) / 2**20
        return self._stats(times, peak)

    def measure_pair(self, fn: Callable[[], object], other: Callable[[], object]
                     ) -> tuple[dict, dict]:
        """Time ``fn`` and ``other`` alternately (host clock), so that a machine whose speed
        drifts affects both alike; statistics of each."""
        fn()
        other()
        a: list[float] = []
        b: list[float] = []
        while len(a) < 3 or (len(a) < self.repeats and sum(a) + sum(b) < self.min_time):
            a.append(self._once(fn))
            b.append(self._once(other))
        return self._stats(a), self._stats(b)

    @staticmethod
    def _stats(times: list[float], peak: float | None = None) -> dict:
        ms = np.asarray(times) * 1e3
        return {"median_ms": float(np.median(ms)), "p20_ms": float(np.percentile(ms, 20)),
                "p80_ms": float(np.percentile(ms, 80)), "repeats": len(times),
                "peak_mem_mb": peak}

    def median(self, fn: Callable[[], object]) -> float:
        return self.measure(fn)["median_ms"] / 1e3


class Progress:
    """A one-line progress bar on stderr (only when it is a terminal)."""

    def __init__(self, total: int) -> None:
        self.total, self.count, self.tty = total, 0, sys.stderr.isatty()

    def step(self, what: str) -> None:
        self.count += 1
        if self.tty:
            filled = int(30 * self.count / self.total)
            print(f"\r[{'#' * filled}{'.' * (30 - filled)}] {self.count}/{self.total} {what:<48}",
                  end="", file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.tty:
            print(file=sys.stderr)


def environment(device: torch.device) -> dict:
    """Device name, versions, git revision: written into every result row."""
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:  # pragma: no cover
        triton_version = None
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = _cpu_name()
    return {
        "run": datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ"),
        "time_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": name, "torch": torch.__version__, "triton": triton_version,
        "cuda": torch.version.cuda, "git": _git_revision(), "threads": torch.get_num_threads(),
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"CPU {line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"CPU {platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def _git_revision() -> str:
    root = Path(__file__).resolve().parents[1]
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--",
                                "flashvid", "flashvid_kernels"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# --------------------------------------------------------------------------- output
def write_results(rows: list[dict], out: Path, append: bool = False) -> None:
    mode = "a" if append else "w"
    with open(out / "bench.jsonl", mode) as f:
        for row in rows:
            f.write(json.dumps({k: row.get(k) for k in FIELDS}) + "\n")
    new = not (append and (out / "bench.csv").exists())
    with open(out / "bench.csv", mode, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        writer.writerows({k: row.get(k) for k in FIELDS} for row in rows)


def format_table(rows: list[dict]) -> str:
    """The results as a text table, with the ratios measured in this run."""
    if not rows:
        return "no results"
    head = (f"{'shape':>16} {'dtype':>8} {'stage':>8} {'provider':>9} {'median ms':>10} "
            f"{'p20-p80 ms':>17} {'x faster':>9} {'x floor':>8} {'check':>6}")
    lines = [f"device {rows[0]['device']}, torch {rows[0]['torch']}, triton {rows[0]['triton']}, "
             f"git {rows[0]['git']}, {rows[0]['threads']} threads", head, "-" * len(head)]
    for r in rows:
        shape = f"{r['frames']}x{r['tokens']}x{r['dim']}"
        faster = f"{r['vs_reference']:.1f}" if r["vs_reference"] else "-"
        floor = f"{r['vs_floor']:.2f}" if r["vs_floor"] else "-"
        lines.append(f"{shape:>16} {r['dtype']:>8} {r['stage']:>8} {r['provider']:>9} "
                     f"{r['median_ms']:>10.3f} {r['p20_ms']:>8.3f}-{r['p80_ms']:<8.3f} "
                     f"{faster:>9} {floor:>8} {'ok' if r['correct'] else 'FAIL':>6}")
    lines.append("x faster = reference median / median; x floor = median / floor (CPU: the "
                 "unavoidable batched matmuls; GPU: max(bytes/bandwidth, FLOPs/matmul rate))")
    return "\n".join(lines)
