"""Helpers shared by the reference stages."""

from __future__ import annotations

import torch


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half inputs; float32 and float64 stay as they are."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """x / ||x||_2 along the last dim (a zero row stays zero instead of becoming NaN)."""
    return x / x.norm(p=2, dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)


def spans(lengths: list[int]) -> list[tuple[int, int]]:
    """(first frame, end frame) of each segment."""
    out, start = [], 0
    for length in lengths:
        out.append((start, start + length))
        start += length
    return out
