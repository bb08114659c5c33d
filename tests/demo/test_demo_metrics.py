"""The fidelity metric on constructed cases with known answers, and TSTM vs TTM on motion."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import device

import flashvid
from flashvid.demo.baselines import run_strategy
from flashvid.demo.metrics import changed_tokens, fidelity, representatives

E = torch.eye(4, dtype=torch.float64)


def static_clip(frames: int = 5, n: int = 36, dim: int = 12):
    """Identical frames of n distinct random tokens, and a random importance."""
    gen = torch.Generator().manual_seed(5)
    frame = torch.randn(n, dim, generator=gen)
    x = frame.expand(frames, -1, -1).contiguous().to(device())
    a = torch.softmax(torch.randn(n, generator=gen), 0).expand(frames, -1)
    return x, a.contiguous().to(device())


@pytest.mark.parametrize("name", ["flashvid", "flashvid-ttm", "tstm", "ttm"])
@pytest.mark.parametrize("aggregation", ["official", "mean"])
def test_static_clip_temporal_merging_is_lossless(name, aggregation):
    """Identical frames: every non-ADTS token of frames 1.. merges into its copy in frame 0, a
    tree holds identical tokens, so its merged row (mean, or the official scaled sum) has cosine
    1 with each member. Spatial merging is off, so only temporal merging is measured."""
    frames, n = 5, 36
    x, a = static_clip(frames, n)
    base = flashvid.FlashVIDConfig(segment=False, spatial_merge=False, aggregation=aggregation)
    out = run_strategy(name, x, a, base)
    n_adts = math.ceil(math.ceil(n * 0.1 * 1.25) * (0.7 if name.startswith("flashvid") else 0))
    assert int((out.parents >= 0).sum()) == (frames - 1) * (n - n_adts)  # everything merged
    assert out.tokens.shape[0] == frames * n_adts + (n - n_adts)
    fid = fidelity(x, out)
    assert fid.mean == pytest.approx(1.0, abs=1e-6)
    assert fid.worst_frame == pytest.approx(1.0, abs=1e-6)
    assert bool((fid.per_token > 1 - 1e-6).all())
    assert fid.changed_tokens == 0 and math.isnan(fid.changed)


def test_static_clip_pooling_cells_of_one_value_are_lossless():
    """An 8x8 grid of constant 2x2 blocks pooled into 16 cells (the 2x2 blocks): lossless."""
    gen = torch.Generator().manual_seed(6)
    blocks = torch.randn(4, 4, 10, generator=gen)
    frame = blocks.repeat_interleave(2, 0).repeat_interleave(2, 1).reshape(64, 10)
    x = frame.expand(3, -1, -1).contiguous().to(device())
    a = torch.full((3, 64), 1 / 64, device=device())
    out = run_strategy("uniform", x, a, flashvid.FlashVIDConfig(retention_ratio=0.25,
                                                                 expansion=1.0), grid=(8, 8))
    assert out.tokens.shape[0] == 3 * 16
    fid = fidelity(x, out)
    assert fid.mean == pytest.approx(1.0, abs=1e-6) and fid.worst_frame == pytest.approx(1.0,
                                                                                          abs=1e-6)
    # shifted by one token in raster order, the blocks straddle cells: no longer lossless
    shifted = fidelity(x.roll(1, dims=1), run_strategy("uniform", x.roll(1, dims=1), a,
                                                       out.config, grid=(8, 8)))
    assert shifted.mean < 0.99


def test_dropped_token_is_represented_by_the_most_similar_kept_token():
    """ATS keeps tokens 0 and 1 (highest importance) of each 4-token frame.

    Frame 0 = [e1, e2, (e1+e2)/sqrt2, e3]: the dropped tokens score 1/sqrt2 (nearest kept e1 or
    e2) and 0 (e3 is orthogonal to both); mean (2 + 1/sqrt2) / 4. Frame 1 = [e1, e1, e1, -e1]:
    the dropped e1 scores 1 and -e1 scores -1; mean 2 / 4.
    """
    f0 = torch.stack([E[0], E[1], (E[0] + E[1]) / math.sqrt(2), E[2]])
    f1 = torch.stack([E[0], E[0], E[0], -E[0]])
    x = torch.stack([f0, f1]).float().to(device())
    a = torch.tensor([[0.4, 0.3, 0.2, 0.1]] * 2, device=device())
    base = flashvid.FlashVIDConfig(retention_ratio=0.4, segment=False)  # B = ceil(4*0.5) = 2
    out = run_strategy("ats", x, a, base)
    assert out.indices.tolist() == [0, 1, 4, 5]
    rep = representatives(x, out)
    assert rep[0].tolist()[:2] == [0, 1] and rep[0, 2] in (0, 1)
    fid = fidelity(x, out)
    frame0 = (2 + 1 / math.sqrt(2)) / 4
    assert fid.per_frame.tolist() == pytest.approx([frame0, 0.5], abs=1e-6)
    assert fid.mean == pytest.approx((frame0 + 0.5) / 2, abs=1e-6)
    assert fid.worst_frame == pytest.approx(0.5, abs=1e-6) and fid.worst_frame_index == 1
    assert fid.count == 4


def test_pooled_cell_scores_the_cosine_to_its_mean():
    """Uniform pooling of a 2x2 grid into 2 cells (one per column): the left column holds e1
    and e2 (mean (e1+e2)/2, cosine 1/sqrt2 to each), the right column e3 twice (cosine 1)."""
    x = torch.stack([E[0], E[2], E[1], E[2]])[None].float().to(device())
    out = run_strategy("uniform", x, torch.full((1, 4), 0.25, device=device()),
                       flashvid.FlashVIDConfig(retention_ratio=0.5, expansion=1.0), grid=(2, 2))
    assert out.source.tolist() == [[0, 1, 0, 1]]
    fid = fidelity(x, out)
    assert fid.per_token.flatten().tolist() == pytest.approx([2**-0.5, 1, 2**-0.5, 1], abs=1e-6)
    assert fid.mean == pytest.approx((2 + math.sqrt(2)) / 4, abs=1e-6)


def test_changed_tokens_are_those_ttm_cannot_merge():
    x = torch.stack([torch.stack([E[0], E[1]]), torch.stack([E[0], E[2]]),
                     torch.stack([(E[0] + 0.1 * E[3]), E[2]])]).float()
    assert changed_tokens(x).tolist() == [[False, False], [False, True], [False, False]]
    assert changed_tokens(x, threshold=0.999).tolist() == [[False, False], [False, True],
                                                          [True, False]]


def test_metric_rejects_a_mismatched_video():
    x, a = static_clip()
    out = run_strategy("flashvid", x, a)
    with pytest.raises(ValueError, match=r"expected the input the video was compressed from"):
        fidelity(x[:, :10], out)


def test_tstm_represents_moving_content_better_than_ttm():
    """Content scrolling one token per frame: TSTM's trees follow it, TTM's cannot, so at the
    same budget TSTM-only represents the clip better than TTM-only, with about as many rows."""
    gen = torch.Generator().manual_seed(3)
    rows, cols, frames, dim = 6, 6, 8, 32
    world = torch.randn(rows, cols + frames, dim, generator=gen)
    x = torch.stack([world[:, t : t + cols].reshape(rows * cols, dim) for t in range(frames)])
    x = (x + 0.02 * torch.randn(x.shape, generator=gen)).to(device())
    a = torch.full((frames, rows * cols), 1 / (rows * cols), device=device())
    base = flashvid.FlashVIDConfig(retention_ratio=0.2, segment=False)
    tstm = run_strategy("tstm", x, a, base)
    ttm = run_strategy("ttm", x, a, base)
    assert abs(tstm.tokens.shape[0] - ttm.tokens.shape[0]) <= frames
    f_tstm, f_ttm = fidelity(x, tstm), fidelity(x, ttm)
    assert f_tstm.mean > f_ttm.mean + 0.05
    assert f_tstm.changed > f_ttm.changed + 0.05
    assert f_tstm.changed_tokens == (frames - 1) * rows * cols  # everything moved
