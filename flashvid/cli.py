"""The flashvid command line: compress, demo, viz, bench and eval.

Each subcommand lives in its own module, imported only when that subcommand is parsed (so
``flashvid compress`` never imports matplotlib, PyAV or the benchmark): :data:`COMMANDS` names
the module and the function that registers the subcommand's parser. Imports go one way:
this module -> the command modules -> :mod:`flashvid.clitools`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

# The benchmark's home; it exposes add_bench_command(sub) like the other command modules.
BENCH_MODULE = "benchmarks"

# name -> (one-line help, module, function(sub) that adds the subcommand's parser to ``sub``)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "compress": ("compress one video's tokens and print a summary",
                 "flashvid.cli", "add_compress_command"),
    "demo": ("compress real video clips (or your own video file) and draw what was kept",
             "flashvid.demo.cli", "add_demo_command"),
    "viz": ("draw what was kept over your frames or video file, for your own token file",
            "flashvid.demo.cli", "add_viz_command"),
    "bench": ("time each stage of each backend against the reference and the floor",
              BENCH_MODULE, "add_bench_command"),
    "eval": ("lmms-eval sweep: accuracy vs retention and frames, FlashVID vs vanilla",
             "flashvid.eval.cli", "add_eval_command"),
}

# errors that are the user's input, printed as one line instead of a traceback
USER_ERRORS = (ValueError, TypeError, FileNotFoundError, NotADirectoryError, PermissionError,
               ImportError)


class _LazyParser(argparse.ArgumentParser):
    """A subcommand's parser that imports and fills itself when the subcommand is parsed."""

    def __init__(self, *args, command: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self._command = command
        self._loaded = not command

    def parse_known_args(self, args=None, namespace=None):
        if not self._loaded:
            self._loaded = True
            _, module, function = COMMANDS[self._command]
            try:
                register = getattr(importlib.import_module(module), function)
            except ImportError as err:
                self.exit(2, f"flashvid {self._command}: error: cannot load the command "
                             f"({err}); reinstall flashvid (pip install -e .)\n")
            register(_Into(self))
        return super().parse_known_args(args, namespace)


class _Into:
    """Stands in for the subparsers action while a command module registers its parser: hands
    back the placeholder parser with the module's description and options added."""

    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser

    def add_parser(self, name: str, **kwargs) -> argparse.ArgumentParser:
        for key in ("description", "epilog", "formatter_class", "usage"):
            if key in kwargs:
                setattr(self.parser, key, kwargs[key])
        return self.parser


def build_parser() -> argparse.ArgumentParser:
    """The ``flashvid`` parser; subcommand parsers fill themselves when used."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="flashvid", description="FlashVID: training-free compression of the visual tokens "
        "of video LLMs. Run 'flashvid COMMAND --help' for a command's options.")
    parser.add_argument("--version", action="version", version=f"flashvid {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_LazyParser)
    for name, (text, _, _) in COMMANDS.items():
        sub.add_parser(name, help=text, description=text, command=name)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except USER_ERRORS as err:
        print(f"flashvid {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"flashvid {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of our output went away (e.g. `| head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


# --------------------------------------------------------------------------- compress
def add_compress_command(sub) -> None:
    """Register ``compress`` on the ``flashvid`` parser."""
    from .clitools import CONFIG_PRESETS, DTYPES, add_threads_option
    from .config import BACKENDS, SELECTIONS
    from .io import SUFFIXES

    p = sub.add_parser(
        "compress", help=COMMANDS["compress"][0],
        description="Compress a video's visual tokens with FlashVID and print a summary of each "
                    "stage. Without --input, runs on a built-in seeded synthetic clip (drift, "
                    "camera pan, a moving object, scene cuts).")
    p.add_argument("--input", help="token file (.pt, .npz or .safetensors) holding 'tokens' "
                                   "[F, N, D] and 'cls_attn' [F, N]")
    p.add_argument("--output", help=f"write the result ({', '.join(SUFFIXES)})")
    p.add_argument("--preset", choices=CONFIG_PRESETS, default="llava_onevision",
                   help="model configuration preset (default llava_onevision)")
    p.add_argument("--retention", type=float, help="retention_ratio (default: the preset's)")
    p.add_argument("--selection", choices=SELECTIONS)
    p.add_argument("--aggregation", choices=("official", "mean"))
    p.add_argument("--dedupe", action="store_true", help="remove duplicate positions (Q2/Q3)")
    p.add_argument("--backend", choices=BACKENDS, default="auto")
    p.add_argument("--device", default="cpu", help="device to run on (cpu, cuda, cuda:1, ...)")
    p.add_argument("--dtype", choices=tuple(DTYPES), help="cast the input to this dtype")
    p.add_argument("--warmup", type=int, default=0, metavar="N",
                   help="untimed calls before the timed one (default 0: the time includes "
                        "one-time costs such as kernel compilation)")
    add_threads_option(p, None)
    g = p.add_argument_group("built-in clip (without --input)")
    g.add_argument("--frames", type=int, default=32)
    g.add_argument("--tokens", type=int, default=196, help="tokens per frame")
    g.add_argument("--dim", type=int, default=3584)
    g.add_argument("--scene-cuts", type=int, default=2)
    g.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=run_compress)


def run_compress(args: argparse.Namespace) -> int:
    from .clitools import torch_threads

    with torch_threads(args.threads):
        return _compress(args)


def _compress(args: argparse.Namespace) -> int:
    from .clitools import DTYPES, check_device, format_summary, timed
    from .compress import compress
    from .config import FlashVIDConfig
    from .io import check_output_path, load_video, save_tensors
    from .synthetic import synthetic_clip

    # everything that can be checked is checked before the work starts
    if args.warmup < 0:
        raise ValueError(f"--warmup must be >= 0, got {args.warmup}")
    if args.output:
        check_output_path(args.output)
    device = check_device(args.device)
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
    tokens, cls_attn = tokens.to(device), cls_attn.to(device)

    out, elapsed = timed(lambda: compress(tokens, cls_attn, config), device, args.warmup)
    note = (f"one call after {args.warmup} untimed warm-up call(s)" if args.warmup else
            "one call, no warm-up: includes one-time costs; --warmup 1 to exclude them")
    print(format_summary(out, tokens, origin, elapsed, note))
    if args.output:
        save_tensors(args.output, out.as_dict())
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
