"""Stage ``assemble`` (§9): the output rows, each token's representative row, the TSTM
parents, and the split of a flat frame list into one result per video.

Rows are ADTS tokens (copied bit for bit), tree roots kept as-is (frames whose segment is not
spatially merged) and DPC-kNN clusters (the mean of their members' tree values), sorted by the
flat position of their representative; where a position occurs twice (quirks Q2/Q3) the ADTS
row comes first. Every row count is known on the host, so nothing here synchronises.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import Budget, FlashVIDConfig
from ..types import KIND_ADTS, KIND_CLUSTER, KIND_ROOT, CompressedVideo
from .dpc import Clusters, Plan
from .dyseg import Segments
from .trees import Trees
from .util import compact, count_into, to_device


@dataclass(frozen=True)
class Merge:
    """What TSTM, trees and DPC decided (absent when the merge budget is zero)."""

    trees: Trees
    counts: list[int]  # spatial-merge candidates per frame (host)
    plan: Plan
    clusters: Clusters | None


@dataclass(frozen=True)
class Assembled:
    """Attributes:
        videos: one :class:`CompressedVideo` per video.
        overflow: for float16 input with ``aggregation="official"``, a 0-dim bool tensor: some
            merged row overflowed float16 (the caller fetches it and raises); else None.
        merged_peak: the largest magnitude of a merged row before the cast (with ``overflow``).
    """

    videos: list[CompressedVideo]
    overflow: torch.Tensor | None = None
    merged_peak: torch.Tensor | None = None


def assemble(x: torch.Tensor, picks: torch.Tensor, eligible: torch.Tensor, seg: Segments,
             video_frames: list[int], budget: Budget, cfg: FlashVIDConfig,
             merge: Merge | None) -> Assembled:
    """The output rows of the flat frame list x [F, N, D], split per video."""
    frames, n, dim = x.shape
    device = x.device
    gid = torch.arange(frames * n, device=device).view(frames, n)
    adts_gid = gid.gather(1, picks).reshape(-1)  # [F*k], frame-major, sorted within frames
    flat = x.reshape(-1, dim)
    gids, kinds, values = [adts_gid], [torch.full_like(adts_gid, KIND_ADTS)], [flat[adts_gid]]
    rows_per_frame = [budget.adts] * frames
    # each token's pre-sort row: an ADTS token's first ADTS row, otherwise its tree's row
    row_of = torch.full((frames * n,), adts_gid.numel(), dtype=torch.long, device=device)
    row_of.scatter_reduce_(0, adts_gid, torch.arange(adts_gid.numel(), device=device), "amin")
    row_of = torch.where(row_of < adts_gid.numel(), row_of, -1)
    parents = torch.full((frames * n,), -1, dtype=torch.long, device=device)
    overflow = peak = None
    if merge is not None:
        tree_rows, merged_rows = _merged_rows(merge, eligible, adts_gid.numel(), gids, kinds,
                                              values)
        if x.dtype == torch.float16 and cfg.aggregation == "official" and len(values) > 1:
            merged = torch.cat(values[1:])
            overflow = torch.isinf(merged.to(x.dtype)).any()
            peak = merged.abs().amax() if merged.numel() else merged.new_zeros(())
        row_of = torch.where(row_of >= 0, row_of, tree_rows)
        parents = merge.trees.parent
        rows_per_frame = [r + m for r, m in zip(rows_per_frame, merged_rows)]

    all_gid = torch.cat(gids)
    all_kind = torch.cat(kinds)
    all_value = torch.cat([v.to(x.dtype) for v in values])
    order = torch.sort(all_gid * 2 + (all_kind != KIND_ADTS), stable=True).indices
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=device)
    source = torch.where(row_of >= 0, rank[row_of.clamp_min(0)], -1).view(frames, n)
    rows = (all_value[order], all_gid[order], all_kind[order].to(torch.int8))
    videos = _split(rows, source, parents.view(frames, n), seg.start, video_frames,
                    rows_per_frame, n, budget, cfg)
    return Assembled(videos, overflow, peak)


def _merged_rows(merge: Merge, eligible: torch.Tensor, first_row: int, gids: list, kinds: list,
                 values: list) -> tuple[torch.Tensor, list[int]]:
    """Append the kept-root and cluster rows (values in the work dtype); return each token's
    tree row ([F*N], -1 for ADTS tokens) and the merged rows of each frame (host)."""
    trees, counts, plan = merge.trees, merge.counts, merge.plan
    device = trees.values.device
    total, kept_total = sum(counts), sum(c for c, k in zip(counts, plan.keep) if k)
    # rows kept as-is (kind 1): every candidate of a frame that is not clustered
    keep_frame, count_t = to_device([plan.keep, counts], device)
    kept = compact(keep_frame.bool().repeat_interleave(count_t, output_size=total), kept_total)
    row_of_target = torch.full((total,), -1, dtype=torch.long, device=device)
    row_of_target[kept] = first_row + torch.arange(kept_total, device=device)
    gids.append(trees.targets[kept])
    kinds.append(torch.full_like(kept, KIND_ROOT))
    values.append(trees.values[kept])
    if merge.clusters is not None:
        assign, centres = merge.clusters.assign, merge.clusters.centres
        num = centres.numel()
        slot = torch.where(assign >= 0, assign, num)  # row `num` discards the kept candidates
        sums = torch.zeros(num + 1, trees.values.shape[1], dtype=trees.values.dtype,
                           device=device)
        sums.index_add_(0, slot, trees.values)
        sizes = count_into(slot, num + 1, trees.values.dtype)[:num]
        row_of_target = torch.where(assign >= 0, first_row + kept_total + assign, row_of_target)
        gids.append(trees.targets[centres])
        kinds.append(torch.full_like(centres, KIND_CLUSTER))
        values.append(sums[:num] / sizes[:, None])
    # every non-ADTS token goes where its tree root went (an ADTS candidate of a single-frame
    # segment, quirk Q3, stays represented by its ADTS row)
    size = eligible.numel()
    flat_eligible = eligible.reshape(-1)
    tree_row = torch.full((size,), -1, dtype=torch.long, device=device)
    tree_row[trees.targets] = torch.where(flat_eligible[trees.targets], row_of_target, -1)
    members = flat_eligible & (trees.root != torch.arange(size, device=device))
    tree_row = torch.where(members, tree_row[trees.root], tree_row)
    merged_rows = [c if k else cl for c, k, cl in zip(counts, plan.keep, plan.clusters)]
    return tree_row, merged_rows


def split(rows, source, parents, starts, video_frames, video_rows, n, budget,
          cfg) -> list[CompressedVideo]:
    """One CompressedVideo per video of a flat frame list whose rows are sorted by position;
    ``video_rows``: the rows of each video (host)."""
    value, gid, kind = rows
    videos, frame0, row0 = [], 0, 0
    for frames, count in zip(video_frames, video_rows):
        src = source[frame0 : frame0 + frames]
        par = parents[frame0 : frame0 + frames]
        videos.append(CompressedVideo(
            tokens=value[row0 : row0 + count], indices=gid[row0 : row0 + count] - frame0 * n,
            kinds=kind[row0 : row0 + count], source=torch.where(src >= 0, src - row0, -1),
            segment_starts=starts[frame0 : frame0 + frames],
            parents=torch.where(par >= 0, par - frame0 * n, -1), budget=budget, config=cfg))
        frame0 += frames
        row0 += count
    return videos


def _split(rows, source, parents, starts, video_frames, rows_per_frame, n, budget,
           cfg) -> list[CompressedVideo]:
    video_rows, frame0 = [], 0
    for frames in video_frames:
        video_rows.append(sum(rows_per_frame[frame0 : frame0 + frames]))
        frame0 += frames
    return split(rows, source, parents, starts, video_frames, video_rows, n, budget, cfg)


# --------------------------------------------------------------------------- exact-count mode
def assemble_exact(x: torch.Tensor, picks: torch.Tensor, trees: Trees | None,
                   row: torch.Tensor | None, centres: torch.Tensor | None,
                   keep: torch.Tensor | None, seg: Segments, video_frames: list[int],
                   video_rows: list[int], budget: Budget,
                   cfg: FlashVIDConfig) -> tuple[Assembled, torch.Tensor]:
    """Exact-count mode: the rows (ADTS tokens, then one per cluster: ``row`` [F*N] the cluster
    of every candidate, ``centres`` [M] their positions, ``keep`` [F] frames whose candidates
    are kept as they are) sorted by position, with no data-dependent size. Returns the per-video
    results and the flat [sum K, D] rows they are views of."""
    frames, n, dim = x.shape
    device = x.device
    frame = torch.arange(frames, device=device)
    adts_gid = (frame[:, None] * n + picks).reshape(-1)  # [F*k], no repeats in exact mode
    flat = x.reshape(-1, dim)
    gids, kinds, values = [adts_gid], [torch.full_like(adts_gid, KIND_ADTS)], [flat[adts_gid]]
    row_of = torch.full((frames * n,), -1, dtype=torch.long, device=device)
    row_of[adts_gid] = torch.arange(adts_gid.numel(), device=device)
    parents = torch.full((frames * n,), -1, dtype=torch.long, device=device)
    overflow = peak = None
    if trees is not None:
        num = centres.numel()
        slot = torch.where(row >= 0, row, num)
        sums = torch.zeros(num + 1, dim, dtype=trees.values.dtype, device=device)
        sums.index_add_(0, slot, trees.values)
        sizes = count_into(slot, num + 1, trees.values.dtype)[:num].clamp_min(1.0)
        merged = sums[:num] / sizes[:, None]
        gids.append(centres)
        kinds.append(torch.where(keep[centres // n], KIND_ROOT, KIND_CLUSTER))
        values.append(merged)
        tree_row = row[trees.root]  # every token goes where its tree root went
        row_of = torch.where(row_of >= 0, row_of, torch.where(tree_row >= 0,
                                                              adts_gid.numel() + tree_row, -1))
        parents = trees.parent
        if x.dtype == torch.float16 and cfg.aggregation == "official":
            overflow = torch.isinf(merged.to(x.dtype)).any()
            peak = merged.abs().amax() if num else merged.new_zeros(())
    all_gid = torch.cat(gids)
    order = torch.argsort(all_gid, stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=device)
    source = torch.where(row_of >= 0, rank[row_of.clamp_min(0)], -1).view(frames, n)
    value = torch.cat([v.to(x.dtype) for v in values])[order]
    rows = (value, all_gid[order], torch.cat(kinds)[order].to(torch.int8))
    videos = split(rows, source, parents.view(frames, n), seg.start, video_frames, video_rows,
                   n, budget, cfg)
    return Assembled(videos, overflow, peak), value
