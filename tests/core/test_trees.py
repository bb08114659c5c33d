"""Stage ``trees``: roots by pointer jumping and tree values (official and mean) equal to the
reference's frame-by-frame accumulation on random forests."""

from __future__ import annotations

import pytest
import torch

from flashvid import reference
from flashvid.stages import dyseg
from flashvid.stages.trees import tree_roots, trees
from flashvid.stages.tstm import Forest
from flashvid.workspace import Workspace


def random_forest(frames: int, n: int, lengths: list[int], seed: int):
    gen = torch.Generator().manual_seed(seed)
    parent = torch.randint(0, n, (frames, n), generator=gen)
    merged = torch.rand(frames, n, generator=gen) < 0.6
    start = torch.zeros(frames, dtype=torch.bool)
    start[torch.tensor(reference.spans(lengths))[:, 0]] = True
    merged[start] = False
    return Forest(torch.where(merged, parent, -1), merged)


@pytest.mark.parametrize("aggregation", ["official", "mean"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16], ids=str)
def test_tree_values_equal_reference(aggregation, dtype):
    frames, n, dim = 12, 9, 5
    lengths = [3, 1, 6, 2]
    forest = random_forest(frames, n, lengths, seed=1)
    x = torch.randn(frames, n, dim, generator=torch.Generator().manual_seed(2)).to(dtype)
    seg = dyseg.from_lengths(lengths, x.device)
    candidates = ~forest.merged
    with Workspace(x.device) as ws:
        got = trees(x, forest, candidates, int(candidates.sum()), seg, aggregation, ws)
        values = got.values.clone()  # workspace memory: valid for the call
    want = reference.trees(x, forest.parent, forest.merged, aggregation)
    assert values.dtype == want.dtype == (torch.float64 if dtype == torch.float64
                                              else torch.float32)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(values, want.reshape(-1, dim)[candidates.reshape(-1)],
                               atol=tol, rtol=tol)
    # each token's root: itself if not merged, else its parent's root (one frame earlier)
    root = got.root.view(frames, n)
    for t in range(frames):
        for i in range(n):
            want_root = t * n + i if not forest.merged[t, i] else \
                int(root[t - 1, forest.parent[t, i]])
            assert int(root[t, i]) == want_root


def test_pointer_jumping_reaches_roots_of_long_chains():
    chain = torch.arange(-1, 999)  # token g merged into g - 1: one tree of 1000 tokens
    assert torch.equal(tree_roots(chain, 999), torch.zeros(1000, dtype=torch.long))

