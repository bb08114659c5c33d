"""Stage ``adts``: the published picks on every fixture, and the torch backend's stage bit for
bit the reference's on float32 for every shape, small N included; half input decided as its
float32 upcast."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import FIXTURES, compress_fixture, fixture_segments, random_video

import flashvid
from flashvid import reference
from flashvid.backends import get_backend
from flashvid.stages import adts as stage
from flashvid.stages import dyseg
from flashvid.workspace import Workspace

BACKENDS = ["reference", "torch", pytest.param("triton", marks=pytest.mark.slow)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_picks(name, backend):
    _, d, out = compress_fixture(name, backend)
    n = d["input_video_features"].shape[1]
    adts = out.indices[out.kinds == flashvid.KIND_ADTS].cpu().numpy()
    for s, start, length in fixture_segments(d):
        want = d[f"seg{s}_adts_local_indices"]
        for t in range(length):
            frame = start + t
            got = np.sort(adts[(adts >= frame * n) & (adts < (frame + 1) * n)] - frame * n)
            np.testing.assert_array_equal(got, np.sort(want[t]), err_msg=f"segment {s} frame {t}")


def fast_adts(x, a, lengths, cfg, k):
    """The fast stage exactly as the pipeline runs it (torch backend)."""
    backend = get_backend("torch")
    seg = dyseg.from_lengths(lengths, x.device)
    wd = torch.float64 if x.dtype == torch.float64 else torch.float32
    event_mean = stage.event_mean(dyseg.frame_means(x, wd), seg) if cfg.selection == "adts" \
        else None
    gram = k > 0 and cfg.selection != "attention"
    with Workspace(x.device) as ws:
        stats = None
        if gram:
            stats = backend.token_norms(x, ws, unit=True)
            stats = backend.frame_stats(x, stats, ws, event_mean=event_mean, gram=True)
        return stage.adts(x, a, stats, cfg.selection, k, cfg.dedupe, backend, ws)


SHAPES = [(1, 1, 1), (1, 2, 3), (3, 5, 2), (4, 7, 16), (2, 13, 64), (5, 14, 9), (3, 15, 1),
          (6, 49, 24), (2, 196, 64), (4, 266, 8), (1, 729, 4)]


@pytest.mark.parametrize("selection", flashvid.config.SELECTIONS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "F{}xN{}xD{}".format(*s))
def test_torch_stage_equals_reference_bit_for_bit(shape, selection):
    frames, n, dim = shape
    x, a = random_video(frames, n, dim, seed=sum(shape), dev=torch.device("cpu"))
    lengths = [frames] if frames < 3 else [1, frames - 3, 2]
    for dedupe in (False, True):
        cfg = flashvid.FlashVIDConfig(selection=selection, dedupe=dedupe)
        for k in sorted({1, min(n, max(1, n // 3), 24), n if n <= 64 else 1}):
            want = reference.adts(x, a, lengths, cfg, k)
            got = fast_adts(x, a, lengths, cfg, k)
            assert torch.equal(got, want), (k, dedupe)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_input_is_decided_as_its_float32_upcast(dtype):
    x, a = random_video(6, 49, 32, seed=4, dtype=dtype, dev=torch.device("cpu"))
    for selection in flashvid.config.SELECTIONS:
        cfg = flashvid.FlashVIDConfig(selection=selection)
        want = reference.adts(x.float(), a.float(), [2, 4], cfg, 12)
        assert torch.equal(reference.adts(x, a, [2, 4], cfg, 12), want)
        assert torch.equal(fast_adts(x, a, [2, 4], cfg, 12), want)


def test_attention_takes_the_most_important_tokens_with_ties_as_topk():
    """Equal importance everywhere: every backend picks what torch.topk picks (as published),
    and in general the picks carry the k largest importances."""
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(4, 30, generator=gen).mul(4).floor().div(4)  # many exact ties
    x = torch.randn(4, 30, 8, generator=gen)
    cfg = flashvid.FlashVIDConfig(selection="attention")
    for k in (1, 5, 17, 30):
        want = reference.adts(x, a, [4], cfg, k)
        assert torch.equal(fast_adts(x, a, [4], cfg, k), want)
        kept = torch.gather(a, 1, want)
        kth = torch.sort(a, dim=1, descending=True).values[:, k - 1 : k]
        assert bool((kept >= kth).all())  # nothing less important than the k-th value is kept


@pytest.mark.parametrize("shape", [(3, 64, 5), (2, 65, 1), (2, 169, 64), (2, 196, 3584),
                                   (1, 266, 1152), (1, 729, 32), (1, 1024, 96)],
                         ids=lambda s: "F{}xN{}xD{}".format(*s))
def test_symmetric_gram_mirrors_the_block_products(shape):
    """The torch backend computes three quarters of each frame's Gram and mirrors the rest. The
    result is exactly symmetric, and it is the whole product up to the products' rounding:
    bit for bit where the BLAS rounds an entry the same whatever the operands' shape (it did
    on the AMD EPYC machine the parity fixtures were checked on), within a few units in the
    last place where it does not (MKL on an Intel AVX-512 Xeon, at 196 tokens of 3584)."""
    from flashvid.backends.pytorch import SYMMETRIC_MIN_TOKENS, symmetric_gram

    gen = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(*shape, generator=gen)
    unit = reference.unit_rows(x)
    want = torch.bmm(unit, unit.transpose(1, 2))
    got = symmetric_gram(unit, torch.full_like(want, float("nan")))
    assert torch.equal(got, got.transpose(1, 2))
    if shape[1] < SYMMETRIC_MIN_TOKENS:
        assert torch.equal(got, want)
    torch.testing.assert_close(got, want, rtol=0, atol=8 * torch.finfo(torch.float32).eps)


@pytest.mark.parametrize("shape", [(1, 2, 5), (2, 3, 4), (3, 7, 7), (2, 33, 40), (4, 196, 196),
                                   (2, 267, 266), (1, 1024, 64)], ids=str)
def test_top2_is_topks_second_value(shape):
    """The tournament the torch backend takes each column's runner-up with equals the second
    value of torch.topk bit for bit, repeats (rounded values) and signed zeros included."""
    from flashvid.backends.pytorch import top2

    gen = torch.Generator().manual_seed(sum(shape))
    m = torch.randn(*shape, generator=gen).round(decimals=1)  # many repeats
    m[m == 0] = -0.0
    m[:, 0, :] = m.amax(dim=1)  # the maximum twice in every column: the runner-up is it
    for matrix in (m, -m, torch.randn(*shape, generator=gen)):
        with Workspace("cpu") as ws:
            got = top2(matrix.clone(), ws).clone()
        want = torch.topk(matrix, 2, dim=1).values[:, 1]
        assert torch.equal(got, want)


def test_adts_with_negative_event_terms_equals_reference():
    """Where a token's event term e_j = <x_j, mu_S> is negative, its column's calibrated
    distance grows with the similarity: the torch backend takes that column's second-smallest
    similarity (by negating it); the picks are the reference's."""
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(6, 40, 16, generator=gen)
    x[:, :20] -= 2.0 * x[:, :20].mean(dim=(0, 1))  # half the tokens point away from the mean
    a = torch.rand(6, 40, generator=gen)
    seg = dyseg.from_lengths([6], x.device)
    event = x.to(torch.float32) @ stage.event_mean(dyseg.frame_means(x, torch.float32),
                                                   seg)[0]
    assert bool((event < 0).any()) and bool((event > 0).any())
    for k in (1, 3, 12):
        for dedupe in (False, True):
            cfg = flashvid.FlashVIDConfig(selection="adts", dedupe=dedupe)
            assert torch.equal(fast_adts(x, a, [6], cfg, k),
                               reference.adts(x, a, [6], cfg, k)), (k, dedupe)
