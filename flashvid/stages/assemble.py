"""Stage ``assemble`` (§9): the output rows, each token's representative row, the TSTM
parents, and the split of a flat frame list into one result per video.

Rows are ADTS tokens (copied bit for bit), then the merged rows the spatial merge decided (tree
roots kept as they are and DPC-kNN clusters, each the mean of its members' tree values), sorted
by the flat position of their representative; where a position occurs twice (quirks Q2/Q3) the
ADTS row comes first. Nothing here synchronises with the device: the rows of each video are
known on the host (from the plan, or from the spatial merge's host-sized decisions).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..plan import Plan
from ..types import KIND_ADTS, CompressedVideo
from ..workspace import Workspace
from .dpc import Clusters
from .dyseg import Segments
from .trees import Trees
from .util import count_into


@dataclass(frozen=True)
class Assembled:
    """Attributes:
        videos: one :class:`CompressedVideo` per video.
        rows: [sum V, D] every video's rows, video after video (the videos' ``tokens`` are views
            of it).
        overflow: for float16 input with ``aggregation="official"``, a 0-dim bool tensor: some
            merged row overflowed float16 (the pipeline raises); else None.
        merged_peak: the largest magnitude of a merged row before the cast (with ``overflow``).
    """

    videos: list[CompressedVideo]
    rows: torch.Tensor
    overflow: torch.Tensor | None = None
    merged_peak: torch.Tensor | None = None


def assemble(x: torch.Tensor, picks: torch.Tensor, eligible: torch.Tensor,
             trees: Trees | None, clusters: Clusters | None, seg: Segments, plan: Plan,
             video_rows: list[int], ws: Workspace) -> Assembled:
    """The output rows of the flat frame list x [F, N, D]: ADTS tokens ``picks`` [F, k], and
    (with a merge) the merged rows of ``clusters`` over the trees' targets; ``video_rows``: the
    rows of each video (host). Only ``rows`` is fresh memory; its temporaries are the call's
    workspace."""
    frames, n, dim = x.shape
    device = x.device
    frame = torch.arange(frames, device=device)
    adts_gid = (frame[:, None] * n + picks).reshape(-1)  # [F*k], frame-major, sorted in frames
    flat = x.reshape(-1, dim)
    first_merged = adts_gid.numel()
    gids, kinds = [adts_gid], [torch.full_like(adts_gid, KIND_ADTS)]
    merged = None
    # each token's pre-sort row: an ADTS token's first ADTS row (quirk Q2 repeats a pick),
    # otherwise the merged row of its tree's root
    row_of = torch.full((frames * n,), first_merged, dtype=torch.long, device=device)
    row_of.scatter_reduce_(0, adts_gid, torch.arange(first_merged, device=device), "amin")
    row_of = torch.where(row_of < first_merged, row_of, -1)
    parents = torch.full((frames * n,), -1, dtype=torch.long, device=device)
    overflow = peak = None
    if trees is not None and clusters is not None:
        merged_rows = clusters.centres.numel()
        slot = torch.where(clusters.row >= 0, clusters.row, merged_rows)  # [C]; last: discard
        sums = ws.empty("merged_sums", (merged_rows + 1, dim), trees.values.dtype,
                        grad=trees.values.requires_grad).zero_()
        sums.index_add_(0, slot, trees.values)
        sizes = count_into(slot, merged_rows + 1, trees.values.dtype)[:merged_rows]
        merged = sums[:merged_rows].div_(sizes.clamp_min(1.0)[:, None])
        gids.append(clusters.centres)
        kinds.append(clusters.kinds)
        position_row = torch.full((frames * n,), -1, dtype=torch.long, device=device)
        position_row[trees.targets] = clusters.row
        # a non-ADTS token goes where its tree root went; an ADTS candidate of a single-frame
        # segment (quirk Q3) stays represented by its ADTS row
        tree_row = torch.where(eligible.reshape(-1), position_row[trees.root], -1)
        row_of = torch.where(row_of >= 0, row_of,
                             torch.where(tree_row >= 0, first_merged + tree_row, -1))
        parents = trees.parent
        if x.dtype == torch.float16 and plan.config.aggregation == "official":
            overflow = torch.isinf(merged.to(x.dtype)).any()
            peak = merged.abs().amax() if merged_rows else merged.new_zeros(())
    all_gid = torch.cat(gids)
    all_kind = torch.cat(kinds)
    order = torch.sort(all_gid * 2 + (all_kind != KIND_ADTS), stable=True).indices
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=device)
    source = torch.where(row_of >= 0, rank[row_of.clamp_min(0)], -1).view(frames, n)
    # every row goes straight to its sorted place: ADTS rows copied bit for bit from the input
    rows = torch.empty(order.numel(), dim, dtype=x.dtype, device=device)
    if x.requires_grad and torch.is_grad_enabled():
        picked = flat.index_select(0, adts_gid)
    else:
        picked = torch.index_select(flat, 0, adts_gid,
                                    out=ws.empty("adts_rows", (first_merged, dim), x.dtype))
    rows.index_copy_(0, rank[:first_merged], picked)
    if merged is not None:
        rows.index_copy_(0, rank[first_merged:], merged.to(x.dtype))
    gid, kind = all_gid[order], all_kind[order].to(torch.int8)
    videos = split((rows, gid, kind), source, parents.view(frames, n), seg.start, plan,
                   video_rows)
    return Assembled(videos, rows, overflow, peak)


def split(rows: tuple[torch.Tensor, torch.Tensor, torch.Tensor], source: torch.Tensor,
          parents: torch.Tensor, starts: torch.Tensor, plan: Plan,
          video_rows: list[int]) -> list[CompressedVideo]:
    """One CompressedVideo per video of a flat frame list whose rows are sorted by position."""
    value, gid, kind = rows
    n = plan.tokens_per_frame
    videos, frame0, row0 = [], 0, 0
    for frames, count in zip(plan.video_frames, video_rows):
        src = source[frame0 : frame0 + frames]
        par = parents[frame0 : frame0 + frames]
        videos.append(CompressedVideo(
            tokens=value[row0 : row0 + count], indices=gid[row0 : row0 + count] - frame0 * n,
            kinds=kind[row0 : row0 + count], source=torch.where(src >= 0, src - row0, -1),
            segment_starts=starts[frame0 : frame0 + frames],
            parents=torch.where(par >= 0, par - frame0 * n, -1), budget=plan.budget,
            config=plan.config))
        frame0 += frames
        row0 += count
    return videos
