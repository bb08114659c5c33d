"""The Python steps of ``benchmarks/gpu_check.sh`` (one step per call, results as JSON):

    python -m benchmarks.gpu_check env    --out DIR  # device, versions, git revision
    python -m benchmarks.gpu_check graph  --out DIR  # compress in exact-count mode, captured
                                                     # in a CUDA graph, replayed on new inputs
    python -m benchmarks.gpu_check timing --out DIR  # each kernel and compress at the presets
    python -m benchmarks.gpu_check memory --out DIR  # peak memory at 32/320/1024 frames

On a GPU everything runs on CUDA (times from CUDA events, median of ``--repeats``, at least 50).
With ``--dry-run`` (what ``gpu_check.sh --dry-run`` passes, under TRITON_INTERPRET=1) the same
code runs on the CPU on tiny shapes: host clock instead of events, no graph capture (each input
runs eagerly instead) and no CUDA memory statistics, which proves the script and not the GPU.
Only public entry points are used: ``flashvid.compress`` and the launchers of
``flashvid_kernels``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

import flashvid
import flashvid_kernels as K
from flashvid import FlashVIDConfig
from flashvid.synthetic import synthetic_clip

# the preset workloads (frames, tokens per frame, dim) and the dry run's stand-ins
PRESETS = {"llava_onevision": (32, 196, 3584), "llava_video": (64, 169, 3584),
           "qwen2_5_vl": (16, 1024, 3584), "qwen3_vl": (16, 1024, 4096)}
DRY = {"llava_onevision": (3, 36, 32), "qwen2_5_vl": (2, 64, 32)}  # two stand-ins suffice
MEMORY_FRAMES, DRY_MEMORY_FRAMES = (32, 320, 1024), (2,)
RETENTION = 0.10


def _device(dry: bool) -> torch.device:
    if dry:
        if not K.interpreting():
            raise SystemExit("gpu_check --dry-run: set TRITON_INTERPRET=1 (gpu_check.sh does)")
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device (use --dry-run on a CPU machine)")
    return torch.device("cuda")


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(fn: Callable[[], object], dev: torch.device, repeats: int) -> dict:
    """Median and p20/p80 in ms of ``repeats`` runs after one warm-up (CUDA events on a GPU)."""
    fn()
    _sync(dev)
    times = []
    for _ in range(repeats):
        if dev.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    pick = lambda q: times[min(len(times) - 1, int(q * len(times)))]  # noqa: E731
    return {"median_ms": pick(0.5), "p20_ms": pick(0.2), "p80_ms": pick(0.8),
            "repeats": len(times), "clock": "cuda events" if dev.type == "cuda" else "host"}


def clip(frames: int, n: int, dim: int, dev: torch.device, seed: int, dtype=torch.bfloat16):
    x, a = synthetic_clip(frames, n, dim, seed=seed, dtype=dtype)
    return x.to(dev), a.to(dev)


# --------------------------------------------------------------------------------- steps
def step_env(args) -> dict:
    import triton

    dev = _device(args.dry_run)
    git = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout.strip()
    env = {"mode": "dry run (CPU, Triton interpreter)" if args.dry_run else "GPU",
           "torch": torch.__version__, "triton": triton.__version__, "cuda": torch.version.cuda,
           "python": platform.python_version(), "git": git or None, "argv": sys.argv,
           "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,"
                              "clocks.sm,clocks.max.sm", "--format=csv,noheader"],
                             capture_output=True, text=True)
        env.update(device=torch.cuda.get_device_name(dev),
                   capability=list(torch.cuda.get_device_capability(dev)),
                   sms=p.multi_processor_count, memory_gb=round(p.total_memory / 2**30, 1),
                   nvidia_smi=smi.stdout.strip())
    else:
        env.update(device=f"CPU ({os.cpu_count()} cores)")
    return env


def step_graph(args) -> dict:
    """compress in exact-count mode captured once in a CUDA graph, then replayed on new inputs
    copied into the captured buffers; each replay must equal eager compress on that input."""
    dev = _device(args.dry_run)
    frames, n, dim = DRY["llava_onevision"] if args.dry_run else PRESETS["llava_onevision"]
    cfg = FlashVIDConfig.preset("llava_onevision", backend="triton", exact_count=True,
                                retention_ratio=RETENTION)
    x0, a0 = clip(frames, n, dim, dev, seed=0)
    static_x, static_a = x0.clone(), a0.clone()
    out: dict = {"shape": [frames, n, dim], "dtype": "bfloat16", "rows": None, "inputs": []}
    run = lambda: flashvid.compress(static_x, static_a, cfg)  # noqa: E731
    if dev.type == "cuda":
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm-up: Triton compiles, the allocator settles
                run()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            captured = run()
        out["capture"] = "torch.cuda.CUDAGraph"
    else:
        graph, captured = None, None
        out["capture"] = "none (CPU: each input runs eagerly through the same code)"
    ok = True
    for seed in (1, 2) if args.dry_run else (1, 2, 3):
        x, a = clip(frames, n, dim, dev, seed=seed)
        static_x.copy_(x)
        static_a.copy_(a)
        if graph is not None:
            graph.replay()
            _sync(dev)
            got = captured
        else:
            got = run()
        want = flashvid.compress(x, a, cfg)
        same = (torch.equal(got.indices, want.indices) and torch.equal(got.tokens, want.tokens)
                and torch.equal(got.kinds, want.kinds))
        out["rows"] = int(want.tokens.shape[0])
        out["inputs"].append({"seed": seed, "equal_to_eager": same,
                              "rows": int(got.tokens.shape[0])})
        ok = ok and same and int(got.tokens.shape[0]) == cfg.output_length(frames, n)
    out["ok"] = ok
    return out


def _kernel_calls(x, a, sel: str, k: int):
    """The three launchers as compress calls them on one video (fresh outputs each call)."""
    frames, n, _ = x.shape
    use_event = sel == "adts"
    mu = x.float().mean(dim=1) if use_event else None
    eligible = torch.ones(frames, n, dtype=torch.bool, device=x.device)
    eligible[:, ::10] = False
    start = torch.zeros(frames, dtype=torch.bool, device=x.device)
    start[::4] = True
    norms, event = K.token_stats(x, mu)
    weights = a.float() * 1e6
    return {
        "token_stats": lambda: K.token_stats(x, mu),
        "adts_select": lambda: K.adts_select(x, weights, k, not use_event, fill=-1.0,
                                             event=event, norms=norms),
        "tstm_edges": lambda: K.tstm_edges(x, eligible, start, norms=norms),
    }


def step_timing(args) -> dict:
    """Each kernel and compress (triton; torch and reference for the ratios) at the presets;
    the floor is the batched Gram matmul x x^T of every frame (cuBLAS / torch), the one product
    no implementation of ADTS avoids."""
    dev = _device(args.dry_run)
    rows = []
    shapes = DRY if args.dry_run else PRESETS
    for name, (frames, n, dim) in shapes.items():
        cfg = FlashVIDConfig.preset(name, retention_ratio=RETENTION)
        k = cfg.budget(n).adts
        x, a = clip(frames, n, dim, dev, seed=0)
        row = {"preset": name, "shape": [frames, n, dim], "dtype": "bfloat16", "k": k,
               "selection": cfg.selection}
        for kname, fn in _kernel_calls(x, a, cfg.selection, k).items():
            row[kname] = timed(fn, dev, args.repeats)
        row["floor_gram"] = timed(lambda x=x: torch.bmm(x, x.transpose(1, 2)), dev,
                                  args.repeats)
        for backend, reps in (("triton", args.repeats), ("torch", args.repeats),
                              ("reference", args.reference_repeats)):
            c = cfg.replace(backend=backend)
            row[f"compress_{backend}"] = timed(
                lambda x=x, a=a, c=c: flashvid.compress(x, a, c), dev, reps)
        tri = row["compress_triton"]["median_ms"]
        row["triton_vs_reference"] = row["compress_reference"]["median_ms"] / tri
        row["triton_vs_torch"] = row["compress_torch"]["median_ms"] / tri
        row["triton_vs_floor"] = tri / row["floor_gram"]["median_ms"]
        rows.append(row)
        print(f"{name} {frames}x{n}x{dim}: compress triton {tri:.3f} ms, "
              f"{row['triton_vs_reference']:.1f}x faster than the reference, "
              f"{row['triton_vs_floor']:.2f}x the Gram floor; kernels "
              + ", ".join(f"{kn} {row[kn]['median_ms']:.3f} ms" for kn in
                          ("token_stats", "adts_select", "tstm_edges")), flush=True)
    return {"rows": rows}


def step_memory(args) -> dict:
    """Extra peak memory of compress (triton, bf16, 196 x 3584 frames) at 32, 320 and 1024
    frames, against the input's own size."""
    dev = _device(args.dry_run)
    if dev.type != "cuda":
        frames_list, n, dim = DRY_MEMORY_FRAMES, 36, 32
    else:
        frames_list, n, dim = MEMORY_FRAMES, 196, 3584
    rows = []
    for frames in frames_list:
        cfg = FlashVIDConfig.preset("llava_onevision", backend="triton",
                                    retention_ratio=RETENTION)
        x, a = clip(frames, n, dim, dev, seed=0)
        flashvid.compress(x, a, cfg)  # compiled, allocator warm
        row = {"frames": frames, "shape": [frames, n, dim],
               "input_mib": x.numel() * x.element_size() / 2**20}
        if dev.type == "cuda":
            _sync(dev)
            base = torch.cuda.memory_allocated(dev)
            torch.cuda.reset_peak_memory_stats(dev)
            flashvid.compress(x, a, cfg)
            _sync(dev)
            row["peak_extra_mib"] = (torch.cuda.max_memory_allocated(dev) - base) / 2**20
        else:
            flashvid.compress(x, a, cfg)
            row["peak_extra_mib"] = None  # no CUDA memory statistics on the CPU
        rows.append(row)
        print(f"{frames} frames: peak extra {row['peak_extra_mib']} MiB "
              f"(input {row['input_mib']:.1f} MiB)", flush=True)
    return {"rows": rows}


STEPS = {"env": step_env, "graph": step_graph, "timing": step_timing, "memory": step_memory}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("step", choices=list(STEPS))
    p.add_argument("--out", required=True, help="folder for <step>.json")
    p.add_argument("--dry-run", action="store_true",
                   help="CPU, Triton interpreter, tiny shapes: checks the script, not the GPU")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed runs per measurement (default 50 on a GPU, 1 in a dry run)")
    p.add_argument("--reference-repeats", type=int, default=None,
                   help="timed runs of the reference compress (default 3, 1 in a dry run)")
    args = p.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.dry_run else 50
    if args.reference_repeats is None:
        args.reference_repeats = 1 if args.dry_run else 3
    if not args.dry_run and args.repeats < 50:
        p.error("--repeats: at least 50 on a GPU (the medians are reported as such)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = STEPS[args.step](args)
    (out / f"{args.step}.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(f"wrote {out / (args.step + '.json')}")
    ok = result.get("ok", True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
