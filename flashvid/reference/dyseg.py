"""Reference stage ``dyseg`` (§5): dynamic video segmentation."""

from __future__ import annotations

import math

import torch

from ..config import FlashVIDConfig
from .util import unit_rows, work_dtype


def frame_means(tokens: torch.Tensor) -> torch.Tensor:
    """[F, D] mean token of every frame, accumulated in the work dtype (float32 for half input,
    float64 for float64). Computed once per video; ``adts`` reuses it."""
    return tokens.mean(dim=1, dtype=work_dtype(tokens.dtype))


def dyseg(tokens: torch.Tensor, config: FlashVIDConfig, exact: bool = False) -> list[int]:
    """Segment lengths of a [F, N, D] video (§5).

    Cuts where the cosine similarity s_t of adjacent frame means is < threshold. If that gives
    fewer than ``min_segments`` segments, the published code marks the existing cuts with 1.0
    and takes the ``missing`` smallest values with ``torch.topk(largest=False)``: so do we, on
    the CPU, so that ties go as they go there. Should that re-pick an existing cut (frames that
    repeat have s_t >= 1.0, the marker's value), the extra cuts are taken among the frames that
    are not cuts instead: complementary cuts are always new, and the video gets
    min(``min_segments``, F) segments. ``exact`` (exact-count mode) takes the new cuts at the
    smallest similarities among the frames that are not cuts, equal values to the lowest index.
    """
    frames = tokens.shape[0]
    if not config.segment or frames == 1:
        return [frames]
    threshold = config.segment_threshold
    g = unit_rows(frame_means(tokens))
    sim = torch.sum(g[:-1] * g[1:], dim=-1).cpu()  # [F-1] transition similarities
    cuts = set((sim < threshold).nonzero().flatten().tolist())
    missing = config.min_segments - (len(cuts) + 1)
    if config.complementary_segments and missing > 0 and exact:
        order = [t for t in torch.sort(sim, stable=True).indices.tolist() if t not in cuts]
        cuts.update(order[:missing])
    elif config.complementary_segments and missing > 0:
        marked = torch.where(sim < threshold, 1.0, sim)  # the published marker for existing cuts
        extra = torch.topk(marked, min(missing, frames - 1), largest=False).indices.tolist()
        if cuts & set(extra):  # re-picked: take new cuts only
            marked = torch.where(sim < threshold, math.inf, sim)
            count = min(missing, frames - 1 - len(cuts))
            extra = torch.topk(marked, count, largest=False).indices.tolist()
        cuts.update(extra)
    bounds = [-1, *sorted(cuts), frames - 1]
    return [b - a for a, b in zip(bounds, bounds[1:])]
