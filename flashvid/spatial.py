"""DPC-kNN spatial merging (SPEC §8) batched over frames, without per-frame Python loops.

Frames are grouped into a few buckets of similar token counts; each bucket is one padded batch.
Bit-level agreement with the reference (and the published code) needs ``torch.cdist``'s
arithmetic: above 25 rows it computes sqrt(clamp(bmm([-2x, |x|^2, 1], [y, 1, |y|^2]^T), 0)),
whose results do not depend on how much padding there is; at most 25 rows it computes each
distance directly. So a frame whose segment was padded above 25 rows in the published code is
padded to at least 32 here and takes that matmul form, built directly from the gathered rows
(no intermediate copies); the other frames stay at most 25 rows wide and use ``torch.cdist``.
"""

from __future__ import annotations

import math

import torch

from . import workspace
from .trees import compact

CDIST_MM_ROWS = 25  # torch.cdist uses its matmul path above this many rows


def dpc_knn_frames(values: torch.Tensor, counts: list[int], clusters: list[int],
                   matmul_path: list[bool], knn: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster the tokens of many frames at once.

    Args:
        values: [C, D] float32/float64 tokens of all frames, frame after frame.
        counts: tokens of each frame (sum C).
        clusters: k_t clusters wanted in each frame; 0 leaves the frame alone.
        matmul_path: per frame, whether its distances come from torch.cdist's matmul path.
        knn: the largest k of the kNN density (k_t' = min(k_t, knn)).

    Returns:
        (assign [C] int64: global cluster id of each token, -1 in frames left alone;
         centres [K] int64: row of ``values`` of each cluster's centre, K = sum(clusters),
         clusters of a frame in descending score order).

    All sizes come from the host lists, so nothing here synchronises with the device.
    """
    device = values.device
    total, dim = values.shape
    row_offsets = [0]
    for c in counts:
        row_offsets.append(row_offsets[-1] + c)
    cluster_offsets = [0]
    for k in clusters:
        cluster_offsets.append(cluster_offsets[-1] + k)
    assign = torch.full((total,), -1, dtype=torch.long, device=device)
    centres = torch.empty(cluster_offsets[-1], dtype=torch.long, device=device)

    groups: dict[int, list[int]] = {}  # frames of similar sizes (within 16), batched together
    for t, (c, k) in enumerate(zip(counts, clusters)):
        if k > 0:
            groups.setdefault(-(-c // 16) if matmul_path[t] else 0, []).append(t)
    buckets = []  # (width: the group's largest count, frames)
    for key, frames in groups.items():
        widest = max(counts[t] for t in frames)
        buckets.append((max(CDIST_MM_ROWS + 1, widest) if key else CDIST_MM_ROWS, frames))
    sq_norms = None
    if any(w > CDIST_MM_ROWS for w, _ in buckets):  # |z|^2 as torch.cdist computes it
        squares = workspace.buffer("dpc_squares", tuple(values.shape), values.dtype, device)
        sq_norms = torch.pow(values, 2, out=squares).sum(dim=-1)
    for width, frames in buckets:
        _dpc_bucket(values, sq_norms, frames, width, counts, clusters, row_offsets,
                    cluster_offsets, knn, assign, centres)
    return assign, centres


def _dpc_bucket(values, sq_norms, frames, width, counts, clusters, row_offsets, cluster_offsets,
                knn, assign, centres) -> None:
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
    dist = _distances(values, sq_norms, rows) / math.sqrt(dim)  # [G, P, P]
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
    ramp = 1e-6 * (c[:, None].double() - 1 - i) / c[:, None].double()  # SPEC §8 tie ramp
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


def _distances(values: torch.Tensor, sq_norms: torch.Tensor | None,
               rows: torch.Tensor) -> torch.Tensor:
    """[G, P, P] ||z_i - z_j|| between the rows ``rows`` [G, P] of ``values``, bit for bit what
    ``torch.cdist`` gives on the gathered batch."""
    g, width = rows.shape
    if width <= CDIST_MM_ROWS:
        batch = values[rows]
        return torch.cdist(batch, batch)
    dim = values.shape[1]
    shape = (g, width, dim + 2)
    lhs = workspace.buffer("dpc_lhs", shape, values.dtype, values.device)
    rhs = workspace.buffer("dpc_rhs", shape, values.dtype, values.device)
    torch.index_select(values, 0, rows.reshape(-1), out=rhs.view(g * width, dim + 2)[:, :dim])
    torch.mul(rhs[..., :dim], -2, out=lhs[..., :dim])
    norms = sq_norms[rows]
    lhs[..., dim], lhs[..., dim + 1] = norms, 1.0
    rhs[..., dim], rhs[..., dim + 1] = 1.0, norms
    return torch.bmm(lhs, rhs.transpose(1, 2)).clamp_min_(0).sqrt_()


def to_device(lists: list[list[int]], device: torch.device) -> list[torch.Tensor]:
    """Small host lists as int64 device tensors, in one copy (pinned and asynchronous on CUDA,
    so the host does not wait for the device)."""
    host = torch.tensor(lists, dtype=torch.long)
    if device.type == "cuda":
        host = host.pin_memory()
    return list(host.to(device, non_blocking=True).unbind(0))
