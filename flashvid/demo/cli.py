"""``flashvid demo`` (real-photo clips, figures, strategy comparison) and ``flashvid viz``."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import math
import sys
import time
from pathlib import Path

import torch

from ..config import BACKENDS, FlashVIDConfig
from .baselines import STRATEGIES, STRATEGY_NAMES
from .clips import CLIP_NAMES
from .compare import RETENTIONS

PRESETS = ("llava_onevision", "llava_video", "qwen2_5_vl", "qwen3_vl")


def add_demo_commands(sub: argparse._SubParsersAction) -> None:
    """Register the ``demo`` and ``viz`` subcommands on the ``flashvid`` parser."""
    _add_demo(sub)
    _add_viz(sub)


def _csv(kind, choices=None):
    """An argparse type: a comma-separated list of ``kind`` (restricted to ``choices``)."""
    def parse(text: str):
        items = [kind(v.strip()) for v in text.split(",") if v.strip()]
        bad = [v for v in items if choices is not None and v not in choices]
        if not items or bad:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list of {list(choices) if choices else kind.__name__}"
                f", got {text!r}")
        return items
    return parse


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--retention", type=float, default=0.10, help="retention_ratio (default 0.10)")
    p.add_argument("--preset", choices=PRESETS, default="llava_onevision")
    p.add_argument("--strategy", choices=STRATEGY_NAMES, default="flashvid",
                   help="what to compress with and draw (default flashvid; see --compare for "
                        "the definitions)")
    p.add_argument("--show",
                   help="frames to draw: 'auto' (the 8 consecutive frames with the most TSTM "
                        "merges; the default, except that the demo's scene-cut clip shows its "
                        "cut), 'even' (8 evenly spaced), 'A:B' or a list like '0,4,8'")
    p.add_argument("--backend", choices=BACKENDS, default="auto")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads while it runs (default 1: the tensors are small, so "
                        "more threads do not help, and they stall when the CPU is shared)")


@contextlib.contextmanager
def _torch_threads(count: int):
    """Run with ``count`` torch CPU threads, then restore the previous setting."""
    if count < 1:
        raise ValueError(f"--threads must be >= 1, got {count}")
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------- demo
def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="compress short clips made from real photographs and draw what was kept",
        description="Build short clips from photographs bundled with scikit-image (camera pan and "
                    "zoom, a moving object, a scene cut; no downloads), turn every frame into "
                    "16x16-patch tokens through a fixed seeded projection, compress them at 10%% "
                    "and write one PNG per clip. --compare also measures the fidelity of every "
                    "strategy at several retention ratios (table, CSV and plot).")
    p.add_argument("--out", default="flashvid-demo", help="output folder (default flashvid-demo)")
    p.add_argument("--seed", type=int, default=0, help="seed of the projection and sensor noise")
    p.add_argument("--clips", type=_csv(str, CLIP_NAMES), default=list(CLIP_NAMES),
                   help=f"comma-separated subset of {', '.join(CLIP_NAMES)}")
    p.add_argument("--frames", type=int, default=32, help="frames per clip (default 32)")
    p.add_argument("--size", type=int, default=224, help="frame side in pixels (default 224)")
    p.add_argument("--patch", type=int, default=16, help="patch side in pixels (default 16)")
    p.add_argument("--dim", type=int, default=256, help="token feature dimension (default 256)")
    _add_common(p)
    g = p.add_argument_group("comparison")
    g.add_argument("--compare", action="store_true",
                   help="measure every strategy at every --retentions ratio: table, "
                        "compare.md, compare.csv and compare.png in --out")
    g.add_argument("--retentions", type=_csv(float), default=list(RETENTIONS),
                   help="ratios for --compare (default 0.10,0.15,0.20,0.25)")
    g.add_argument("--strategies", type=_csv(str, STRATEGY_NAMES), default=list(STRATEGY_NAMES),
                   help="strategies for --compare (default: all)")
    p.set_defaults(run=_run_demo)


def _missing_extra() -> str | None:
    missing = [m for m in ("skimage", "matplotlib", "imageio") if importlib.util.find_spec(m)
               is None]
    if missing:
        return (f"missing {missing}; the demo and viz commands need the demo extra: "
                "pip install 'flashvid[demo]' (scikit-image, imageio and matplotlib)")
    return None


def _run_demo(args: argparse.Namespace) -> int:
    with _torch_threads(args.threads):
        return _demo(args)


def _demo(args: argparse.Namespace) -> int:
    from .clips import demo_clip
    from .compare import (
        markdown_tables,
        plot_comparison,
        run_comparison,
        summary_table,
        tstm_vs_ttm,
        write_csv,
    )
    from .features import importance, patch_features

    problem = _missing_extra()
    if problem:
        print(f"flashvid demo: error: {problem}", file=sys.stderr)
        return 2
    if args.size % args.patch:
        raise ValueError(f"--size {args.size} must be a multiple of --patch {args.patch}")
    started = time.perf_counter()
    base = FlashVIDConfig.preset(args.preset, backend=args.backend,
                                 retention_ratio=args.retention)
    if args.compare:  # check every ratio before any work
        for r in args.retentions:
            base.replace(retention_ratio=r)
    out_dir = Path(args.out)
    grid = (args.size // args.patch, args.size // args.patch)
    print(f"FlashVID demo: {len(args.clips)} clip(s) of {args.frames} frames animated from "
          f"scikit-image's bundled photographs; tokens = {args.patch}x{args.patch} RGB patches "
          f"through a fixed projection (seed {args.seed}) to {args.dim} dims, "
          f"{grid[0]}x{grid[1]} per frame")
    videos = {}
    for name in args.clips:
        clip = demo_clip(name, frames=args.frames, size=args.size, seed=args.seed)
        tokens = patch_features(clip.frames, args.patch, args.dim, args.seed)
        cls_attn = importance(tokens)
        videos[name] = (tokens, cls_attn, grid)
        figure = out_dir / f"{name}.png"
        print()
        print(f"== {name}: {clip.description}")
        _compress_and_draw(args.strategy, tokens, cls_attn, base, grid, clip.frames, figure,
                           f"demo clip '{name}'", args.show or clip.show,
                           f"{name}: {STRATEGIES[args.strategy].label}, retention "
                           f"{args.retention:g}")
    if args.compare:
        print()
        print(f"== comparison: {len(args.strategies)} strategies x {len(args.retentions)} "
              f"retention ratios x {len(videos)} clips")
        records = run_comparison(videos, args.strategies, args.retentions,
                                 base.replace(retention_ratio=args.retentions[0]))
        tables = markdown_tables(records)
        summary = summary_table(records)
        versus = tstm_vs_ttm(records)
        settings = (f"clips {','.join(args.clips)}; {args.frames} frames of {args.size}x"
                    f"{args.size} px; {args.patch}x{args.patch} patches; dim {args.dim}; seed "
                    f"{args.seed}; preset {args.preset}; backend {args.backend}; retentions "
                    f"{','.join(f'{r:g}' for r in args.retentions)}")
        md = "\n".join([
            "# Fidelity comparison", "", f"Settings: {settings}.", "",
            "Mean over clips; cells: mean fidelity / worst frame (any clip) / output count", "",
            summary, "", "Per clip", "", tables, "TSTM vs TTM (differences; positive = TSTM "
            "better)", "", versus, ""])
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "compare.md").write_text(md)
        write_csv(records, out_dir / "compare.csv")
        plot_comparison(records, out_dir / "compare.png")
        print("mean over clips; cells: mean fidelity / worst frame / output count")
        print(summary)
        print()
        print(tables)
        print("TSTM vs TTM (differences; positive = TSTM better):")
        print(versus)
        print(f"wrote {out_dir / 'compare.md'}, {out_dir / 'compare.csv'}, "
              f"{out_dir / 'compare.png'}")
    print()
    print(f"done in {time.perf_counter() - started:.1f} s; figures in {out_dir}/")
    return 0


def _compress_and_draw(name: str, tokens: torch.Tensor, cls_attn: torch.Tensor,
                       base: FlashVIDConfig, grid: tuple[int, int], frames, figure: Path,
                       origin: str, show: str, title: str) -> None:
    """Run one strategy, print its summary and fidelity, and write its figure."""
    from ..cli import format_summary
    from .baselines import run_strategy
    from .figures import draw_compression
    from .metrics import fidelity

    start = time.perf_counter()
    out = run_strategy(name, tokens, cls_attn, base, grid)
    elapsed = time.perf_counter() - start
    fid = fidelity(tokens, out)
    if STRATEGIES[name].overrides is None:
        f, n, d = tokens.shape
        print(f"input      {origin}\n           {f} frames x {n} tokens x {d} dims\n"
              f"strategy   {STRATEGIES[name].label}: {out.budget.total} cells per frame\n"
              f"output     {fid.count} tokens = {100 * out.retention:.2f}% of {f * n}\n"
              f"time       {1e3 * elapsed:.2f} ms")
    else:
        print(f"strategy   {name}: {STRATEGIES[name].label}")
        print(format_summary(out, tokens, origin, elapsed))
    changed = "n/a" if math.isnan(fid.changed) else f"{fid.changed:.4f}"
    print(f"fidelity   mean cos(token, its representative) {fid.mean:.4f}; worst frame "
          f"{fid.worst_frame:.4f} (t={fid.worst_frame_index}); changed tokens {changed} "
          f"({fid.changed_tokens} tokens)")
    subtitle = (f"{fid.count} of {out.source.numel()} tokens ({100 * out.retention:.1f}%), "
                f"{out.counts()['adts']} ADTS-kept; segments {out.segment_lengths.tolist()}; "
                f"fidelity mean {fid.mean:.3f}, worst frame {fid.worst_frame:.3f}")
    draw_compression(frames, out, grid, show=show, title=title, subtitle=subtitle, path=figure)
    print(f"figure     {figure}")


# --------------------------------------------------------------------------- viz
def _add_viz(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "viz", help="compress your own token file and draw what was kept over your frames",
        description="Draw the demo figure for your own video: FRAMES are the frames the tokens "
                    "came from (a folder of images in name order, a multi-frame .gif/.tif, or a "
                    ".npy/.npz array [F, H, W, 3]); TOKENS is a .pt/.npz/.safetensors file with "
                    "'tokens' [F, N, D] and 'cls_attn' [F, N], the N tokens of a frame in raster "
                    "order over its grid (rows x cols = N).")
    p.add_argument("frames", help="folder of images, .gif/.tif, or .npy/.npz [F, H, W, 3]")
    p.add_argument("tokens", help="token file (.pt, .npz or .safetensors)")
    p.add_argument("--out", default="flashvid-viz.png", help="PNG to write")
    p.add_argument("--grid", help="token grid ROWSxCOLS (default: inferred from N and the "
                                  "frames' aspect ratio)")
    p.add_argument("--title", default="", help="figure title (default: the token file name)")
    _add_common(p)
    p.set_defaults(run=_run_viz)


def _run_viz(args: argparse.Namespace) -> int:
    with _torch_threads(args.threads):
        return _viz(args)


def _viz(args: argparse.Namespace) -> int:
    from ..io import load_video
    from .frames import load_frames, match_grid, parse_grid

    problem = _missing_extra()
    if problem:
        print(f"flashvid viz: error: {problem}", file=sys.stderr)
        return 2
    frames = load_frames(args.frames)
    tokens, cls_attn = load_video(args.tokens)
    if tokens.dim() != 3:
        raise ValueError(f"{args.tokens}: tokens must have shape [frames, tokens_per_frame, dim],"
                         f" got {tuple(tokens.shape)}")
    if frames.shape[0] != tokens.shape[0]:
        raise ValueError(
            f"{args.frames} holds {frames.shape[0]} frames but {args.tokens} has tokens for "
            f"{tokens.shape[0]}; expected one image per token frame (for Qwen-VL, where one "
            "token frame covers 2 video frames, give one image per pair)")
    grid = match_grid(frames.shape, tokens.shape[1], parse_grid(args.grid))
    base = FlashVIDConfig.preset(args.preset, backend=args.backend,
                                 retention_ratio=args.retention)
    title = args.title or (f"{Path(args.tokens).name}: {STRATEGIES[args.strategy].label}, "
                           f"retention {args.retention:g}")
    _compress_and_draw(args.strategy, tokens.float(), cls_attn.float(), base, grid, frames,
                       Path(args.out), f"{args.tokens} over {args.frames} ({grid[0]}x{grid[1]} "
                       "grid)", args.show or "auto", title)
    return 0
