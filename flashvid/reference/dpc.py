"""Reference stage ``dpc`` (SPEC §8): DPC-kNN spatial merging."""

from __future__ import annotations

import math

import torch

from .util import work_dtype


def density_ramp(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The deterministic density tie-break 1e-6 * (n-1-i)/n (replaces the published noise)."""
    i = torch.arange(n, dtype=torch.float64, device=device)
    return (1e-6 * (n - 1 - i) / n).to(dtype)


def segment_distances(values: list[torch.Tensor]) -> torch.Tensor:
    """[F_s, P, P] distances ||z_i - z_j|| / sqrt(D) between the tokens of each frame; +inf in
    the columns of padding.

    As in the published code, the frames of one segment are zero-padded to the largest count and
    given to ``torch.cdist`` in one batch: its matmul path (taken above 25 rows) depends on the
    padded shape, and bit-level parity depends on it.
    """
    width = max(v.shape[0] for v in values)
    dim = values[0].shape[1]
    dtype = work_dtype(values[0].dtype)
    batch = torch.zeros(len(values), width, dim, dtype=dtype, device=values[0].device)
    for f, v in enumerate(values):
        batch[f, : v.shape[0]] = v.to(dtype)
    dist = torch.cdist(batch, batch) / math.sqrt(dim)
    counts = torch.tensor([v.shape[0] for v in values], device=dist.device)
    padding = torch.arange(width, device=dist.device)[None, :] >= counts[:, None]  # [F_s, P]
    return dist.masked_fill(padding[:, None, :], math.inf)


def dpc_knn(dist: torch.Tensor, nearest: torch.Tensor,
            clusters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """DPC-kNN on one frame (SPEC §8): ``dist`` [c, c], ``nearest`` [c, knn] ascending distances.

    Returns (assign [c], centres [clusters]): centres in descending score order, each point
    assigned to its nearest centre (first on ties), each centre to itself.
    """
    c = dist.shape[0]
    density = torch.mean(-(nearest**2), dim=-1).exp()
    density = density + density_ramp(c, density.dtype, density.device)
    denser = density[None, :] > density[:, None]  # [i, j]: j is denser than i
    delta = torch.where(denser, dist, dist.max()).min(dim=-1).values
    score = delta * density
    centres = torch.sort(score, descending=True, stable=True).indices[:clusters]
    assign = dist[:, centres].argmin(dim=-1)
    assign[centres] = torch.arange(clusters, device=dist.device)
    return assign, centres


def dpc(frame_values: list[torch.Tensor], clusters: list[int],
        knn: int) -> list[tuple[torch.Tensor, torch.Tensor] | None]:
    """DPC-kNN (SPEC §8) of every frame of one segment: ``frame_values`` [c_t, D] per frame,
    ``clusters`` k_t per frame (0: left alone). Returns per frame (assign [c_t], centres [k_t])
    or None."""
    dist = segment_distances(frame_values)
    knn_t = [min(k, knn) for k in clusters]
    nearest = torch.topk(dist, max(knn_t), dim=-1, largest=False).values
    out: list[tuple[torch.Tensor, torch.Tensor] | None] = []
    for t, (values, k) in enumerate(zip(frame_values, clusters)):
        c = values.shape[0]
        out.append(dpc_knn(dist[t, :c, :c], nearest[t, :c, : knn_t[t]], k) if k > 0 else None)
    return out
