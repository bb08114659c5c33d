"""Reference stage ``dyseg`` (SPEC §5): dynamic video segmentation."""

from __future__ import annotations

import torch

from ..config import FlashVIDConfig
from .util import unit_rows


def dyseg(tokens: torch.Tensor, config: FlashVIDConfig) -> list[int]:
    """Segment lengths of a [F, N, D] video (SPEC §5), in the input dtype.

    Cuts where the cosine similarity of adjacent frame-mean features is < threshold; then, if
    fewer than ``min_segments`` segments result, the smallest remaining similarities become cuts
    as well (ties to the lowest index). A cut is never taken twice, so no segment is empty and a
    video shorter than ``min_segments`` frames gets one segment per frame.
    """
    frames = tokens.shape[0]
    if not config.segment:
        return [frames]
    threshold = config.segment_threshold
    g = unit_rows(tokens.mean(dim=1))  # [F, D] frame means
    sim = torch.sum(g[:-1] * g[1:], dim=-1)  # [F-1] transition similarities
    cuts = set((sim < threshold).nonzero().flatten().tolist())
    missing = config.min_segments - (len(cuts) + 1)
    if config.complementary_segments and missing > 0 and frames > 1:
        candidates = sim.clone()
        candidates[sim < threshold] = 1.0  # the published code's marker for existing cuts
        order = torch.sort(candidates, stable=True).indices.tolist()
        for t in order[: min(missing, frames - 1)]:
            cuts.add(t)
    bounds = [-1, *sorted(cuts), frames - 1]
    return [b - a for a, b in zip(bounds, bounds[1:]) if b - a > 0]
