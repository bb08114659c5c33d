"""TSTM forests without per-token loops: roots by pointer jumping, tree aggregation by index_add_.

Tokens are addressed by their flat global position g = t*N + n over the whole (batched) frame list.
``parent[g]`` is the position of the previous-frame token g merged into, or -1. Nothing here
synchronises with the device.
"""

from __future__ import annotations

import math

import torch

from . import workspace


def tree_roots(parent: torch.Tensor, max_depth: int) -> torch.Tensor:
    """[M] root of each token: follow ``parent`` ([M] int64, -1 = root) to the first root.

    Pointer jumping doubles the distance covered per step, so ceil(log2(max_depth + 1)) steps
    suffice for trees at most ``max_depth`` edges deep (a tree spans at most a segment's frames).
    No host synchronisation.
    """
    root = torch.where(parent >= 0, parent, torch.arange(parent.numel(), device=parent.device))
    for _ in range(math.ceil(math.log2(max_depth + 1))):
        root = root[root]
    return root


def aggregate_trees(x: torch.Tensor, root: torch.Tensor, parent: torch.Tensor,
                    targets: torch.Tensor, aggregation: str) -> torch.Tensor:
    """[C, D] values of the trees rooted at ``targets`` ([C] positions), from tokens ``x`` [M, D].

    ``official`` (published, quirk Q1): subtree sum / (1 + direct children of the root);
    ``mean``: the true tree mean. Accumulates in ``x``'s dtype (the caller passes float32 or
    float64 features). Tokens whose root is not a target are ignored. On the CPU the result is
    a view of this thread's workspace (``flashvid.workspace``), valid until the next call.
    """
    count = targets.numel()
    slot = torch.full((x.shape[0],), count, dtype=torch.long, device=x.device)
    slot[targets] = torch.arange(count, device=x.device)
    member_slot = slot[root]  # [M]; `count` is a discard row for tokens outside the targets
    sums = workspace.buffer("tree_sums", (count + 1, x.shape[1]), x.dtype, x.device,
                            grad=x.requires_grad).zero_()
    sums.index_add_(0, member_slot, x)
    if aggregation == "official":  # 1 + direct children of each target
        total = x.shape[0]
        children = count_into(torch.where(parent >= 0, parent, total), total + 1, x.dtype)
        denom = 1.0 + children[targets]
    else:  # tree sizes
        denom = count_into(member_slot, count + 1, x.dtype)[:count]
    return sums[:count].div_(denom.unsqueeze(-1))


def count_into(index: torch.Tensor, size: int, dtype: torch.dtype) -> torch.Tensor:
    """[size] how often each value occurs in ``index`` (a bincount that does not synchronise)."""
    ones = torch.ones(index.shape, dtype=dtype, device=index.device)
    return torch.zeros(size, dtype=dtype, device=index.device).index_add_(0, index, ones)


def compact(mask: torch.Tensor, size: int) -> torch.Tensor:
    """[size] ascending positions of the True entries of a flat ``mask`` whose count the caller
    already knows (``mask.nonzero()`` without the host synchronisation)."""
    slot = torch.cumsum(mask, 0) - 1
    out = torch.empty(size + 1, dtype=torch.long, device=mask.device)
    out.scatter_(0, torch.where(mask, slot, size), torch.arange(mask.numel(), device=mask.device))
    return out[:size]
