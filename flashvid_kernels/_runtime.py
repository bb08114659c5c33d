"""What the launchers share: named constants, block sizes, input checks, the device guard and
the one place where kernels are launched (which the compile report can record instead), with
the two test hooks: ``program_order`` (run every launch with its program ids permuted) and
``gpu_plan`` (the interpreter takes the GPU's block sizes and half-precision dot path)."""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

HALF = (torch.float16, torch.bfloat16)
SUPPORTED = (torch.float16, torch.bfloat16, torch.float32)

MAX_TOKENS = 4096  # largest N per frame: the greedy loop keeps [next_pow2(N)] vectors in registers
MIN_DOT = 16  # smallest tl.dot side the GPU accepts
TILE_TOKENS = 64  # token-tile side of the Gram / similarity tiles
BLOCK_D_GPU = 64  # feature chunk per tl.dot step on the GPU (half inputs: tensor cores)
BLOCK_D_GPU_FP32 = 16  # float32's IEEE dot runs on the FMA units and holds its chunk in registers:
# wider chunks spill (64: 255 registers + 296-400 bytes of stack on sm_80; 16: 168, none)
BLOCK_D_INTERPRETER = 1024  # the interpreter pays per chunk, so it takes wide chunks
STATS_ROWS = 16  # token_stats: rows per program (memory-bound: many programs, wide loads)
STATS_BLOCK_D_GPU = 256  # token_stats: feature chunk (16 x 256 bf16 = 8 KB per step)
# Scratch of one adts_select launch (D' and the column partials of a chunk of frames): frames are
# processed in chunks of as many frames as fit here (at least one), so the scratch never grows
# with F. 32 MiB stays in the L2 of an H100/H200 (50/60 MB), where the greedy loop re-reads its
# rows. A frame that alone needs more gets a scratch of its own size: N = 4096 takes 69 MB.
SCRATCH_BYTES = 32 << 20
# adts_select warps: the frame's last program keeps a few [next_pow2(N)] vectors in registers
# through the greedy loop; at N > 2048 four warps spill (255 registers + 176 bytes of stack)
ADTS_WARPS, ADTS_WARPS_LARGE, ADTS_LARGE_NP = 4, 8, 4096
MAX_GRID_Y = 65535  # CUDA limit of grid dimensions 1 and 2
FLOAT32_TINY = torch.finfo(torch.float32).tiny  # smallest normal float32: the norm clamp
FLOAT32_BYTES = 4


# Test hooks, read at every launch (environment variables, or the context managers below)
ORDER_ENV = "FLASHVID_KERNELS_PROGRAM_ORDER"  # "reversed", "seed:N" or "module:function"
GPU_PLAN_ENV = "FLASHVID_KERNELS_GPU_PLAN"  # "1": the interpreter plans launches as the GPU


def interpreting() -> bool:
    """True under the Triton CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


_GPU_PLAN: contextvars.ContextVar[bool | None] = contextvars.ContextVar(
    "flashvid_kernels_gpu_plan", default=None)


@contextlib.contextmanager
def gpu_plan(enabled: bool = True):
    """Test hook: inside, the launchers plan every launch as on a GPU even under the interpreter:
    the GPU's feature chunks (``BLOCK_D_GPU``, ``BLOCK_D_GPU_FP32``, ``STATS_BLOCK_D_GPU``) and,
    for float16/bfloat16 input, the raw half-precision dot (HALF_DOT) with the products formed
    exactly and summed in fp32, as the tensor cores do (``EMULATE_TC``: the interpreter cannot
    dot raw bfloat16). Also ``FLASHVID_KERNELS_GPU_PLAN=1``. No effect on a GPU."""
    token = _GPU_PLAN.set(enabled)
    try:
        yield
    finally:
        _GPU_PLAN.reset(token)


def planning_as_gpu() -> bool:
    """True on a GPU, and under the interpreter inside ``gpu_plan`` (or with
    FLASHVID_KERNELS_GPU_PLAN=1)."""
    if not interpreting():
        return True
    hook = _GPU_PLAN.get()
    if hook is not None:
        return hook
    return os.environ.get(GPU_PLAN_ENV, "0") not in ("", "0")


def next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def block_d(dim: int, dtype: torch.dtype | None = None, *, gpu_cap: int | None = None) -> int:
    """Feature-chunk width of the loops over D (``dtype``: the input of a tl.dot, if any)."""
    if not planning_as_gpu():
        cap = BLOCK_D_INTERPRETER
    elif gpu_cap is not None:
        cap = gpu_cap
    else:
        cap = BLOCK_D_GPU_FP32 if dtype == torch.float32 else BLOCK_D_GPU
    return max(MIN_DOT, min(next_pow2(dim), cap))


def block_tokens(n: int) -> int:
    """Token-tile side of the Gram / similarity tiles (tl.dot needs at least MIN_DOT)."""
    return max(MIN_DOT, min(next_pow2(n), TILE_TOKENS))


def half_dot(x: torch.Tensor) -> bool:
    """Feed raw half-precision tiles to the tensor cores (products exact, fp32 accumulation),
    scaling by the inverse norms afterwards. The interpreter normalises in fp32 before the dot,
    like the reference, unless ``gpu_plan`` asks for the GPU's path (then emulated exactly)."""
    return x.dtype in HALF and planning_as_gpu()


