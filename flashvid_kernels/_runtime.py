"""Interpreter detection and block sizes shared by the launchers."""

from __future__ import annotations

import os

import torch

HALF = (torch.float16, torch.bfloat16)
SUPPORTED = (torch.float16, torch.bfloat16, torch.float32)
MAX_TOKENS = 4096  # largest N per frame: the greedy loop keeps [next_pow2(N)] vectors in registers


def interpreting() -> bool:
    """True under the Triton CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def block_d(dim: int) -> int:
    """Feature-chunk width. The interpreter pays per chunk, so it takes wide chunks."""
    cap = 1024 if interpreting() else 64
    return max(16, min(next_pow2(dim), cap))


def block_tokens(n: int) -> int:
    """Token-tile width of the Gram / similarity tiles (tl.dot needs at least 16)."""
    return max(16, min(next_pow2(n), 64))


def half_dot(x: torch.Tensor) -> bool:
    """Feed raw half-precision tiles to the tensor cores (products exact, fp32 accumulation),
    scaling by the inverse norms afterwards. The interpreter computes bf16 dots wrongly, so it
    upcasts first (then normalising before the dot, like the reference)."""
    return x.dtype in HALF and not interpreting()


def check_input(name: str, x: torch.Tensor) -> torch.Tensor:
    """x [F, N, D] float16/bfloat16/float32 with a unit-stride last dim."""
    if x.dim() != 3:
        raise ValueError(f"{name}: expected x of shape [frames, tokens, dim], got {tuple(x.shape)}")
    if x.dtype not in SUPPORTED:
        raise TypeError(f"{name}: expected float16, bfloat16 or float32 x, got {x.dtype}")
    if x.shape[1] > MAX_TOKENS:
        raise ValueError(f"{name}: at most {MAX_TOKENS} tokens per frame, got {x.shape[1]}")
    if not (x.is_cuda or interpreting()):
        raise RuntimeError(f"{name}: Triton needs CUDA tensors, or TRITON_INTERPRET=1 on the CPU")
    return x if x.stride(-1) == 1 else x.contiguous()
