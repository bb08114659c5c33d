"""Stage ``dyseg`` (§5): dynamic video segmentation by adjacent frame-mean similarity."""

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
        of_frame: [F] int64 segment id of each frame (0, 1, ... in frame order).
        start: [F] bool, True for the first frame of each segment.
        single: [F] bool, True for the frames of single-frame segments.
        slots: the size of per-segment arrays: the number of segments when known on the host,
            else F (exact-count mode: the segments stay on the device).
        longest: the longest segment's frames, or an upper bound of it.
        lengths: frames per segment (host), or None in exact-count mode.
        starts: first frame of each segment (host), or None in exact-count mode.
    """

    of_frame: torch.Tensor
    start: torch.Tensor
    single: torch.Tensor
    slots: int
    longest: int
    lengths: list[int] | None = None
    starts: list[int] | None = None


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
    return Segments(of_frame, first.bool(), single.bool(), len(lengths), max(lengths),
                    list(lengths), starts)


def static_segments(sim: torch.Tensor | None, video_frames: list[int], cfg: FlashVIDConfig,
                    device: torch.device) -> Segments:
    """Exact-count mode: the segments as device tensors, without a host synchronisation.

    Cuts where sim < threshold (``sim`` [F-1], None for one frame); with
    ``complementary_segments`` each video with fewer than ``min_segments`` segments takes its
    missing cuts at the smallest similarities among the frames that are not cuts, equal values
    to the lowest index (a stable sort, where the default mode follows torch.topk's order).
    """
    frames = sum(video_frames)
    frame = torch.arange(frames, device=device)
    # video id and first frame of every frame, from scalar comparisons (no host-to-device copy,
    # so that the whole call can be captured in a CUDA graph)
    video_of = torch.zeros(frames, dtype=torch.long, device=device)
    first = frame == 0
    offset = 0
    for count in video_frames[:-1]:
        offset += count
        video_of += (frame >= offset).long()
        first |= frame == offset
    if cfg.segment and sim is not None:
        boundary = first[1:]  # a transition between two videos is no cut
        cut = (sim < cfg.segment_threshold) & ~boundary
        if cfg.complementary_segments:
            cut = cut | _complementary(sim, cut, boundary, video_of[:-1], video_frames,
                                       cfg.min_segments)
        first = torch.cat([first[:1], first[1:] | cut])
    of_frame = torch.cumsum(first.long(), 0) - 1
    nxt = torch.cat([first[1:], first.new_ones(1)])
    return Segments(of_frame, first, first & nxt, frames, max(video_frames))


def _complementary(sim, cut, boundary, video_of, video_frames, minimum) -> torch.Tensor:
    """[F-1] bool: the new cuts that bring every video to ``minimum`` segments (``video_of``:
    the video of each transition's first frame)."""
    device = sim.device
    cuts = torch.zeros(len(video_frames), dtype=torch.long, device=device)
    cuts.index_add_(0, video_of, cut.long())
    missing = (minimum - 1 - cuts).clamp_min(0)  # [videos]
    # rank the other transitions of each video by similarity (stable: ties to the lowest index)
    key = torch.where(cut | boundary, torch.inf, sim.double())
    order = torch.argsort(key, stable=True)
    order = order[torch.argsort(video_of[order], stable=True)]  # grouped by video
    # transitions before each video's own: its first frame
    before = torch.zeros_like(video_of)
    for v, count in enumerate(video_frames[:-1]):
        before += (video_of > v).long() * count
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=device) - before[order]
    return ~cut & ~boundary & (rank < missing[video_of])
