"""Stage ``adts`` (§6): attention- and diversity-based token selection in every frame."""

from __future__ import annotations

import math

import torch

from ..backends import Backend, FrameStats
from ..config import FlashVIDConfig
from .dyseg import Segments
from .util import count_into


def needs_gram(cfg: FlashVIDConfig, k: int) -> bool:
    """The selection runs the greedy max-min loop on the frame's Gram."""
    return k > 0 and cfg.selection != "attention"


def event_mean(means: torch.Tensor, seg: Segments) -> torch.Tensor:
    """[F, D] mean token mu_S of each frame's segment: the sum of its frame means (``means``
    [F, D], added frame after frame) divided by its length."""
    sums = torch.zeros(seg.slots, means.shape[1], dtype=means.dtype, device=means.device)
    sums.index_add_(0, seg.of_frame, means)  # sequential on the CPU: the reference's order
    counts = count_into(seg.of_frame, seg.slots, means.dtype).clamp_min(1.0)
    return (sums / counts[:, None])[seg.of_frame]


def adts(x: torch.Tensor, a: torch.Tensor, stats: FrameStats, cfg: FlashVIDConfig, k: int,
         backend: Backend) -> torch.Tensor:
    """[F, k] int64 local indices kept in each frame, sorted (repeats possible with
    ``selection="adts"`` and ``dedupe=False``, quirk Q2).

    ``attention``: the k most important tokens, as ``torch.topk`` orders ties (published).
    Otherwise the greedy max-min selection on the
    calibrated distance D'(i, j) = ((1 - cos(x_i, x_j)) * w_j) * e_j with w = 1e6 * a for
    ``adts``/``adts_v1`` and e = ``stats.event`` for ``adts`` (the backend computes it).
    ``adts_v1`` and ``diversity`` score picked tokens -1 (as published); ``dedupe`` forbids
    repeats for every method.
    """
    frames = x.shape[0]
    if k == 0:
        return torch.zeros(frames, 0, dtype=torch.long, device=x.device)
    if cfg.selection == "attention":
        return torch.topk(a, k, dim=-1).indices.sort(dim=-1).values
    weights = a.to(stats.norms.dtype) * 1e6 if cfg.selection in ("adts", "adts_v1") else None
    exclude = cfg.dedupe or cfg.selection in ("adts_v1", "diversity")
    fill = -math.inf if cfg.dedupe else -1.0
    return backend.adts_select(x, stats, weights, k, exclude, fill)
