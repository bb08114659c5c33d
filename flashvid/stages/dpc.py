"""Stage ``dpc`` (§8): the DPC-kNN spatial merge that enforces the budget, batched over
frames without per-frame Python loops.

Each segment's merge budget is spread over its frames: frame t with c_t candidates gets k_t
clusters (published: ceil(c_t * ratio), ratio = budget / sum(c), when ratio < 1, otherwise
its candidates are kept as they are; exact-count mode: a largest-remainder split that sums to
the budget exactly). The frames to cluster are grouped into a few padded batches of similar
candidate counts when the counts are known on the host, or form one batch padded to the largest
possible count in a static plan. Bit-level agreement with the reference (and the published
code) needs ``torch.cdist``'s arithmetic: above 25 rows it computes
sqrt(clamp(bmm([-2x, |x|^2, 1], [y, 1, |y|^2]^T), 0)), whose results do not depend on how much
padding there is; at most 25 rows it computes each distance directly. The published code calls
it on one frame at a time, so a frame of more than 25 candidates takes that form, built
directly from the gathered rows, and the other frames use ``torch.cdist`` at most 25 rows wide.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..types import KIND_CLUSTER, KIND_ROOT
from ..workspace import Workspace
from .dyseg import Segments
from .util import compact, products, to_device

CDIST_MM_ROWS = 25  # torch.cdist uses its matmul path above this many rows
SQUARE_ROWS = 128  # rows squared at a time for |z|^2 (the squares stay in the cache)


@dataclass(frozen=True)
class Clusters:
    """The merged rows the spatial merge decides (M of them).

    Attributes:
        row: [C] int64 merged row (0..M-1) of each target of the trees (a candidate of a frame
            kept as it is has a row of its own), -1 where the target is not merged into any
            row (no candidate, or a segment without merge budget).
        centres: [M] int64 flat position of each row's representative: the cluster centre, or
            the kept root.
        kinds: [M] int64 ``KIND_CLUSTER`` or ``KIND_ROOT`` (kept as it is).
    """

    row: torch.Tensor
    centres: torch.Tensor
    kinds: torch.Tensor


# --------------------------------------------------------------------------- cluster counts
def published_counts(counts: list[int], seg: Segments, frame_budgets: tuple[int, ...],
                     adts: int, spatial_merge: bool) -> tuple[list[int], list[bool]]:
    """(clusters, keep) per frame on the host (§8): frame t of a segment gets ceil(c_t * ratio)
    clusters, ratio = the segment's merge budget / its candidates (Python floats, as
    published), when ratio < 1; otherwise its candidates are kept as they are."""
    clusters: list[int] = []
    keep: list[bool] = []
    for start, length in zip(seg.starts, seg.lengths):
        c = counts[start : start + length]
        target = sum(frame_budgets[start : start + length]) - adts * length
        ratio = target / sum(c) if sum(c) else math.inf
        cluster = spatial_merge and ratio < 1.0
        clusters += [math.ceil(ct * ratio) if cluster else 0 for ct in c]
        keep += [not cluster] * length
    return clusters, keep


def exact_counts(counts: torch.Tensor, merge: torch.Tensor,
                 seg: Segments) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact-count mode: (clusters [F], keep [F] bool) from the candidates ``counts`` [F] and the
    per-frame merge budgets ``merge`` [F] (int64), with no host synchronisation.

    A segment's target T is the sum of its frames' merge budgets. Every frame with candidates
    gets one cluster; the other T - P (P such frames) go by the largest remainder of
    (T - P) * (c_t - 1) / (C - P), equal remainders to the earlier frame; the counts sum to T.
    A segment with T = 0 (a video of a batch without merge budget) gets no cluster.
    ``keep``: the segment has no more candidates than T, so they are kept as they are (then
    every candidate has a cluster of its own).
    """
    device = counts.device
    frames = counts.shape[0]
    slots = seg.slots

    def per_segment(v: torch.Tensor) -> torch.Tensor:
        return torch.zeros(slots, dtype=torch.long, device=device).index_add_(0, seg.of_frame, v)

    target = per_segment(merge)
    active = (target > 0)[seg.of_frame]
    base = ((counts > 0) & active).long()
    total, present = per_segment(counts), per_segment(base)
    rest = (target - present)[seg.of_frame]  # clusters beyond one per frame
    weight = torch.where(active, counts - base, 0)
    pool = (total - present)[seg.of_frame]
    safe = pool.clamp_min(1)
    floor = torch.where(pool > 0, rest * weight // safe, 0)
    remainder = torch.where(pool > 0, rest * weight % safe, 0)
    extra = (target - present - per_segment(floor))[seg.of_frame]
    # rank the frames of each segment by remainder (descending), earlier frame first on ties
    # (a remainder is below F * N, far below 2**40)
    key = seg.of_frame * (2**40) + (2**40 - 1 - remainder)
    order = torch.argsort(key, stable=True)
    frame = torch.arange(frames, device=device)
    first = torch.cummax(torch.where(seg.start, frame, 0), 0).values  # segment's first frame
    rank = torch.empty_like(order)
    rank[order] = frame - first[order]
    clusters = base + floor + (rank < extra).long()
    keep = (target >= total)[seg.of_frame] & active
    return clusters, keep


# --------------------------------------------------------------------------- the merge
@torch.no_grad()
def dpc(values: torch.Tensor, targets: torch.Tensor, counts: list[int],
        clusters: list[int], keep: list[bool], knn: int, ws: Workspace) -> Clusters:
    """The merged rows of every frame, sizes known on the host.

    Args:
        values: [C, D] float32/float64 tree values of the candidates, frame after frame.
        targets: [C] their flat positions.
        counts: candidates of each frame (sum C); clusters: k_t of each frame; keep: the frame's
            candidates are kept as they are (one row each). A frame with neither has no row.
    Nothing here synchronises with the device.
    """
    device = values.device
    total = values.shape[0]
    rows_of = [c if kp else k for c, k, kp in zip(counts, clusters, keep)]
    cand_start, row_start = _offsets(counts), _offsets(rows_of)
    merged = row_start[-1]
    row = torch.full((total,), -1, dtype=torch.long, device=device)
    centres = torch.empty(merged, dtype=torch.long, device=device)
    kinds = torch.full((merged,), KIND_CLUSTER, dtype=torch.long, device=device)
    # frames whose candidates each get a row of their own: kept as they are (roots), or
    # clustered into as many clusters as candidates (every candidate is a centre, and a centre
    # is assigned to itself: no distances needed; the rows are sorted by position later)
    own = [kp or 0 < c == k for c, k, kp in zip(counts, clusters, keep)]
    if any(own) and total:
        own_rows = sum(c for c, o in zip(counts, own) if o)
        own_frame, kept, count_t, shift = to_device(
            [[int(o) for o in own], [int(kp) for kp in keep], counts,
             [r - c for r, c in zip(row_start[:-1], cand_start[:-1])]], device)
        candidate = compact(own_frame.bool().repeat_interleave(count_t, output_size=total),
                            own_rows)
        frame_of = torch.repeat_interleave(torch.arange(len(counts), device=device), count_t,
                                           output_size=total)[candidate]
        slot = candidate + shift[frame_of]
        row[candidate] = slot
        centres[slot] = targets[candidate]
        kinds[slot] = torch.where(kept[frame_of].bool(), KIND_ROOT, KIND_CLUSTER)
    groups: dict[int, list[int]] = {}  # frames of similar sizes, batched together
    for t, (c, k, o) in enumerate(zip(counts, clusters, own)):
        if k > 0 and not o:
            groups.setdefault(_bucket(c), []).append(t)
    sq_norms = None
    if any(b > 0 for b in groups):
        sq_norms = square_norms(values, ws, "dpc")
    for bucket, frames in groups.items():
        width = max(counts[t] for t in frames)
        width = max(width, CDIST_MM_ROWS + 1) if bucket > 0 else width
        c, k, first_row, first_cluster = to_device(
            [[counts[t] for t in frames], [clusters[t] for t in frames],
             [cand_start[t] for t in frames], [row_start[t] for t in frames]], device)
        pos = torch.arange(width, device=device)
        # padding rows repeat the frame's last token: every distance of a valid pair depends only
        # on the two rows involved, and distances to padding are masked
        rows = torch.minimum(first_row[:, None] + pos, first_row[:, None] + c[:, None] - 1)
        local, top = _cluster(values, sq_norms, rows, c, k, knn, bucket > 0,
                              sorted({min(clusters[t], knn) for t in frames}),
                              max(clusters[t] for t in frames), ws, f"dpc{bucket}")
        valid = pos[None, :] < c[:, None]
        members = compact(valid.flatten(), sum(counts[t] for t in frames))
        row[rows.flatten()[members]] = (first_cluster[:, None] + local).flatten()[members]
        is_centre = torch.arange(top.shape[1], device=device)[None, :] < k[:, None]
        picked = compact(is_centre.flatten(), sum(clusters[t] for t in frames))
        centre_rows = (first_cluster[:, None] + torch.arange(top.shape[1], device=device))
        centres[centre_rows.flatten()[picked]] = targets[(first_row[:, None] + top).flatten()
                                                         [picked]]
    return Clusters(row, centres, kinds)


@torch.no_grad()
def dpc_static(values: torch.Tensor, candidates: torch.Tensor, clusters: torch.Tensor,
               keep: torch.Tensor, merged: int, width: int, knn: int,
               ws: Workspace) -> Clusters:
    """The merged rows of every frame in a static plan: one batch of all frames padded to
    ``width`` candidates (an upper bound of every frame's count), with no data-dependent size.

    Args:
        values: [F*N, D] work-dtype tree value at every position (valid at the candidates).
        candidates: [F, N] bool.
        clusters: [F] int64 k_t; keep: [F] bool (then k_t = c_t: every candidate its own row);
            merged: sum of k_t (host, from the plan).
    Rows are numbered frame after frame, a frame's clusters in descending score order.
    """
    frames, n = candidates.shape
    device = values.device
    count = candidates.sum(dim=1)  # [F]
    order = torch.argsort((~candidates).to(torch.int8), dim=1, stable=True)[:, :width]
    rows = torch.arange(frames, device=device)[:, None] * n + order  # [F, P] rows of values
    first_row = torch.cumsum(clusters, 0) - clusters  # [F]
    local, top = _cluster(values, None, rows, count, clusters, knn, None,
                          list(range(1, min(knn, width) + 1)), width, ws, "dpc")
    pos = torch.arange(width, device=device)
    clustered = (pos[None, :] < count[:, None]) & (clusters > 0)[:, None]
    slot_row = torch.where(clustered, first_row[:, None] + local, -1)  # row of each slot
    row = torch.full((frames, n), -1, dtype=torch.long, device=device)
    row.scatter_(1, order, slot_row)
    is_centre = pos[None, :] < clusters[:, None]
    centre_rank = compact(is_centre.flatten(), merged)  # flat (frame, rank), in row order
    centre_frame = torch.div(centre_rank, width, rounding_mode="floor")
    centre_slot = top.flatten()[centre_rank]
    centres = rows.flatten()[centre_frame * width + centre_slot]
    kinds = torch.where(keep[centre_frame], KIND_ROOT, KIND_CLUSTER)
    return Clusters(row.view(-1), centres, kinds)


def _bucket(count: int) -> int:
    """Frames batched together: up to 25 candidates (torch.cdist's direct form) by eighths,
    more (its matrix form) by sixteenths; negative keys for the direct form."""
    if count <= CDIST_MM_ROWS:
        return -1 - (count - 1) // 8
    return 1 + (count - 1) // 16


def _offsets(sizes: list[int]) -> list[int]:
    out = [0]
    for s in sizes:
        out.append(out[-1] + s)
    return out


def _cluster(values: torch.Tensor, sq_norms: torch.Tensor | None, rows: torch.Tensor,
             count: torch.Tensor, clusters: torch.Tensor, knn: int, wide: bool | None,
             knn_values: list[int], most: int, ws: Workspace,
             name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """DPC-kNN of a padded batch of frames: ``rows`` [G, P] the rows of ``values`` of each
    frame (padding repeats a valid row), ``count`` [G] valid rows, ``clusters`` [G] k_g,
    the density over min(k_g, ``knn``) neighbours (``knn_values``: the values that occur, or a
    superset), ``most`` >= every k_g. ``wide``: every frame has more than 25 rows (True), at
    most 25 (False), or either (None: both distance forms, chosen per frame).

    Returns (local [G, P]: the cluster rank of each valid slot; top [G, most]: the slot of the
    centre of each rank, valid for ranks below k_g).
    """
    g, width = rows.shape
    device, dim = values.device, values.shape[1]
    pos = torch.arange(width, device=device)
    valid = pos[None, :] < count[:, None]  # [G, P]
    dist = _distances(values, sq_norms, rows, count, wide, ws, name)  # fresh or workspace
    dist = dist.div_(math.sqrt(dim)).masked_fill_(~valid[:, None, :], math.inf)

    # density: exp(-mean of the k' smallest squared distances), frames grouped by k'
    knn_t = torch.minimum(clusters, torch.full_like(clusters, knn)).clamp_min(1)
    nearest = torch.topk(dist, min(max(knn_values), width), dim=-1, largest=False).values
    density = torch.zeros(g, width, dtype=dist.dtype, device=device)
    for kk in knn_values:
        density = torch.where((knn_t == kk)[:, None],
                              torch.mean(-(nearest[:, :, :kk] ** 2), dim=-1).exp(), density)
    c = count.clamp_min(1)[:, None].double()
    ramp = 1e-6 * (c - 1 - pos[None, :].double()) / c  # §8's deterministic tie ramp
    density = torch.where(valid, density + ramp.to(density.dtype), -1.0)

    denser = density[:, None, :] > density[:, :, None]  # [G, i, j]: j denser than i
    pair = valid[:, :, None] & valid[:, None, :]
    dmax = dist.masked_fill(~pair, -math.inf).amax(dim=(1, 2))
    delta = torch.where(denser, dist, dmax[:, None, None]).min(dim=-1).values
    score = torch.where(valid, delta * density, -math.inf)
    ranked = torch.sort(score, dim=-1, descending=True, stable=True).indices  # [G, P]

    most = min(most, width)
    top = ranked[:, :most]  # [G, most] centre slots (valid for ranks below k_g)
    is_centre = torch.arange(most, device=device)[None, :] < clusters[:, None]
    to_centre = torch.gather(dist, 2, top[:, None, :].expand(g, width, most))
    local = to_centre.masked_fill(~is_centre[:, None, :], math.inf).argmin(dim=-1)  # [G, P]
    # each centre belongs to its own cluster (column `width` absorbs the unused slots)
    local = torch.cat([local, local.new_zeros(g, 1)], dim=1)
    local.scatter_(1, torch.where(is_centre, top, width),
                   torch.arange(most, device=device).expand(g, most))
    return local[:, :width], top


def _distances(values, sq_norms, rows, count, wide, ws, name) -> torch.Tensor:
    """[G, P, P] ||z_i - z_j|| between the rows ``rows`` [G, P] of every frame, as torch.cdist
    computes them on that frame's ``count`` rows alone: directly for at most 25 rows, else in
    its matrix form."""
    width = rows.shape[1]
    if wide is False or width <= CDIST_MM_ROWS:
        return distances(values, None, rows, ws, name)
    if sq_norms is None:
        sq_norms = square_norms(values, ws, name)
    mm = distances(values, sq_norms, rows, ws, name)
    if wide:
        return mm
    short = CDIST_MM_ROWS
    direct = distances(values, None, rows[:, :short], ws, f"{name}_direct")
    direct = torch.nn.functional.pad(direct, (0, width - short, 0, width - short))
    return torch.where((count <= CDIST_MM_ROWS)[:, None, None], direct, mm)


def square_norms(values: torch.Tensor, ws: Workspace, name: str) -> torch.Tensor:
    """[C] |z|^2 of every row of ``values`` [C, D] as torch.cdist computes it (z.pow(2) summed
    over the row), SQUARE_ROWS rows at a time so that the squares are summed from the cache
    (each row's sum is the same whatever rows are squared with it)."""
    if torch.compiler.is_compiling():
        return values.pow(2).sum(dim=-1)
    rows, dim = values.shape
    out = torch.empty(rows, dtype=values.dtype, device=values.device)
    squares = ws.empty(f"{name}_squares", (min(rows, SQUARE_ROWS), dim), values.dtype)
    for first in range(0, rows, SQUARE_ROWS):
        last = min(first + SQUARE_ROWS, rows)
        part = torch.pow(values[first:last], 2, out=squares[: last - first])
        torch.sum(part, dim=-1, out=out[first:last])
    return out


def distances(values: torch.Tensor, sq_norms: torch.Tensor | None, rows: torch.Tensor,
              ws: Workspace, name: str = "dpc") -> torch.Tensor:
    """[G, P, P] ||z_i - z_j|| between the rows ``rows`` [G, P] of ``values``, bit for bit what
    ``torch.cdist`` gives on the gathered batch (``sq_norms``: |z|^2 of every row, for the
    matrix form; None: at most 25 rows, computed directly)."""
    g, width = rows.shape
    if sq_norms is None or width <= CDIST_MM_ROWS:
        batch = values[rows]
        return torch.cdist(batch, batch)
    dim = values.shape[1]
    norms = sq_norms[rows]
    if torch.compiler.is_compiling():  # the same operands, without out= into views
        z = values[rows]
        ones = torch.ones_like(norms)[..., None]
        lhs = torch.cat([z * -2, norms[..., None], ones], dim=-1)
        rhs = torch.cat([z, ones, norms[..., None]], dim=-1)
        return torch.bmm(lhs, rhs.transpose(1, 2)).clamp_min(0).sqrt()
    shape = (g, width, dim + 2)
    lhs = ws.empty(f"{name}_lhs", shape, values.dtype)
    rhs = ws.empty(f"{name}_rhs", shape, values.dtype)
    torch.index_select(values, 0, rows.reshape(-1), out=rhs.view(g * width, dim + 2)[:, :dim])
    torch.mul(rhs[..., :dim], -2, out=lhs[..., :dim])
    lhs[..., dim], lhs[..., dim + 1] = norms, 1.0
    rhs[..., dim], rhs[..., dim + 1] = 1.0, norms
    dist = ws.empty(f"{name}_dist", (g, width, width), values.dtype)
    return products(lhs, rhs.transpose(1, 2), dist).clamp_min_(0).sqrt_()
