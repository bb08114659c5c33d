"""Stage ``dyseg`` (§5): dynamic video segmentation by adjacent frame-mean similarity."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .util import unit_rows


@dataclass(frozen=True)
class Segments:
    """The segments of a flat frame list (segments never cross a video boundary).

    Attributes:
        of_frame: [F] int64 segment id of each frame (0, 1, ... in frame order).
        start: [F] bool, True for the first frame of each segment.
        single: [F] bool, True for the frames of single-frame segments.
        slots: the size of per-segment arrays: the number of segments when known on the host,
            else F (static plans: the segments stay on the device).
        longest: the longest segment's frames, or an upper bound of it.
        lengths: frames per segment (host), or None in a static plan.
        starts: first frame of each segment (host), or None in a static plan.
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
    cut rules ignore them)."""
    g = unit_rows(means)
    return torch.sum(g[:-1] * g[1:], dim=-1)


def published_lengths(sim: list[float], video_frames: tuple[int, ...], threshold: float,
                      minimum: int, complementary: bool) -> list[int]:
    """Segment lengths of every video from the fetched similarities (host), with the published
    complementary cuts.

    Cuts where sim < ``threshold``. With ``complementary``, a video with fewer than ``minimum``
    segments gets the missing smallest remaining similarities as cuts, taken as the published
    code takes them (existing cuts marked 1.0, ``torch.topk(largest=False)`` on the CPU, so
    ties go the same way); should that re-pick an existing cut (repeated frames have similarity
    >= 1.0), the extra cuts are taken among the other frames instead, so complementary cuts are
    always new and no segment is empty.
    """
    host = torch.tensor(sim, dtype=torch.float32)  # the fetched float32 values, exactly
    lengths: list[int] = []
    start = 0
    for frames in video_frames:
        local = host[start : start + frames - 1]
        is_cut = local < threshold
        cuts = set(is_cut.nonzero().flatten().tolist())
        missing = minimum - (len(cuts) + 1)
        if complementary and missing > 0 and frames > 1:
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


def stable_starts(sim: torch.Tensor | None, video_frames: tuple[int, ...], threshold: float,
                  minimum: int, complementary: bool, device: torch.device) -> torch.Tensor:
    """[F] bool first frame of every segment, on the device (exact-count mode's rule).

    Cuts where sim < ``threshold`` (``sim`` [F-1]; None: no segmentation); with ``complementary``
    each video with fewer than ``minimum`` segments takes its missing cuts at the smallest
    similarities among the frames that are not cuts, equal values to the lowest index (a stable
    sort). Built from scalar comparisons, with no host synchronisation and no host-to-device
    copy, so that a call can be captured in a CUDA graph.
    """
    frames = sum(video_frames)
    frame = torch.arange(frames, device=device)
    video_of = torch.zeros(frames, dtype=torch.long, device=device)
    first = frame == 0
    offset = 0
    for count in video_frames[:-1]:
        offset += count
        video_of += (frame >= offset).long()
        first |= frame == offset
    if sim is not None:
        boundary = first[1:]  # a transition between two videos is no cut
        cut = (sim < threshold) & ~boundary
        if complementary:
            cut = cut | _complementary(sim, cut, boundary, video_of[:-1], video_frames, minimum)
        first = torch.cat([first[:1], first[1:] | cut])
    return first


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
    before = torch.zeros_like(video_of)  # transitions before each video's own
    for v, count in enumerate(video_frames[:-1]):
        before += (video_of > v).long() * count
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=device) - before[order]
    return ~cut & ~boundary & (rank < missing[video_of])


def segments(start: torch.Tensor, lengths: list[int] | None, longest: int) -> Segments:
    """The :class:`Segments` of the first-frame mask ``start`` [F] bool; ``lengths``: the same
    segments' lengths when known on the host (None in a static plan, then ``longest`` bounds
    them)."""
    of_frame = torch.cumsum(start.long(), 0) - 1
    nxt = torch.cat([start[1:], start.new_ones(1)])
    if lengths is None:
        return Segments(of_frame, start, start & nxt, start.numel(), longest)
    starts = [0]
    for length in lengths[:-1]:
        starts.append(starts[-1] + length)
    return Segments(of_frame, start, start & nxt, len(lengths), max(lengths), list(lengths),
                    starts)


def starts_of(lengths: list[int], device: torch.device) -> torch.Tensor:
    """[F] bool first-frame mask of host-known segment ``lengths`` (one host-to-device copy)."""
    mask = [False] * sum(lengths)
    first = 0
    for length in lengths:
        mask[first] = True
        first += length
    host = torch.tensor(mask, dtype=torch.bool)
    if torch.device(device).type == "cuda":
        host = host.pin_memory()
    return host.to(device, non_blocking=True)


def from_lengths(lengths: list[int], device: torch.device) -> Segments:
    """The :class:`Segments` of host-known segment ``lengths``."""
    return segments(starts_of(lengths, device), list(lengths), max(lengths))
