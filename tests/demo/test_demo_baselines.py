"""The compared strategies: each returns the requested count; uniform pooling is exact."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import TOL, device, expected_budget, random_video

import flashvid
from flashvid import KIND_ADTS, KIND_CLUSTER
from flashvid.demo.baselines import (
    STRATEGY_NAMES,
    count_bounds,
    pooling_cells,
    run_strategy,
    strategy_config,
    uniform_pool,
)

EXACT = {"uniform", "ats", "dts", "adts"}  # exactly F*B rows; the others F*B .. F*B + F


@pytest.mark.parametrize("ratio", [0.1, 0.25])
@pytest.mark.parametrize("shape", [(1, 49), (7, 30),
                                   pytest.param((12, 196), marks=pytest.mark.slow)],
                         ids=lambda s: f"F{s[0]}xN{s[1]}")
@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_each_strategy_returns_the_requested_count(name, shape, ratio):
    frames, n = shape
    x, a = random_video(frames, n, 16, seed=frames * n)
    base = flashvid.FlashVIDConfig(retention_ratio=ratio)
    out = run_strategy(name, x, a, base)
    total = expected_budget(n, ratio, 1.25, 0.7)[0]  # B does not depend on alpha
    rows = out.tokens.shape[0]
    if name in EXACT:
        assert rows == frames * total
    else:
        assert frames * total <= rows <= frames * total + frames
    assert count_bounds(name, frames, n, base) == (
        (frames * total, frames * total) if name in EXACT else
        (frames * total, frames * total + frames))
    assert out.source.shape == (frames, n) and out.indices.shape == (rows,)
    assert bool((out.source < rows).all())
    assert bool((out.indices[1:] >= out.indices[:-1]).all())


def test_strategy_definitions():
    base = flashvid.FlashVIDConfig()
    assert strategy_config("flashvid", base) == base
    assert strategy_config("flashvid-ttm", base) == base.replace(temporal_merge="ttm")
    assert strategy_config("ats", base) == base.replace(selection="attention", alpha=1.0)
    assert strategy_config("dts", base) == base.replace(selection="diversity", alpha=1.0)
    assert strategy_config("adts", base) == base.replace(alpha=1.0)
    qwen = flashvid.FlashVIDConfig.qwen2_5_vl()
    assert strategy_config("adts", qwen).selection == "adts_v1"
    assert strategy_config("tstm", base) == base.replace(alpha=0.0)
    assert strategy_config("ttm", base) == base.replace(alpha=0.0, temporal_merge="ttm")
    with pytest.raises(ValueError, match=r"unknown strategy 'fastv'; expected one of"):
        strategy_config("fastv")


def test_pruning_strategies_keep_tokens_verbatim_and_drop_the_rest():
    x, a = random_video(4, 49, 16, seed=2)
    for name in ("ats", "dts", "adts"):
        out = run_strategy(name, x, a, flashvid.FlashVIDConfig(retention_ratio=0.25))
        assert bool((out.kinds == KIND_ADTS).all())
        assert torch.equal(out.tokens, x.reshape(-1, 16)[out.indices])
        kept = torch.zeros(4 * 49, dtype=torch.bool, device=x.device)
        kept[out.indices] = True
        assert torch.equal(out.source.reshape(-1) < 0, ~kept)
    # ATS keeps the most important tokens of each frame
    ats = run_strategy("ats", x, a, flashvid.FlashVIDConfig(retention_ratio=0.25))
    b = ats.budget.total
    for t in range(4):
        want = set(torch.topk(a[t], b).indices.tolist())
        assert set((ats.indices[ats.frames == t] % 49).tolist()) == want


def test_tstm_only_has_no_adts_tokens():
    x, a = random_video(6, 49, 16, seed=4)
    for name in ("tstm", "ttm"):
        out = run_strategy(name, x, a)
        assert not bool((out.kinds == KIND_ADTS).any())
        assert bool((out.source >= 0).all())


@pytest.mark.parametrize("rows,cols", [(1, 1), (1, 7), (5, 3), (14, 14), (13, 13), (6, 10)])
def test_pooling_cells_tile_the_grid(rows, cols):
    for cells in sorted({1, 2, 3, rows * cols // 3 + 1, rows * cols - 1, rows * cols}):
        if not 1 <= cells <= rows * cols:
            continue
        boxes = pooling_cells(rows, cols, cells)
        assert len(boxes) == cells
        cover = torch.zeros(rows, cols, dtype=torch.long)
        for r0, r1, c0, c1 in boxes:
            assert 0 <= r0 < r1 <= rows and 0 <= c0 < c1 <= cols
            cover[r0:r1, c0:c1] += 1
        assert bool((cover == 1).all())
        areas = [(r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in boxes]
        # near-equal: the largest cell is at most about twice the ideal area (+ one row/column)
        ideal = rows * cols / cells
        assert max(areas) <= 2 * ideal + rows + cols
    with pytest.raises(ValueError, match=r"cells must be in \[1, 6\] for a 2x3 grid"):
        pooling_cells(2, 3, 7)


def test_uniform_pool_rows_are_cell_means():
    gen = torch.Generator().manual_seed(0)
    frames, rows, cols, dim = 3, 6, 8, 5
    x = torch.randn(frames, rows * cols, dim, generator=gen).to(device())
    cfg = flashvid.FlashVIDConfig(retention_ratio=0.25, expansion=1.0)  # B = 48 / 4 = 12
    out = uniform_pool(x, cfg, (rows, cols))
    assert out.budget.total == 12 and out.tokens.shape == (frames * 12, dim)
    assert bool((out.kinds == KIND_CLUSTER).all()) and bool((out.parents == -1).all())
    assert out.segment_lengths.tolist() == [frames]
    # 12 cells on 6x8: 3 bands of 2 rows, 4 cells of 2 columns each
    for t in range(frames):
        for k, (r, c) in enumerate((r, c) for r in range(0, 6, 2) for c in range(0, 8, 2)):
            members = [(r + i) * cols + c + j for i in range(2) for j in range(2)]
            row = out.source[t, members]
            assert bool((row == row[0]).all())
            assert int(row[0]) == t * 12 + k
            want = x[t, members].double().mean(0)
            atol, rtol = TOL[torch.float32]
            assert torch.allclose(out.tokens[row[0]].double(), want, atol=atol, rtol=rtol)
            assert int(out.indices[row[0]]) == t * 48 + r * cols + c  # centre (top-left of 2x2)
    bad = torch.zeros(2, 10, 3, device=device())
    with pytest.raises(ValueError, match=r"grid 3x3 has 9 cells but frames have 10 tokens"):
        uniform_pool(bad, cfg, (3, 3))
    with pytest.raises(TypeError, match=r"tokens must be a floating torch.Tensor"):
        uniform_pool(bad.long(), cfg, (2, 5))


def test_uniform_pool_keeps_dtype_and_counts_for_half_inputs():
    x, _ = random_video(4, 49, 8, seed=9, dtype=torch.bfloat16)
    out = uniform_pool(x, flashvid.FlashVIDConfig(retention_ratio=0.1))
    assert out.tokens.dtype == torch.bfloat16
    assert out.tokens.shape[0] == 4 * math.ceil(49 * 0.1 * 1.25)
