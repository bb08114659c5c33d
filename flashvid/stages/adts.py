"""Stage ``adts`` (§6): attention- and diversity-based token selection in every frame."""

from __future__ import annotations

import math

import torch

from ..backends import Backend, FrameStats
from ..workspace import Workspace
from .dyseg import Segments
from .util import count_into


def event_mean(means: torch.Tensor, seg: Segments) -> torch.Tensor:
    """[F, D] mean token mu_S of each frame's segment: the sum of its frame means (``means``
    [F, D], added frame after frame) divided by its length."""
    sums = torch.zeros(seg.slots, means.shape[1], dtype=means.dtype, device=means.device)
    sums.index_add_(0, seg.of_frame, means)  # sequential on the CPU: the reference's order
    counts = count_into(seg.of_frame, seg.slots, means.dtype).clamp_min(1.0)
    return (sums / counts[:, None])[seg.of_frame]


def adts(x: torch.Tensor, cls_attn: torch.Tensor, stats: FrameStats | None, selection: str, k: int,
         dedupe: bool, backend: Backend, ws: Workspace) -> torch.Tensor:
    """[F, k] int64 local indices kept in each frame, sorted (repeats possible with
    ``selection="adts"`` and ``dedupe=False``, quirk Q2).

    ``attention``: the k most important tokens, as ``torch.topk`` orders ties (published).
    Otherwise the greedy max-min selection on the
    calibrated distance D'(i, j) = ((1 - cos(x_i, x_j)) * w_j) * e_j with w = 1e6 * cls_attn for
    ``adts``/``adts_v1`` and e = ``stats.event`` for ``adts`` (the backend computes it).
    ``adts_v1`` and ``diversity`` score picked tokens -1 (as published); ``dedupe`` forbids
    repeats for every method.
    """
    frames = x.shape[0]
    if k == 0:
        return torch.zeros(frames, 0, dtype=torch.long, device=x.device)
    if selection == "attention":
        return torch.topk(cls_attn, k, dim=-1).indices.sort(dim=-1).values
    weights = cls_attn.to(stats.norms.dtype) * 1e6 if selection in ("adts", "adts_v1") else None
    exclude = dedupe or selection in ("adts_v1", "diversity")
    fill = -math.inf if dedupe else -1.0
    return backend.adts_select(x, stats, weights, k, exclude, fill, ws)
