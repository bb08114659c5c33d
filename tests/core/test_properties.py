"""Properties of ``compress`` on random videos: budget, coverage, exactness, aggregation, order."""

from __future__ import annotations

import pytest
import torch
from helpers import TOL, device, expected_budget, random_video

import flashvid
from flashvid import KIND_ADTS

BACKENDS = ["reference", "torch"]
SHAPES = [(f, n) for f in (1, 2, 5, 33) for n in (1, 7, 169, 196, 266)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
DIM = 24


def configs(case: int) -> list[flashvid.FlashVIDConfig]:
    """Two configurations per case, cycling through selections, ratios and aggregations."""
    selection = flashvid.config.SELECTIONS[case % 4]
    ratio = (0.1, 0.25, 0.5)[case % 3]
    return [
        flashvid.FlashVIDConfig(retention_ratio=ratio, selection=selection,
                                spatial_merge=case % 5 != 0),
        flashvid.FlashVIDConfig(retention_ratio=ratio, selection=selection, aggregation="mean",
                                dedupe=True, min_segments=3),
    ]


def check_properties(x: torch.Tensor, a: torch.Tensor, cfg: flashvid.FlashVIDConfig) -> None:
    x0, a0 = x.clone(), a.clone()
    out = flashvid.compress(x, a, cfg)
    frames, n, dim = x.shape
    flat = x.reshape(-1, dim)

    # inputs untouched; output dtype and device follow the input
    assert torch.equal(x, x0) and torch.equal(a, a0)
    assert out.tokens.dtype == x.dtype and out.tokens.device == x.device
    v = out.tokens.shape[0]
    assert out.tokens.shape == (v, dim) and out.indices.shape == out.kinds.shape == (v,)
    assert out.indices.dtype == out.source.dtype == out.parents.dtype == torch.int64
    assert out.source.shape == out.parents.shape == (frames, n)

    # segments: positive, cover the video, at least min_segments where the frames allow it
    lengths = out.segment_lengths.tolist()
    assert all(s > 0 for s in lengths) and sum(lengths) == frames
    assert len(lengths) >= min(cfg.min_segments, frames)

    # the per-frame budget formula
    total, n_adts, n_merge = expected_budget(n, cfg.retention_ratio, cfg.expansion, cfg.alpha)
    assert tuple(out.budget) == (total, n_adts, n_merge)
    frame_of = out.frames
    adts = out.kinds == KIND_ADTS
    assert torch.bincount(frame_of[adts], minlength=frames).tolist() == [n_adts] * frames
    start = 0
    for length in lengths:
        in_seg = (frame_of >= start) & (frame_of < start + length) & ~adts
        if n_merge > 0 and not cfg.spatial_merge:  # every tree root is kept
            assert int(in_seg.sum()) >= n_merge * length
        elif n_merge > 0:
            assert n_merge * length <= int(in_seg.sum()) <= n_merge * length + length
        else:
            assert int(in_seg.sum()) == 0
        start += length

    # ordered by position; dedupe gives unique positions
    assert bool((out.indices[1:] >= out.indices[:-1]).all())
    if cfg.dedupe:
        assert bool((out.indices[1:] > out.indices[:-1]).all())

    # ADTS-kept tokens equal their input bit for bit and represent themselves
    assert torch.equal(out.tokens[adts], flat[out.indices[adts]])
    src = out.source.reshape(-1)
    first_rows = torch.unique(out.indices[adts])
    assert bool((out.kinds[src[first_rows]] == KIND_ADTS).all())
    assert torch.equal(out.indices[src[first_rows]], first_rows)

    # every input token is represented by exactly one row (dropped only with a zero merge budget)
    is_adts_token = torch.zeros(frames * n, dtype=torch.bool, device=x.device)
    is_adts_token[out.indices[adts]] = True
    if n_merge > 0:
        assert bool((src >= 0).all()) and bool((src < v).all())
    else:
        assert torch.equal(src < 0, ~is_adts_token)
    if cfg.dedupe:  # and every row represents at least its own position
        assert torch.equal(src[out.indices], torch.arange(v, device=x.device))

    # TSTM edges join adjacent frames of one segment and never touch ADTS tokens
    par = out.parents.reshape(-1)
    merged = (par >= 0).nonzero().flatten()
    assert bool(((merged // n) - (par[merged] // n) == 1).all())
    assert not bool(is_adts_token[merged].any()) and not bool(is_adts_token[par[merged]].any())
    seg_of_frame = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    assert torch.equal(seg_of_frame[(merged // n).cpu()], seg_of_frame[(par[merged] // n).cpu()])

    # each merged row equals the aggregation of the members that source assigns to it
    # (with dedupe=False a single-frame segment also clusters ADTS tokens: quirk Q3)
    if cfg.dedupe or all(s > 1 for s in lengths):
        check_aggregation(out, flat)


def check_aggregation(out: flashvid.CompressedVideo, flat: torch.Tensor) -> None:
    atol, rtol = TOL[flat.dtype]
    src = out.source.reshape(-1)
    roots = out.roots().reshape(-1)
    par = out.parents.reshape(-1)
    xd = flat.double()
    for row in (out.kinds != KIND_ADTS).nonzero().flatten().tolist():
        members = (src == row).nonzero().flatten()
        assert members.numel() > 0
        trees = []
        for r in torch.unique(roots[members]).tolist():
            tree = members[roots[members] == r]
            if out.config.aggregation == "official":
                trees.append(xd[tree].sum(0) / (1 + int((par[tree] == r).sum())))
            else:
                trees.append(xd[tree].mean(0))
        want = torch.stack(trees).mean(0)
        if out.kinds[row] == flashvid.KIND_ROOT:
            assert len(trees) == 1
        got = out.tokens[row].double()
        err = (got - want).abs().max().item()
        assert err <= atol + rtol * want.abs().max().item(), (row, err)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"F{s[0]}xN{s[1]}")
def test_random_video_properties(shape, dtype, backend):
    frames, n = shape
    case = SHAPES.index(shape) * 3 + DTYPES.index(dtype)
    x, a = random_video(frames, n, DIM, seed=case, dtype=dtype)
    for cfg in configs(case):
        check_properties(x, a, cfg.replace(backend=backend))


@pytest.mark.parametrize("backend", BACKENDS)
def test_spatial_merge_off_keeps_every_root(backend):
    x, a = random_video(6, 49, DIM, seed=3)
    out = flashvid.compress(x, a, segment=False, spatial_merge=False, backend=backend)
    assert not bool((out.kinds == flashvid.KIND_CLUSTER).any())
    non_adts_roots = (out.parents.reshape(-1) < 0).sum() - (out.kinds == KIND_ADTS).sum()
    assert int((out.kinds == flashvid.KIND_ROOT).sum()) == int(non_adts_roots)
    check_aggregation(out, x.reshape(-1, DIM))


@pytest.mark.parametrize("backend", BACKENDS)
def test_temporal_threshold_one_disables_merging(backend):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, 8, generator=gen).expand(4, 16, 8)  # a nearly static clip
    x = (x + 1e-2 * torch.randn(4, 16, 8, generator=gen)).to(device())
    a = torch.full((4, 16), 1 / 16, device=device())
    merged = flashvid.compress(x, a, segment=False, retention_ratio=0.5, backend=backend)
    assert int((merged.parents >= 0).sum()) > 0
    off = flashvid.compress(x, a, segment=False, retention_ratio=0.5, temporal_threshold=1.0,
                            backend=backend)
    assert int((off.parents >= 0).sum()) == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_ttm_merges_only_at_the_same_position(backend):
    """A clip whose content moves by one token per frame (plus a static half): TSTM follows the
    motion, TTM can only merge the static tokens."""
    gen = torch.Generator().manual_seed(11)
    base = torch.randn(49, DIM, generator=gen)
    x = torch.stack([torch.cat([base[:25].roll(t, 0), base[25:]]) for t in range(9)])
    x = (x + 0.05 * torch.randn(x.shape, generator=gen)).to(device())
    a = torch.full((9, 49), 1 / 49, device=device())
    cfg = flashvid.FlashVIDConfig(temporal_merge="ttm", segment=False, retention_ratio=0.2,
                                  backend=backend)
    ttm = flashvid.compress(x, a, cfg)
    par = ttm.parents.reshape(-1)
    merged = (par >= 0).nonzero().flatten()
    assert merged.numel() > 0
    assert torch.equal(par[merged], merged - 49)
    assert bool((merged % 49 >= 25).all())  # only the static half merges
    check_aggregation(ttm, x.reshape(-1, DIM))
    tstm = flashvid.compress(x, a, cfg.replace(temporal_merge="tstm"))
    moving = torch.arange(49 * 9, device=device()) % 49 < 25
    assert int(((tstm.parents.reshape(-1) >= 0) & moving).sum()) > 0  # TSTM follows the motion


def test_budget_formula_examples():
    """§4's table, including the float rounding of 169 * 0.2 * 1.25 = 42.25000000000001."""
    cfg = flashvid.FlashVIDConfig
    assert tuple(cfg(retention_ratio=0.10).budget(196)) == (25, 18, 7)
    assert tuple(cfg(retention_ratio=0.25).budget(196)) == (62, 44, 18)
    assert tuple(cfg(retention_ratio=0.20).budget(169)) == (43, 31, 12)
    assert tuple(cfg(retention_ratio=0.15).budget(256)) == (48, 34, 14)
    assert tuple(cfg(retention_ratio=1.0).budget(10)) == (10, 7, 3)  # clamped to N
