"""Reference stage ``trees`` (§7): the value of every TSTM tree."""

from __future__ import annotations

import torch

from .util import work_dtype


def trees(tokens: torch.Tensor, parent: torch.Tensor, merged: torch.Tensor,
          aggregation: str) -> torch.Tensor:
    """[F, N, D] tree values in the work dtype (float32 for half input), valid at the roots.

    Following the merges frame by frame gives every token its tree's root (a tree never crosses
    a segment: nothing merges into the previous segment). A root's value is the sum of its tree
    (members added in position order) divided by

    * ``official`` (the published arithmetic, quirk Q1): 1 + the root's number of direct
      children, which is what the published frame-by-frame accumulation computes;
    * ``mean``: the number of tokens in the tree (the true tree mean).
    """
    frames, n, dim = tokens.shape
    x = tokens.to(work_dtype(tokens.dtype)).reshape(frames * n, dim)
    root = torch.arange(frames * n, device=tokens.device).view(frames, n)
    for t in range(1, frames):
        root[t] = torch.where(merged[t], root[t - 1][parent[t].clamp_min(0)], root[t])
    root = root.reshape(-1)
    sums = torch.zeros_like(x).index_add_(0, root, x)
    ones = torch.ones(frames * n, dtype=x.dtype, device=x.device)
    if aggregation == "official":
        prev = (torch.arange(frames, device=x.device)[:, None] - 1) * n + parent
        denom = 1.0 + torch.zeros_like(ones).index_add_(0, prev[merged], ones[: int(merged.sum())])
    else:
        denom = torch.zeros_like(ones).index_add_(0, root, ones)
    return (sums / denom[:, None]).view(frames, n, dim)
