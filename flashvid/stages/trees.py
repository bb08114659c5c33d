"""Stage ``trees`` (§7): the TSTM forest's roots and the value of every tree.

Tokens are addressed by their flat position g = t*N + n over the whole (batched) frame list.
Roots come from pointer jumping over the parents, tree sums from one ``index_add_``; nothing
here synchronises with the device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..backends import work_dtype
from ..workspace import Workspace
from .dyseg import Segments
from .tstm import Forest
from .util import compact, count_into


@dataclass(frozen=True)
class Trees:
    """Attributes:
        parent: [F*N] int64 flat position of the token each token merged into, or -1.
        root: [F*N] int64 flat position of each token's tree root (itself for roots).
        targets: [C] int64 flat positions of the spatial-merge candidates, ascending; in a
            static plan every position (C = F*N).
        values: [C, D] work-dtype value of the tree of each target (workspace memory: valid
            for the call; in a static plan valid at the candidates).
    """

    parent: torch.Tensor
    root: torch.Tensor
    targets: torch.Tensor
    values: torch.Tensor


def trees(x: torch.Tensor, forest: Forest, candidates: torch.Tensor, total: int | None,
          seg: Segments, aggregation: str, ws: Workspace) -> Trees:
    """Roots and tree values of the ``total`` candidates ([F, N] bool mask); ``total`` None (a
    static plan, whose candidate count stays on the device): values at every position."""
    frames, n, dim = x.shape
    parent, root = _links(forest, seg)
    if total is None:
        targets = torch.arange(frames * n, device=x.device)
    else:
        targets = compact(candidates.reshape(-1), total)
    wd = work_dtype(x.dtype)
    values = tree_values(x.reshape(-1, dim).to(wd), root, parent, targets, aggregation, ws)
    return Trees(parent, root, targets, values)


def _links(forest: Forest, seg: Segments) -> tuple[torch.Tensor, torch.Tensor]:
    """([F*N] flat position each token merged into or -1, [F*N] its tree's root)."""
    frames, n = forest.merged.shape
    gid = torch.arange(frames * n, device=forest.merged.device).view(frames, n)
    prev_gid = (gid - n).clamp_min(0)
    parent = torch.where(forest.merged, prev_gid.gather(1, forest.parent.clamp_min(0)), -1)
    parent = parent.view(-1)
    return parent, tree_roots(parent, seg.longest - 1)


def tree_roots(parent: torch.Tensor, max_depth: int) -> torch.Tensor:
    """[M] root of each token: follow ``parent`` ([M] int64, -1 = root) to the first root.

    Pointer jumping doubles the distance covered per step, so ceil(log2(max_depth + 1)) steps
    suffice for trees at most ``max_depth`` edges deep (a tree spans at most a segment).
    """
    root = torch.where(parent >= 0, parent, torch.arange(parent.numel(), device=parent.device))
    for _ in range(math.ceil(math.log2(max_depth + 1))):
        root = root[root]
    return root


def tree_values(x: torch.Tensor, root: torch.Tensor, parent: torch.Tensor,
                targets: torch.Tensor, aggregation: str, ws: Workspace) -> torch.Tensor:
    """[C, D] values of the trees rooted at ``targets`` from tokens ``x`` [M, D] (float32 or
    float64, accumulated in that dtype).

    ``official`` (published, quirk Q1): subtree sum / (1 + direct children of the root);
    ``mean``: the true tree mean. Tokens whose root is not a target are ignored.
    """
    count = targets.numel()
    slot = torch.full((x.shape[0],), count, dtype=torch.long, device=x.device)
    slot[targets] = torch.arange(count, device=x.device)
    member_slot = slot[root]  # [M]; `count` is a discard row for tokens outside the targets
    sums = ws.empty("tree_sums", (count + 1, x.shape[1]), x.dtype,
                    grad=x.requires_grad).zero_()
    sums.index_add_(0, member_slot, x)
    if aggregation == "official":  # 1 + direct children of each target
        total = x.shape[0]
        children = count_into(torch.where(parent >= 0, parent, total), total + 1, x.dtype)
        denom = 1.0 + children[targets]
    else:  # tree sizes
        denom = count_into(member_slot, count + 1, x.dtype)[:count]
    return sums[:count].div_(denom.unsqueeze(-1))
