"""Stage ``tstm`` (§7): tree-based spatiotemporal token merging, the merge decisions.

Each eligible (non-ADTS) token links to its most cosine-similar eligible token of the previous
frame of its segment and merges into it when the similarity exceeds ``temporal_threshold``
(strict). A segment that would then keep fewer than ``length * B`` tokens (ADTS tokens included)
merges only above its soft threshold, the k-th largest similarity with k = length * N - that
bound. Everything here runs on the device without host synchronisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..backends import Backend, Edges, FrameStats, work_dtype
from ..workspace import Workspace
from .dyseg import Segments
from .util import unit_rows


@dataclass(frozen=True)
class Forest:
    """The TSTM decisions of a flat frame list.

    Attributes:
        parent: [F, N] int64 index in frame t-1 a token links to (-1: none).
        merged: [F, N] bool, the token merges into its parent.
    """

    parent: torch.Tensor
    merged: torch.Tensor


def runs(threshold: float, seg: Segments) -> bool:
    """Temporal merging can happen: a threshold below 1 and a segment of two frames or more."""
    return threshold < 1.0 and seg.longest > 1


def tstm(x: torch.Tensor, stats: FrameStats | None, eligible: torch.Tensor, seg: Segments,
         threshold: float, method: str, frame_budgets: torch.Tensor, backend: Backend,
         ws: Workspace) -> Forest:
    """The merge decisions. ``method``: "tstm" (edges from the backend's adjacent-frame
    similarities, ``stats``) or "ttm" (same position only); ``frame_budgets``: [F] int64 budget
    B_t of every frame (a segment keeps at least the sum of its frames')."""
    frames, n, _ = x.shape
    if not runs(threshold, seg):
        return Forest(torch.full((frames, n), -1, dtype=torch.long, device=x.device),
                      torch.zeros(frames, n, dtype=torch.bool, device=x.device))
    if method == "ttm":
        edges = same_position_edges(x, eligible, seg)
    else:
        edges = backend.tstm_edges(x, stats, eligible, seg, ws)
    merged = merge_decisions(edges.maxsim, seg, threshold, frame_budgets)
    return Forest(edges.parent, merged)


def merge_decisions(maxsim: torch.Tensor, seg: Segments, threshold: float,
                    frame_budgets: torch.Tensor) -> torch.Tensor:
    """[F, N] bool: maxsim > threshold, or > the soft threshold in segments that would keep
    fewer tokens than the sum of their frames' budgets (§7)."""
    frames, n = maxsim.shape
    device = maxsim.device
    merged = maxsim > threshold
    kept = torch.zeros(seg.slots, dtype=torch.long, device=device)
    kept.index_add_(0, seg.of_frame, (~merged).sum(dim=1))
    ones = torch.ones(frames, dtype=torch.long, device=device)
    length = torch.zeros(seg.slots, dtype=torch.long, device=device).index_add_(
        0, seg.of_frame, ones)  # [S]
    lower = torch.zeros_like(length).index_add_(0, seg.of_frame, frame_budgets)
    short = kept < lower  # [S]
    # the k-th largest maxsim of each segment, k = length * N - lower (segments are contiguous
    # runs of the flat list, so sorting (segment, -maxsim) ranks each segment's values)
    flat = maxsim.flatten()
    seg_of = seg.of_frame.repeat_interleave(n)
    key = seg_of.to(torch.float64) * 4.0 - flat.to(torch.float64)
    ordered = flat[torch.argsort(key)]
    first = torch.cumsum(length * n, 0) - length * n  # [S] flat offset of each segment
    k = length * n - lower
    soft = ordered[(first + k - 1).clamp(0, flat.numel() - 1)]
    soft = torch.clamp_min(soft, -1.0 + 1e-6)
    soft_merged = flat > soft[seg_of]
    soft_merged &= (k > 0)[seg_of]
    use_soft = short[seg_of]
    return torch.where(use_soft, soft_merged, merged.flatten()).view(frames, n)


def candidates(forest: Forest, eligible: torch.Tensor, seg: Segments,
               dedupe: bool) -> torch.Tensor:
    """[F, N] bool tokens of the spatial merge: the non-ADTS tree roots, plus every token of a
    single-frame segment (quirk Q3) unless ``dedupe``."""
    roots = ~forest.merged & eligible
    return roots if dedupe else roots | seg.single[:, None]


def same_position_edges(x: torch.Tensor, eligible: torch.Tensor, seg: Segments) -> Edges:
    """TTM baseline edges: token n of frame t may only link to token n of frame t-1."""
    frames, n, _ = x.shape
    wd = work_dtype(x.dtype)
    xh = unit_rows(x.to(wd))
    sim = torch.sum(xh[1:] * xh[:-1], dim=-1)  # [F-1, N]
    ok = eligible[1:] & eligible[:-1] & ~seg.start[1:, None]
    maxsim = torch.full((frames, n), -1.0, dtype=wd, device=x.device)
    parent = torch.full((frames, n), -1, dtype=torch.long, device=x.device)
    maxsim[1:] = torch.where(ok, sim, -1.0)
    parent[1:] = torch.where(ok, torch.arange(n, device=x.device), -1)
    return Edges(parent, maxsim)
