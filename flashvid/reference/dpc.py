"""Reference stage ``dpc`` (§8): DPC-kNN spatial merging, one frame at a time."""

from __future__ import annotations

import math

import torch

from .util import work_dtype


def density_ramp(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The deterministic density tie-break 1e-6 * (n-1-i)/n (replaces the published noise)."""
    i = torch.arange(n, dtype=torch.float64, device=device)
    return (1e-6 * (n - 1 - i) / n).to(dtype)


def distances(values: torch.Tensor) -> torch.Tensor:
    """[c, c] distances ||z_i - z_j|| / sqrt(D) between the c tokens of one frame.

    As published, ``torch.cdist`` runs on the frame alone (a batch of one): it takes its matmul
    path when the frame has more than 25 tokens and computes each distance directly otherwise,
    and bit-level parity depends on which.
    """
    z = values.to(work_dtype(values.dtype))
    return torch.cdist(z[None], z[None])[0] / math.sqrt(z.shape[1])


def dpc_knn(dist: torch.Tensor, knn: int, clusters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """DPC-kNN on one frame (§8) from its [c, c] distances, with the k = ``knn`` nearest
    neighbours (self included) in the density.

    Returns (assign [c], centres [clusters]): centres in descending score order, each point
    assigned to its nearest centre (first on ties), each centre to itself.
    """
    c = dist.shape[0]
    nearest = torch.topk(dist, knn, dim=-1, largest=False).values
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
    """DPC-kNN of every frame of one segment: ``frame_values`` [c_t, D] per frame, ``clusters``
    k_t per frame (0: left alone), density over min(k_t, ``knn``) neighbours. Returns per frame
    (assign [c_t], centres [k_t]) or None."""
    return [dpc_knn(distances(v), min(k, knn), k) if k > 0 else None
            for v, k in zip(frame_values, clusters)]


def exact_cluster_counts(counts: list[int], target: int) -> list[int]:
    """Exact-count mode: ``target`` clusters over the frames of one segment with ``counts``
    candidates (target <= sum(counts), and at least the number of frames with candidates).

    Every frame with candidates gets one cluster; the remaining target - P go by the largest
    remainder of (target - P) * (c_t - 1) / (C - P) (C the candidates, P the frames that have
    some), equal remainders to the earlier frame. The counts sum to ``target`` exactly.
    """
    base = [int(c > 0) for c in counts]
    rest = target - sum(base)
    weights = [c - b for c, b in zip(counts, base)]
    total = sum(weights)
    if total == 0:
        return base
    floors = [rest * w // total for w in weights]
    remainders = [rest * w % total for w in weights]
    extra = rest - sum(floors)
    order = sorted(range(len(counts)), key=lambda t: (-remainders[t], t))
    bonus = set(order[:extra])
    return [b + f + (t in bonus) for t, (b, f) in enumerate(zip(base, floors))]
