"""Pieces shared by the ``flashvid`` subcommands: options, thread and device set-up, the summary.

The command modules (:mod:`flashvid.cli`, :mod:`flashvid.demo.cli`) import this module; it
imports neither of them, so the command line has no import cycle.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable, Iterator

import torch

from .config import DTYPES  # noqa: F401  (re-exported for the command modules)
from .config import PRESETS as CONFIG_PRESETS  # noqa: F401


def add_threads_option(p: argparse.ArgumentParser, default: int | None) -> None:
    """``--threads N``: torch CPU threads while the command runs."""
    if default is None:
        text = "torch CPU threads while it runs (default: torch's own choice, " \
               f"{torch.get_num_threads()} here); on a busy machine 1 is often fastest"
    else:
        text = f"torch CPU threads while it runs (default {default}: the tensors are small, so " \
               "more threads do not help, and they stall when the CPU is shared)"
    p.add_argument("--threads", type=int, default=default, metavar="N", help=text)


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run with ``count`` torch CPU threads (None: leave the setting alone), then restore it."""
    if count is None:
        yield
        return
    if count < 1:
        raise ValueError(f"--threads must be >= 1, got {count}")
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def check_device(name: str) -> torch.device:
    """The torch device called ``name``; ValueError saying why it cannot be used otherwise."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"--device {name!r} is not a device name ({err}); expected cpu, cuda or "
                         "cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this PyTorch build has no CUDA support" if torch.version.cuda is None
                   else "no CUDA GPU is visible")
            raise ValueError(f"--device {name}: CUDA is not available ({why}, torch "
                             f"{torch.__version__}); expected --device cpu here")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"--device {name}: there are {count} CUDA device(s); expected an "
                             f"index below {count}")
        return device
    try:
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError) as err:
        raise ValueError(f"--device {name} cannot be used here ({err}); expected cpu or an "
                         "available accelerator") from None
    return device


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); a no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, warmup: int = 0):
    """(result, seconds) of one call of ``fn`` after ``warmup`` untimed calls, synchronised."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return result, time.perf_counter() - start


def format_summary(out, tokens: torch.Tensor, origin: str, elapsed: float,
                   timing: str = "") -> str:
    """A readable multi-line summary of one compression ``out`` of ``tokens`` [F, N, D].

    ``origin`` says where the tokens came from, ``elapsed`` is the measured seconds and
    ``timing`` a note on what was timed (appended to the time line).
    """
    from .compress import resolve_backend

    frames, n, dim = tokens.shape
    c = out.counts()
    b = out.budget
    lengths = out.segment_lengths.tolist()
    cfg = out.config
    non_adts = c["input"] - c["adts"]
    threads = f", {torch.get_num_threads()} CPU thread(s)" if tokens.device.type == "cpu" else ""
    lines = [
        f"input      {origin}",
        f"           {frames} frames x {n} tokens x {dim} dims, {str(tokens.dtype)[6:]}, "
        f"{tokens.device}",
        f"config     retention {cfg.retention_ratio:g} (x{cfg.expansion:g} on the vision side), "
        f"selection {cfg.selection}, aggregation {cfg.aggregation}, dedupe {cfg.dedupe}, "
        f"backend {resolve_backend(cfg.backend, tokens)}{threads}",
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
        f"time       {1e3 * elapsed:.2f} ms" + (f" ({timing})" if timing else ""),
    ]
    return "\n".join(lines)
