"""The ``flashvid`` command line."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import torch

from .config import BACKENDS, SELECTIONS, FlashVIDConfig
from .demo.cli import add_demo_commands

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
          "float64": torch.float64}
PRESETS = ("llava_onevision", "llava_video", "qwen2_5_vl", "qwen3_vl")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flashvid", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_compress(sub)
    add_demo_commands(sub)
    from benchmarks import add_bench_command

    add_bench_command(sub)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"flashvid {args.command}: error: {err}", file=sys.stderr)
        return 2


# --------------------------------------------------------------------------- compress
def _add_compress(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compress", help="compress one video's tokens and print a summary",
        description="Compress a video's visual tokens with FlashVID. Without --input, runs on a "
                    "built-in seeded synthetic clip (drift, camera pan, a moving object, scene "
                    "cuts).")
    p.add_argument("--input", help="token file (.pt, .npz or .safetensors) holding 'tokens' "
                                   "[F, N, D] and 'cls_attn' [F, N]")
    p.add_argument("--output", help="write the result (.pt, .npz or .safetensors)")
    p.add_argument("--preset", choices=PRESETS, default="llava_onevision")
    p.add_argument("--retention", type=float, help="retention_ratio (default: the preset's)")
    p.add_argument("--selection", choices=SELECTIONS)
    p.add_argument("--aggregation", choices=("official", "mean"))
    p.add_argument("--dedupe", action="store_true", help="remove duplicate positions (Q2/Q3)")
    p.add_argument("--backend", choices=BACKENDS, default="auto")
    p.add_argument("--device", default="cpu", help="device to run on (cpu, cuda, cuda:1, ...)")
    p.add_argument("--dtype", choices=tuple(DTYPES), help="cast the input to this dtype")
    g = p.add_argument_group("built-in clip (without --input)")
    g.add_argument("--frames", type=int, default=32)
    g.add_argument("--tokens", type=int, default=196, help="tokens per frame")
    g.add_argument("--dim", type=int, default=3584)
    g.add_argument("--scene-cuts", type=int, default=2)
    g.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=_run_compress)


def _run_compress(args: argparse.Namespace) -> int:
    from . import compress
    from .io import load_video, save_tensors
    from .synthetic import synthetic_clip

    overrides = {k: v for k, v in (("retention_ratio", args.retention),
                                   ("selection", args.selection),
                                   ("aggregation", args.aggregation)) if v is not None}
    config = FlashVIDConfig.preset(args.preset, backend=args.backend, dedupe=args.dedupe,
                                   **overrides)
    if args.input:
        tokens, cls_attn = load_video(args.input)
        origin = args.input
    else:
        tokens, cls_attn = synthetic_clip(args.frames, args.tokens, args.dim,
                                          scene_cuts=args.scene_cuts, seed=args.seed)
        origin = (f"built-in synthetic clip (seed {args.seed}, {args.scene_cuts} scene cuts, "
                  "camera pan, moving object, drift)")
    if args.dtype:
        tokens, cls_attn = tokens.to(DTYPES[args.dtype]), cls_attn.to(DTYPES[args.dtype])
    tokens, cls_attn = tokens.to(args.device), cls_attn.to(args.device)

    compress(tokens, cls_attn, config)  # warm-up (kernel compilation, allocator)
    _sync(tokens.device)
    start = time.perf_counter()
    out = compress(tokens, cls_attn, config)
    _sync(tokens.device)
    elapsed = time.perf_counter() - start
    print(format_summary(out, tokens, origin, elapsed))
    if args.output:
        save_tensors(args.output, out.as_dict())
        print(f"wrote {args.output}")
    return 0


def format_summary(out, tokens: torch.Tensor, origin: str, elapsed: float) -> str:
    """A readable multi-line summary of one compression."""
    from .compress import resolve_backend

    frames, n, dim = tokens.shape
    c = out.counts()
    b = out.budget
    lengths = out.segment_lengths.tolist()
    cfg = out.config
    non_adts = c["input"] - c["adts"]
    lines = [
        f"input      {origin}",
        f"           {frames} frames x {n} tokens x {dim} dims, {str(tokens.dtype)[6:]}, "
        f"{tokens.device}",
        f"config     retention {cfg.retention_ratio:g} (x{cfg.expansion:g} on the vision side), "
        f"selection {cfg.selection}, aggregation {cfg.aggregation}, dedupe {cfg.dedupe}, "
        f"backend {resolve_backend(cfg.backend, tokens)}",
        f"budget     per frame {b.total} = {b.adts} ADTS + {b.merge} merged",
        f"segments   {len(lengths)}: {lengths}",
        "stages     tokens in -> out",
        f"  ADTS     {c['input']:>8} -> {c['adts']:>6} kept as-is",
        f"  TSTM     {non_adts:>8} -> {non_adts - c['merged_by_tstm']:>6} tree roots "
        f"({c['merged_by_tstm']} merged into the previous frame)",
        f"  DPC-kNN  {non_adts - c['merged_by_tstm']:>8} -> "
        f"{c['clusters'] + c['roots_kept']:>6} ({c['clusters']} clusters, "
        f"{c['roots_kept']} roots kept)",
        f"output     {c['output']} tokens = {100 * out.retention:.2f}% of {c['input']}"
        + (f", {c['duplicate_positions']} duplicate positions" if c["duplicate_positions"] else "")
        + (f", {c['dropped']} dropped (zero merge budget)" if c["dropped"] else ""),
        f"time       {1e3 * elapsed:.2f} ms",
    ]
    return "\n".join(lines)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
