"""Stage ``dyseg`` (SPEC §5): dynamic video segmentation by adjacent frame-mean similarity."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..config import FlashVIDConfig
from .util import to_device, unit_rows


@dataclass(frozen=True)
class Segments:
    """The segments of a flat frame list (segments never cross a video boundary).

    Attributes:
        lengths: frames per segment (host), summing to F.
        starts: first frame of each segment (host).
        of_frame: [F] int64 segment id of each frame.
        start: [F] bool, True for the first frame of each segment.
        single: [F] bool, True for the frames of single-frame segments.
    """

    lengths: list[int]
    starts: list[int]
    of_frame: torch.Tensor
    start: torch.Tensor
    single: torch.Tensor

    @property
    def longest(self) -> int:
        return max(self.lengths)


def frame_means(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[F, D] mean token of every frame, accumulated in ``dtype``."""
    return x.mean(dim=1, dtype=dtype)


def transition_similarity(means: torch.Tensor) -> torch.Tensor:
    """[F-1] cosine similarity of adjacent frame means (pairs across videos included; the
    caller ignores them)."""
    g = unit_rows(means)
    return torch.sum(g[:-1] * g[1:], dim=-1)


def segment_lengths(sim: list[float], video_frames: list[int], cfg: FlashVIDConfig) -> list[int]:
    """Segment lengths of every video of a flat frame list from the fetched similarities (host).

    Cuts where sim < threshold. With ``complementary_segments``, a video with fewer than
    ``min_segments`` segments gets the ``missing`` smallest remaining similarities as cuts, taken
    as the published code takes them (existing cuts marked 1.0, ``torch.topk(largest=False)``
    on the CPU, so ties go the same way); should that re-pick an existing cut (repeated frames
    have similarity >= 1.0), the extra cuts are taken among the other frames instead, so
    complementary cuts are always new and no segment is empty.
    """
    if not cfg.segment:
        return list(video_frames)
    host = torch.tensor(sim, dtype=torch.float32)  # the fetched float32 values, exactly
    lengths: list[int] = []
    start = 0
    for frames in video_frames:
        local = host[start : start + frames - 1]
        is_cut = local < cfg.segment_threshold
        cuts = set(is_cut.nonzero().flatten().tolist())
        missing = cfg.min_segments - (len(cuts) + 1)
        if cfg.complementary_segments and missing > 0 and frames > 1:
            marked = torch.where(is_cut, 1.0, local)
            extra = torch.topk(marked, min(missing, frames - 1), largest=False).indices.tolist()
            if cuts & set(extra):
                marked = torch.where(is_cut, math.inf, local)
                count = min(missing, frames - 1 - len(cuts))
                extra = torch.topk(marked, count, largest=False).indices.tolist()
            cuts.update(extra)
        ends = [-1, *sorted(cuts), frames - 1]
        lengths += [b - a for a, b in zip(ends, ends[1:])]
        start += frames
    return lengths


def make_segments(lengths: list[int], device: torch.device) -> Segments:
    """The :class:`Segments` of host-known ``lengths`` (one small host-to-device copy)."""
    starts = [0]
    for length in lengths[:-1]:
        starts.append(starts[-1] + length)
    of_frame, first, single = to_device(
        [[s for s, length in enumerate(lengths) for _ in range(length)],
         [int(i == 0) for length in lengths for i in range(length)],
         [int(length == 1) for length in lengths for _ in range(length)]], device)
    return Segments(lengths, starts, of_frame, first.bool(), single.bool())
