"""``flashvid eval``: the command line of the lmms-eval sweep (:mod:`flashvid.eval.sweep`).

Imports nothing heavy: lmms-eval, transformers and matplotlib are imported when the command
runs, so ``flashvid --help`` and the other subcommands never load them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = """\
Evaluate a video LLM with lmms-eval over retention ratios x frame counts x {vanilla, FlashVID}.
The model is one of FlashVID's lmms-eval models (flashvid_llava_hf, flashvid_qwen2_5_vl,
flashvid_qwen3_vl, ...; lmms-eval's own model class with FlashVID applied), loaded once; each
run evaluates one task through lmms-eval's Python API and appends its rows (task, metric,
score, retention, frames, measured visual tokens per sample, prefill time, ...) to
OUT/runs.jsonl and OUT/runs.csv. At the end: OUT/accuracy_vs_retention.png,
OUT/accuracy_vs_frames.png and OUT/summary.md. Needs the eval extra:
pip install 'flashvid[eval]'."""

EPILOG = """\
examples:
  # the paper's LLaVA-OneVision table (32 frames, r = 0.10 ... 0.25, vanilla baseline)
  flashvid eval --model flashvid_llava_hf \\
      --model-args pretrained=llava-hf/llava-onevision-qwen2-7b-ov-hf,device=cuda \\
      --tasks videomme,egoschema,longvideobench_val_v,mvbench --frames 32 \\
      --retention 0.10,0.15,0.20,0.25 --out results/llava_ov
  # the same token budget at more frames: vanilla at 16 frames, FlashVID at 160 frames r=0.10
  flashvid eval --model flashvid_qwen2_5_vl \\
      --model-args pretrained=Qwen/Qwen2.5-VL-7B-Instruct,min_pixels=50176,max_pixels=200704 \\
      --tasks videomme --vanilla-frames 16 --pairs 0.1:160 --out results/qwen25_160
  # a tiny test model: its few decoder layers need a pruning layer of their own (or none)
  flashvid eval --model flashvid_qwen2_5_vl \\
      --model-args pretrained=DIR,device=cpu,device_map=cpu,pruning_layer=2 \\
      --tasks MYTASK --include-path TASKS --frames 4,8 --retention 0.25,0.5 --limit 5
  # redraw the plots of a sweep
  flashvid eval --plot results/llava_ov"""


def add_eval_command(sub) -> None:
    """Register ``eval`` on the ``flashvid`` parser."""
    p = sub.add_parser("eval", help="lmms-eval sweep: accuracy vs retention and frames, "
                                    "FlashVID vs vanilla", description=DESCRIPTION,
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="FlashVID lmms-eval model: flashvid_llava_hf, "
                                   "flashvid_qwen2_5_vl, flashvid_qwen3_vl, flashvid_qwen3_5 (or "
                                   "lmms-eval's names llava_hf, qwen2_5_vl, ...)")
    p.add_argument("--model-args", default="", metavar="ARGS",
                   help="the model's arguments as for lmms-eval's --model_args "
                        "(pretrained=...,device=..., and FlashVID settings that stay fixed: "
                        "preset=, pruning_layer=, llm_retention=, exact_count=, backend=, ...)")
    p.add_argument("--tasks", type=_names, help="comma-separated lmms-eval tasks or groups")
    g = p.add_argument_group("the sweep")
    g.add_argument("--retention", type=_floats, default=None, metavar="R,...",
                   help="retention ratios of the FlashVID runs (default 0.10,0.15,0.20,0.25, "
                        "the paper's)")
    g.add_argument("--frames", type=_ints, default=None, metavar="F,...",
                   help="frames per video; every ratio runs at every frame count (default: the "
                        "model's own default, e.g. 32)")
    g.add_argument("--pairs", type=_pairs, default=None, metavar="R:F,...",
                   help="(ratio, frames) pairs instead of the --retention x --frames grid, e.g. "
                        "0.1:160,0.2:80,0.25:64,0.333:48")
    g.add_argument("--vanilla-frames", type=_ints, default=None, metavar="F,...",
                   help="frame counts of the vanilla runs (default: those of the FlashVID runs)")
    g.add_argument("--no-vanilla", action="store_true", help="skip the vanilla baseline")
    e = p.add_argument_group("lmms-eval")
    e.add_argument("--include-path", metavar="DIR",
                   help="folder of extra task YAMLs (lmms-eval's --include_path)")
    e.add_argument("--limit", type=float, metavar="N",
                   help="at most N samples per task (a fraction < 1: that share); for testing")
    e.add_argument("--batch-size", type=int, default=1, metavar="B")
    e.add_argument("--device", help="lmms-eval's --device (default: the model's own, cuda)")
    e.add_argument("--gen-kwargs", metavar="ARGS", help="lmms-eval's --gen_kwargs")
    e.add_argument("--bootstrap-iters", type=int, default=0, metavar="N",
                   help="bootstrap iterations for standard errors (default 0: no bootstrap; "
                        "lmms-eval's central-limit estimate where it has one)")
    e.add_argument("--force-simple", action="store_true",
                   help="use lmms-eval's simple model class where it also has a chat one")
    e.add_argument("--no-log-samples", action="store_true",
                   help="do not write OUT/samples/RUN.jsonl (every answer and its score)")
    e.add_argument("--verbosity", default="WARNING",
                   choices=("DEBUG", "INFO", "WARNING", "ERROR"), help="lmms-eval's logging")
    e.add_argument("--seed", type=int, default=0, help="lmms-eval's random seeds (default 0)")
    o = p.add_argument_group("output")
    o.add_argument("--out", default="flashvid-eval", metavar="DIR",
                   help="output folder (default flashvid-eval)")
    o.add_argument("--resume", action="store_true",
                   help="continue the sweep in OUT: skip the runs already in runs.jsonl")
    o.add_argument("--overwrite", action="store_true", help="start again, replacing OUT's rows")
    o.add_argument("--plot", metavar="DIR",
                   help="only redraw the plots and summary.md of the sweep in DIR")
    p.set_defaults(run=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    if args.plot:
        from .sweep import replot

        replot(Path(args.plot))
        return 0
    missing = [f"--{n}" for n in ("model", "tasks") if not getattr(args, n)]
    if missing:
        raise ValueError(f"{' and '.join(missing)} required (or --plot DIR to redraw plots)")
    if args.resume and args.overwrite:
        raise ValueError("--resume and --overwrite exclude each other")
    if args.pairs and (args.retention or args.frames):
        raise ValueError("--pairs replaces --retention and --frames; give one or the other")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.limit is not None and args.limit <= 0:
        raise ValueError(f"--limit must be > 0, got {args.limit:g}")
    _require_lmms_eval()
    from .sweep import Options, run_sweep

    retentions = [] if args.pairs else (args.retention or [0.10, 0.15, 0.20, 0.25])
    limit = args.limit
    if limit is not None and limit >= 1:
        limit = int(limit)
    opts = Options(model=args.model, model_args=args.model_args, tasks=args.tasks,
                   out=Path(args.out), retentions=retentions, frames=args.frames,
                   pairs=args.pairs or [], vanilla_frames=args.vanilla_frames,
                   vanilla=not args.no_vanilla, include_path=args.include_path, limit=limit,
                   batch_size=args.batch_size, device=args.device, gen_kwargs=args.gen_kwargs,
                   bootstrap_iters=args.bootstrap_iters, log_samples=not args.no_log_samples,
                   force_simple=args.force_simple, verbosity=args.verbosity, seed=args.seed,
                   resume=args.resume, overwrite=args.overwrite)
    run_sweep(opts, echo=lambda line: print(line, flush=True))
    return 0


def _require_lmms_eval() -> None:
    import importlib.util

    if importlib.util.find_spec("lmms_eval") is None:
        raise ImportError("flashvid eval needs lmms-eval: pip install 'flashvid[eval]' "
                          "(lmms-eval 0.7.3 or a later 0.7 release)")


def _split(text: str, what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}")
    return items


def _names(text: str) -> list[str]:
    return _split(text, "names")


def _floats(text: str) -> list[float]:
    try:
        return [float(t) for t in _split(text, "numbers")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 0.1,0.25, got {text!r}") from None


def _ints(text: str) -> list[int]:
    try:
        return [int(t) for t in _split(text, "integers")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 16,32, got {text!r}") from None


def _pairs(text: str) -> list[tuple[float, int]]:
    out = []
    for item in _split(text, "R:F pairs"):
        ratio, sep, frames = item.partition(":")
        try:
            out.append((float(ratio), int(frames)))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected R:F pairs like 0.1:160,0.2:80, got {item!r}") from None
        if not sep:
            raise argparse.ArgumentTypeError(f"expected R:F pairs like 0.1:160, got {item!r}")
    return out
