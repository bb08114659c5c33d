"""Reference stage ``trees`` (SPEC §7): the value of every TSTM tree, frame by frame."""

from __future__ import annotations

import torch

from .util import spans, work_dtype


def trees(tokens: torch.Tensor, parent: torch.Tensor, merged: torch.Tensor, lengths: list[int],
          aggregation: str) -> torch.Tensor:
    """[F, N, D] tree values in the work dtype (float32 for half input), valid at the roots.

    In each segment, frames run from last to first: each root is finalised as acc / cnt, each
    merged token's accumulated sum is added to its parent. ``official`` counts +1 per direct
    child (quirk Q1: subtree sum / (1 + direct children)); ``mean`` propagates subtree sizes
    (the true tree mean).
    """
    out = tokens.to(work_dtype(tokens.dtype)).clone()
    for start, end in spans(lengths):
        out[start:end] = _segment_trees(out[start:end], merged[start:end], parent[start:end],
                                        aggregation)
    return out


def _segment_trees(x: torch.Tensor, merged: torch.Tensor, parent: torch.Tensor,
                   aggregation: str) -> torch.Tensor:
    frames, n, _ = x.shape
    acc = x.clone()
    cnt = torch.ones(frames, n, dtype=x.dtype, device=x.device)
    for t in range(frames - 1, -1, -1):
        roots = ~merged[t]
        acc[t][roots] = acc[t][roots] / cnt[t][roots].unsqueeze(-1)
        kids = merged[t].nonzero().flatten()
        if t == 0 or kids.numel() == 0:
            continue
        targets = parent[t][kids]
        acc[t - 1] += torch.zeros_like(acc[t - 1]).index_add_(0, targets, acc[t][kids])
        if aggregation == "official":
            cnt[t - 1] += torch.bincount(targets, minlength=n).to(x.dtype)
        else:
            cnt[t - 1] += torch.zeros_like(cnt[t - 1]).index_add_(0, targets, cnt[t][kids])
    return acc
