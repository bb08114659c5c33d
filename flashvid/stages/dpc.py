"""Stage ``dpc`` (§8): the DPC-kNN spatial merge that enforces the budget, batched over
frames without per-frame Python loops.

Each segment's merge budget B_merge * length is spread over its frames: frame t with c_t
candidates gets ceil(c_t * ratio) clusters, ratio = budget / sum(c) (when ratio < 1; otherwise
its candidates are kept as-is). Frames are grouped into a few buckets of similar candidate
counts; each bucket is one padded batch. Bit-level agreement with the reference (and the
published code) needs ``torch.cdist``'s arithmetic: above 25 rows it computes
sqrt(clamp(bmm([-2x, |x|^2, 1], [y, 1, |y|^2]^T), 0)), whose results do not depend on how much
padding there is; at most 25 rows it computes each distance directly. The published code calls
it on one frame at a time, so a frame of more than 25 candidates is padded to at least 26 rows
here and takes that form, built directly from the gathered rows; the other frames stay at most
25 rows wide and use ``torch.cdist``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..backends import Backend
from ..config import Budget, FlashVIDConfig
from .dyseg import Segments
from .util import compact, to_device

CDIST_MM_ROWS = 25  # torch.cdist uses its matmul path above this many rows


@dataclass(frozen=True)
class Plan:
    """Per frame (host lists): clusters wanted (0 = keep every candidate as-is, when ``keep``),
    whether the frame's distances take torch.cdist's matmul path (more than 25 candidates)."""

    clusters: list[int]
    matmul_path: list[bool]
    keep: list[bool]


@dataclass(frozen=True)
class Clusters:
    """Attributes:
        assign: [C] int64 global cluster id of each candidate, -1 in frames kept as-is.
        centres: [K] int64 candidate row of each cluster's centre (K = sum of clusters), the
            clusters of a frame in descending score order.
    """

    assign: torch.Tensor
    centres: torch.Tensor


def plan(counts: list[int], seg: Segments, budget: Budget, cfg: FlashVIDConfig) -> Plan:
    """§8: ceil(c_t * ratio) clusters per frame, ratio = merge budget / candidates of its
    segment, when ratio < 1 (Python floats, as published)."""
    clusters, matmul_path, keep = [], [], []
    for start, length in zip(seg.starts, seg.lengths):
        c = counts[start : start + length]
        ratio = budget.merge * length / sum(c) if sum(c) else math.inf
        cluster = cfg.spatial_merge and ratio < 1.0
        clusters += [math.ceil(ct * ratio) if cluster else 0 for ct in c]
        keep += [not cluster] * length
        matmul_path += [ct > CDIST_MM_ROWS for ct in c]
    return Plan(clusters, matmul_path, keep)


@torch.no_grad()
def dpc(values: torch.Tensor, counts: list[int], plan: Plan, cfg: FlashVIDConfig,
        backend: Backend) -> Clusters:
    """Cluster the candidates of every frame with ``plan.clusters[t] > 0``.

    Args:
        values: [C] x [D] float32/float64 candidate tree values, frame after frame.
        counts: candidates of each frame (sum C).
    All sizes come from the host lists, so nothing here synchronises with the device.
    """
    device = values.device
    total = values.shape[0]
    row_offsets, cluster_offsets = [0], [0]
    for c, k in zip(counts, plan.clusters):
        row_offsets.append(row_offsets[-1] + c)
        cluster_offsets.append(cluster_offsets[-1] + k)
    assign = torch.full((total,), -1, dtype=torch.long, device=device)
    centres = torch.empty(cluster_offsets[-1], dtype=torch.long, device=device)

    groups: dict[int, list[int]] = {}  # frames of similar sizes (within 16), batched together
    for t, (c, k) in enumerate(zip(counts, plan.clusters)):
        if k > 0:
            groups.setdefault(-(-c // 16) if plan.matmul_path[t] else 0, []).append(t)
    buckets = []  # (width: the group's largest count, frames)
    for key, frames in groups.items():
        widest = max(counts[t] for t in frames)
        buckets.append((max(CDIST_MM_ROWS + 1, widest) if key else CDIST_MM_ROWS, frames))
    sq_norms = None
    if any(w > CDIST_MM_ROWS for w, _ in buckets):  # |z|^2 as torch.cdist computes it
        squares = backend.empty("dpc_squares", tuple(values.shape), values.dtype, device)
        sq_norms = torch.pow(values, 2, out=squares).sum(dim=-1)
    for width, frames in buckets:
        _bucket(values, sq_norms, frames, width, counts, plan.clusters, row_offsets,
                cluster_offsets, cfg.dpc_knn, assign, centres, backend)
    return Clusters(assign, centres)


def _bucket(values, sq_norms, frames, width, counts, clusters, row_offsets, cluster_offsets,
            knn, assign, centres, backend) -> None:
    device, dim = values.device, values.shape[1]
    g = len(frames)
    c, k, first_row, first_cluster, knn_tensor = to_device(
        [[counts[t] for t in frames], [clusters[t] for t in frames],
         [row_offsets[t] for t in frames], [cluster_offsets[t] for t in frames],
         [min(clusters[t], knn) for t in frames]], device)
    pos = torch.arange(width, device=device)
    valid = pos[None, :] < c[:, None]  # [G, P]
    # padding rows repeat the frame's last token: every distance of a valid pair depends only on
    # the two rows involved, and distances to padding are masked below
    rows = torch.minimum(first_row[:, None] + pos[None, :], first_row[:, None] + c[:, None] - 1)
    dist = distances(values, sq_norms, rows, backend) / math.sqrt(dim)  # [G, P, P]
    dist = dist.masked_fill(~valid[:, None, :], math.inf)

    # density: exp(-mean of the k_t' smallest squared distances), frames grouped by k_t'
    knn_t = [min(clusters[t], knn) for t in frames]
    nearest = torch.topk(dist, max(knn_t), dim=-1, largest=False).values  # [G, P, kmax]
    density = torch.empty(g, width, dtype=dist.dtype, device=device)
    for kk in sorted(set(knn_t)):
        sel = knn_tensor == kk
        density = torch.where(sel[:, None],
                              torch.mean(-(nearest[:, :, :kk] ** 2), dim=-1).exp(), density)
    i = pos[None, :].double()
    ramp = 1e-6 * (c[:, None].double() - 1 - i) / c[:, None].double()  # §8 tie ramp
    density = torch.where(valid, density + ramp.to(density.dtype), -1.0)

    denser = density[:, None, :] > density[:, :, None]  # [G, i, j]: j denser than i
    dmax = dist.masked_fill(~(valid[:, :, None] & valid[:, None, :]), -math.inf).amax(dim=(1, 2))
    delta = torch.where(denser, dist, dmax[:, None, None]).min(dim=-1).values
    score = torch.where(valid, delta * density, -math.inf)
    order = torch.sort(score, dim=-1, descending=True, stable=True).indices  # [G, P]

    kmax = int(max(clusters[t] for t in frames))
    top = order[:, :kmax]  # [G, Kmax] centres (valid for j < k_t)
    is_centre = torch.arange(kmax, device=device)[None, :] < k[:, None]
    to_centre = torch.gather(dist, 2, top[:, None, :].expand(g, width, kmax))
    local = to_centre.masked_fill(~is_centre[:, None, :], math.inf).argmin(dim=-1)  # [G, P]
    # each centre belongs to its own cluster (column `width` absorbs the unused slots)
    local = torch.cat([local, local.new_zeros(g, 1)], dim=1)
    slot = torch.where(is_centre, top, width)
    local.scatter_(1, slot, torch.arange(kmax, device=device).expand(g, kmax))
    local = local[:, :width]

    members = compact(valid.flatten(), sum(counts[t] for t in frames))
    assign[rows.flatten()[members]] = (first_cluster[:, None] + local).flatten()[members]
    picked = compact(is_centre.flatten(), sum(clusters[t] for t in frames))
    centre_ids = (first_cluster[:, None] + torch.arange(kmax, device=device)).flatten()[picked]
    centres[centre_ids] = (first_row[:, None] + top).flatten()[picked]


def distances(values: torch.Tensor, sq_norms: torch.Tensor | None, rows: torch.Tensor,
              backend: Backend) -> torch.Tensor:
    """[G, P, P] ||z_i - z_j|| between the rows ``rows`` [G, P] of ``values``, bit for bit what
    ``torch.cdist`` gives on the gathered batch."""
    g, width = rows.shape
    if width <= CDIST_MM_ROWS:
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
    lhs = backend.empty("dpc_lhs", shape, values.dtype, values.device)
    rhs = backend.empty("dpc_rhs", shape, values.dtype, values.device)
    torch.index_select(values, 0, rows.reshape(-1), out=rhs.view(g * width, dim + 2)[:, :dim])
    torch.mul(rhs[..., :dim], -2, out=lhs[..., :dim])
    lhs[..., dim], lhs[..., dim + 1] = norms, 1.0
    rhs[..., dim], rhs[..., dim + 1] = 1.0, norms
    return torch.bmm(lhs, rhs.transpose(1, 2)).clamp_min_(0).sqrt_()


# --------------------------------------------------------------------------- exact-count mode
def exact_counts(counts: torch.Tensor, merge: torch.Tensor,
                 seg: Segments) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact-count mode: (clusters [F], keep [F] bool) from the candidates ``counts`` [F] and the
    per-frame merge budgets ``merge`` [F] (int64), with no host synchronisation.

    A segment's target T is the sum of its frames' merge budgets. Every frame with candidates
    gets one cluster; the other T - P (P such frames) go by the largest remainder of
    (T - P) * (c_t - 1) / (C - P), equal remainders to the earlier frame; the counts sum to T.
    A segment with T = 0 (a video of a batch without merge budget) gets no cluster.
    ``keep``: the segment has no more candidates than T, so they are kept as they are.
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
    keep = (target >= total)[seg.of_frame]
    return clusters, keep


@torch.no_grad()
def static_dpc(values: torch.Tensor, candidates: torch.Tensor, clusters: torch.Tensor,
               total: int, knn: int, backend: Backend) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact-count mode: DPC-kNN of every frame at once, padded to N, with no data-dependent
    size (``clusters`` [F] per frame, ``total`` their sum, known on the host).

    Args:
        values: [F*N, D] work-dtype tree value at every position (valid at the candidates).
        candidates: [F, N] bool.
    Returns:
        (row [F*N] int64: the cluster (0..total-1) of every candidate, -1 elsewhere;
         centres [total] int64: the flat position of each cluster's centre; clusters in frame
         order, a frame's in descending score order). Distances follow torch.cdist frame by
         frame, as in the default mode.
    """
    frames, n = candidates.shape
    dim = values.shape[1]
    device = values.device
    count = candidates.sum(dim=1)  # [F]
    order = torch.argsort((~candidates).to(torch.int8), dim=1, stable=True)  # candidates first
    rows = torch.arange(frames, device=device)[:, None] * n + order  # [F, P] rows of values
    pos = torch.arange(n, device=device)
    valid = pos[None, :] < count[:, None]  # [F, P]
    dist = _frame_distances(values, rows, count, backend) / math.sqrt(dim)
    dist = dist.masked_fill(~valid[:, None, :], math.inf)

    knn_t = torch.minimum(clusters, torch.full_like(clusters, knn)).clamp_min(1)
    kmax = min(knn, n)
    nearest = torch.topk(dist, kmax, dim=-1, largest=False).values  # [F, P, kmax]
    density = torch.zeros(frames, n, dtype=dist.dtype, device=device)
    for kk in range(1, kmax + 1):
        density = torch.where((knn_t == kk)[:, None],
                              torch.mean(-(nearest[:, :, :kk] ** 2), dim=-1).exp(), density)
    c = count.clamp_min(1)[:, None].double()
    ramp = 1e-6 * (c - 1 - pos[None, :].double()) / c  # the deterministic tie ramp
    density = torch.where(valid, density + ramp.to(density.dtype), -1.0)
    denser = density[:, None, :] > density[:, :, None]  # [F, i, j]: j denser than i
    pair = valid[:, :, None] & valid[:, None, :]
    dmax = dist.masked_fill(~pair, -math.inf).amax(dim=(1, 2))
    delta = torch.where(denser, dist, dmax[:, None, None]).min(dim=-1).values
    score = torch.where(valid, delta * density, -math.inf)
    ranked = torch.argsort(score, dim=-1, descending=True, stable=True)  # [F, P] by score
    is_centre = pos[None, :] < clusters[:, None]  # rank r is a centre of its frame
    to_centre = torch.gather(dist, 2, ranked[:, None, :].expand(frames, n, n))
    local = to_centre.masked_fill(~is_centre[:, None, :], math.inf).argmin(dim=-1)  # [F, P]
    local = torch.cat([local, local.new_zeros(frames, 1)], dim=1)
    local.scatter_(1, torch.where(is_centre, ranked, n), pos.expand(frames, n))
    local = local[:, :n]
    first_row = torch.cumsum(clusters, 0) - clusters  # [F]
    clustered = valid & (clusters > 0)[:, None]
    slot_row = torch.where(clustered, first_row[:, None] + local, -1)  # cluster of each slot
    row = torch.full((frames, n), -1, dtype=torch.long, device=device)
    row.scatter_(1, order, slot_row)
    centre_rank = compact(is_centre.flatten(), total)  # flat (frame, rank), in row order
    centre_slot = ranked.flatten()[centre_rank]
    centre_frame = centre_rank // n
    centres = centre_frame * n + order.flatten()[centre_frame * n + centre_slot]
    return row.view(-1), centres


def _frame_distances(values: torch.Tensor, rows: torch.Tensor, count: torch.Tensor,
                     backend: Backend) -> torch.Tensor:
    """[F, P, P] ||z_i - z_j|| between the rows ``rows`` [F, P] of ``values`` of every frame, as
    torch.cdist computes them on that frame's ``count`` rows alone: directly for at most 25
    rows, else in its matrix form (``distances``)."""
    width = rows.shape[1]
    short = min(width, CDIST_MM_ROWS)
    direct = distances(values, None, rows[:, :short], backend)
    if width <= CDIST_MM_ROWS:
        return direct
    squares = backend.empty("dpc_squares", tuple(values.shape), values.dtype, values.device)
    mm = distances(values, torch.pow(values, 2, out=squares).sum(dim=-1), rows, backend)
    direct = torch.nn.functional.pad(direct, (0, width - short, 0, width - short))
    return torch.where((count <= CDIST_MM_ROWS)[:, None, None], direct, mm)