def check_input(name: str, x: torch.Tensor) -> torch.Tensor:
    """x [F, N, D] float16/bfloat16/float32 with a unit-stride last dim."""
    if x.dim() != 3:
        raise ValueError(f"{name}: expected x of shape [frames, tokens, dim], got {tuple(x.shape)}")
    if x.dtype not in SUPPORTED:
        raise TypeError(f"{name}: expected float16, bfloat16 or float32 x, got {x.dtype}")
    if x.shape[1] > MAX_TOKENS:
        raise ValueError(f"{name}: at most {MAX_TOKENS} tokens per frame, got {x.shape[1]}")
    rec = _RECORDER.get()
    if not (x.is_cuda or interpreting() or (rec is not None and rec[1])):
        raise RuntimeError(f"{name}: Triton needs CUDA tensors, or TRITON_INTERPRET=1 on the CPU "
                           f"(got a tensor on {x.device})")
    return x if x.stride(-1) == 1 else x.contiguous()


def check_rows(name: str, what: str, t: torch.Tensor | None, frames: int, n: int) -> None:
    """A per-token [F, N] input on the device of x."""
    if t is not None and tuple(t.shape) != (frames, n):
        raise ValueError(f"{name}: {what} must be [{frames}, {n}], got {tuple(t.shape)}")


def device_guard(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """Launch on x's GPU (a tensor on cuda:1 launches on cuda:1, whatever the current device)."""
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


@dataclass(frozen=True)
class Launch:
    """One kernel launch as the launcher made it: kernel, grid, arguments, constexprs/options."""

    kernel: Any
    grid: tuple[int, ...]
    args: tuple
    meta: dict


_RECORDER: contextvars.ContextVar[tuple[list[Launch], bool] | None] = contextvars.ContextVar(
    "flashvid_kernels_recorder", default=None)


@contextlib.contextmanager
def recording(dry_run: bool = False):
    """Collect the launches made inside (a list of ``Launch``). With ``dry_run`` nothing runs and
    the launchers accept tensors on any device, "meta" included, so the specialisations of any
    shape can be listed without memory or a GPU (see ``flashvid_kernels.report``)."""
    launches: list[Launch] = []
    token = _RECORDER.set((launches, dry_run))
    try:
        yield launches
    finally:
        _RECORDER.reset(token)


Order = str | Callable[[tuple[int, ...]], Sequence[int]]
_ORDER: contextvars.ContextVar[Order | None] = contextvars.ContextVar(
    "flashvid_kernels_program_order", default=None)


@contextlib.contextmanager
def program_order(order: Order | None):
    """Test hook: inside, every launch runs with its program ids permuted. Program ``L`` (linear
    index ``program_id(0) + program_id(1) * num_programs(0)``) does the work of program
    ``perm[L]``, so programs start and finish in another order: under the interpreter, which
    runs programs one after another, the frame's last ticket then falls to another tile pair.
    ``order``: "reversed"; "seed:N" (``torch.randperm`` of the grid's size seeded with N);
    "module:function", or a callable, taking the grid and returning a permutation of
    ``range(prod(grid))``; None or "grid" for the normal order. Outside it, the environment
    variable FLASHVID_KERNELS_PROGRAM_ORDER gives the order (same values)."""
    token = _ORDER.set(order)
    try:
        yield
    finally:
        _ORDER.reset(token)


def permutation(order: Order, grid: tuple[int, ...]) -> list[int] | None:
    """The program permutation of ``order`` for ``grid`` (None for the normal order)."""
    size = math.prod(grid)
    if isinstance(order, str):
        text = order.strip()
        if text in ("", "grid"):
            return None
        if text == "reversed":
            return list(range(size - 1, -1, -1))
        if text.startswith("seed:"):
            try:
                seed = int(text[5:])
            except ValueError:
                raise ValueError(f"program order {order!r}: expected seed:<integer>") from None
            return torch.randperm(size, generator=torch.Generator().manual_seed(seed)).tolist()
        module, sep, name = text.partition(":")
        if not sep:
            raise ValueError(f"program order {order!r}: expected 'reversed', 'seed:N' or "
                             "'module:function'")
        order = getattr(importlib.import_module(module), name)
    perm = [int(p) for p in order(tuple(grid))]
    if sorted(perm) != list(range(size)):
        raise ValueError(f"program order: expected a permutation of range({size}) for grid "
                         f"{tuple(grid)}, got {len(perm)} values that are not one")
    return perm


def _program_ids(grid: tuple[int, ...], like: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """(pid_ptr, REMAP) for a launch: the permutation as int32 on ``like``'s device, or ``like``
    itself (never read) for the normal order."""
    order = _ORDER.get()
    if order is None:
        order = os.environ.get(ORDER_ENV, "")
    perm = permutation(order, grid) if (order or callable(order)) else None
    if perm is None or like.device.type == "meta":
        return like, False
    return torch.tensor(perm, dtype=torch.int32).to(like.device), True


def launch(kernel, grid: tuple[int, ...], *args, **meta) -> None:
    """kernel[grid](*args, pid_ptr, REMAP=..., **meta), unless a dry-run recording is active.
    ``args[0]`` is a tensor on the launch's device; ``pid_ptr`` and ``REMAP`` come from the
    program order (``program_order``), normally ``args[0]`` (unused) and False."""
    pid_ptr, remap = _program_ids(tuple(grid), args[0])
    args = (*args, pid_ptr)
    meta = {**meta, "REMAP": remap}
    rec = _RECORDER.get()
    if rec is not None:
        rec[0].append(Launch(kernel, tuple(grid), args, dict(meta)))
        if rec[1]:
            return
    kernel[grid](*args, **meta)
