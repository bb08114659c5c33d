"""A seeded fuzz of the whole contract of ``compress`` on degenerate inputs: zero rows, constant
and duplicate frames, peaked and uniform importance, extreme magnitudes, strided and expanded
views, F = 1, N = 1, D = 1, every dtype; the reference and the torch backend must agree."""

from __future__ import annotations

import random

import pytest
import torch
from helpers import device

import flashvid
from flashvid import KIND_ADTS

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


def make_case(seed: int):
    """(tokens, cls_attn, config) of one seeded degenerate case."""
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    frames = rng.choice([1, 1, 2, 3, 5, 8, 17])
    n = rng.choice([1, 2, 3, 7, 16, 30, 49])
    dim = rng.choice([1, 2, 3, 8, 33])
    base = torch.randn(frames, n, dim, generator=gen)
    kind = rng.choice(["random", "zero_rows", "zero_video", "constant_frames", "duplicates",
                       "static", "huge", "tiny", "expanded", "strided", "integers"])
    if kind == "zero_rows":
        base[torch.rand(frames, n, generator=gen) < 0.3] = 0.0
    elif kind == "zero_video":
        base.zero_()
    elif kind == "constant_frames":
        base[:] = base[:, :1]  # every token of a frame equal
    elif kind == "duplicates":
        base[1::2] = base[0::2][: base[1::2].shape[0]]
    elif kind == "static":
        base[:] = base[:1]
    elif kind == "huge":
        base *= 1e7
    elif kind == "tiny":
        base *= 1e-30
    elif kind == "integers":
        base = base.round()
    weights = rng.choice(["softmax", "peaked", "uniform", "zero_some"])
    if weights == "softmax":
        a = torch.softmax(torch.randn(frames, n, generator=gen), -1)
    elif weights == "peaked":
        a = torch.zeros(frames, n)
        a[:, rng.randrange(n)] = 1.0
    elif weights == "uniform":
        a = torch.full((frames, n), 1.0 / n)
    else:
        a = torch.rand(frames, n, generator=gen) * (torch.rand(frames, n, generator=gen) > 0.5)
    dtype = rng.choice(DTYPES)
    if kind == "huge" and dtype == torch.float16:
        dtype = torch.float32  # 1e7 is not a float16 value
    x = base.to(dtype)
    if kind == "expanded":
        x = x[:1].expand(frames, n, dim)  # stride 0 over frames
    elif kind == "strided":
        x = torch.cat([x, x], dim=2)[:, :, ::2]  # non-unit last stride
    cfg = flashvid.FlashVIDConfig(
        retention_ratio=rng.choice([0.05, 0.1, 0.3, 0.7, 1.0]), alpha=rng.choice([0.0, 0.7, 1.0]),
        selection=rng.choice(flashvid.config.SELECTIONS),
        temporal_threshold=rng.choice([-1.0, 0.0, 0.8, 1.0]),
        segment=rng.random() < 0.8, min_segments=rng.choice([1, 3, 8]),
        complementary_segments=rng.random() < 0.8, aggregation=rng.choice(["official", "mean"]),
        dedupe=rng.random() < 0.3, spatial_merge=rng.random() < 0.9,
        temporal_merge=rng.choice(["tstm", "tstm", "ttm"]))
    return x.to(device()), a.to(dtype).to(device()), cfg


def check_contract(x, a, cfg, out):
    frames, n, dim = x.shape
    v = out.tokens.shape[0]
    assert out.tokens.shape == (v, dim) and out.tokens.dtype == x.dtype
    assert bool(torch.isfinite(out.tokens).all()), "finite input gave a non-finite output"
    assert out.indices.shape == out.kinds.shape == (v,)
    assert bool((out.indices[1:] >= out.indices[:-1]).all())
    assert v == 0 or (0 <= int(out.indices.min()) and int(out.indices.max()) < frames * n)
    lengths = out.segment_lengths.tolist()
    assert all(s > 0 for s in lengths) and sum(lengths) == frames
    if cfg.segment and cfg.complementary_segments:
        assert len(lengths) >= min(cfg.min_segments, frames)
    budget = cfg.budget(n)
    adts = out.kinds == KIND_ADTS
    assert int(adts.sum()) == frames * budget.adts
    assert torch.equal(out.tokens[adts], x.reshape(-1, dim)[out.indices[adts]])
    src = out.source.reshape(-1)
    assert bool((src < v).all())
    if budget.merge > 0:  # every input token is represented by an output row
        assert bool((src >= 0).all())
    else:  # only ADTS tokens are represented
        kept = torch.zeros(frames * n, dtype=torch.bool, device=x.device)
        kept[out.indices] = True
        assert torch.equal(src >= 0, kept)
    if cfg.dedupe:
        assert bool((out.indices[1:] > out.indices[:-1]).all())


@pytest.mark.parametrize("seed", range(120))
def test_contract_on_degenerate_inputs(seed):
    x, a, cfg = make_case(seed)
    x0, a0 = x.clone(), a.clone()
    outs = {}
    for backend in ("reference", "torch"):
        try:
            outs[backend] = flashvid.compress(x, a, cfg, backend=backend)
        except ValueError as err:  # the one refusal finite input may get
            assert "float16's largest value" in str(err), err
            outs[backend] = err
    assert torch.equal(x, x0) and torch.equal(a, a0)
    ref, fast = outs["reference"], outs["torch"]
    assert type(ref) is type(fast), (ref, fast)
    if isinstance(ref, ValueError):
        return
    check_contract(x, a, cfg, ref)
    check_contract(x, a, cfg, fast)
    assert torch.equal(ref.indices, fast.indices)
    assert torch.equal(ref.kinds, fast.kinds)
    assert torch.equal(ref.source, fast.source)
    assert ref.segment_lengths.tolist() == fast.segment_lengths.tolist()
