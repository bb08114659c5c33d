"""The fast backends give the reference's answer on random videos (indices exactly, values within
the tolerance table); half-precision inputs agree with the reference run on the same rounded
values in float32."""

from __future__ import annotations

import pytest
import torch
from helpers import TOL, device, random_video

import flashvid

FAST = ["torch", "triton"]
CASES = [
    # (frames, n, dim, config overrides)
    (12, 196, 64, {}),
    (9, 169, 48, {"retention_ratio": 0.15, "aggregation": "mean"}),
    (8, 266, 32, {"selection": "adts_v1", "min_segments": 4}),
    (7, 49, 16, {"selection": "attention", "retention_ratio": 0.25}),
    (6, 50, 24, {"selection": "diversity", "dedupe": True}),
    (10, 64, 16, {"segment": False, "retention_ratio": 0.3}),
    (5, 37, 8, {"temporal_merge": "ttm", "retention_ratio": 0.4}),
    (4, 30, 12, {"spatial_merge": False}),
    (6, 20, 8, {"retention_ratio": 0.9, "temporal_threshold": 0.2}),  # soft threshold path
    (3, 1, 4, {}),
    (1, 7, 5, {"retention_ratio": 0.5}),
    (33, 9, 3, {"alpha": 0.0, "retention_ratio": 0.5}),
    (5, 12, 6, {"alpha": 1.0, "retention_ratio": 0.5}),
    (6, 16, 1, {"retention_ratio": 0.5}),
]


def assert_same(got: flashvid.CompressedVideo, want: flashvid.CompressedVideo, dtype) -> None:
    assert got.segment_lengths.tolist() == want.segment_lengths.tolist()
    assert torch.equal(got.indices, want.indices)
    assert torch.equal(got.kinds, want.kinds)
    assert torch.equal(got.source, want.source)
    assert torch.equal(got.parents, want.parents)
    assert got.budget == want.budget
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(got.tokens.double(), want.tokens.double(), atol=atol, rtol=rtol)


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("case", range(len(CASES)))
def test_backend_matches_reference_float32(backend, case):
    frames, n, dim, overrides = CASES[case]
    x, a = random_video(frames, n, dim, seed=100 + case)
    want = flashvid.compress(x, a, backend="reference", **overrides)
    got = flashvid.compress(x, a, backend=backend, **overrides)
    assert_same(got, want, torch.float32)


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", [0, 1, 2, 4])
def test_half_inputs_match_reference_on_rounded_values(backend, dtype, case):
    frames, n, dim, overrides = CASES[case]
    x, a = random_video(frames, n, dim, seed=200 + case, dtype=dtype)
    want = flashvid.compress(x.float(), a.float(), backend="reference", **overrides)
    got = flashvid.compress(x, a, backend=backend, **overrides)
    assert got.tokens.dtype == dtype
    assert_same(got, want.__class__(**{**want.__dict__, "tokens": want.tokens.to(dtype)}), dtype)


def test_float64_input_matches_reference():
    x, a = random_video(6, 49, 16, seed=7, dtype=torch.float64)
    assert_same(flashvid.compress(x, a, backend="torch"),
                flashvid.compress(x, a, backend="reference"), torch.float64)
    with pytest.raises(ValueError, match="float16/bfloat16/float32 tokens; use backend='torch'"):
        flashvid.compress(x, a, backend="triton")


def test_auto_dispatch():
    from flashvid.compress import resolve_backend

    x, _ = random_video(2, 4, 4, seed=0, dev=torch.device("cpu"))
    assert resolve_backend("auto", x) == "torch"  # CPU tensors: torch even under the interpreter
    assert resolve_backend("auto", x.double()) == "torch"
    if torch.cuda.is_available():
        assert resolve_backend("auto", x.to(device())) == "triton"
        assert resolve_backend("auto", x.to(device()).double()) == "torch"


@pytest.mark.parametrize("backend", ["reference", *FAST])
def test_compress_batch_equals_single_videos(backend):
    """Videos of different lengths (and one of another N) in one call give each video's own
    result; segments never cross videos."""
    videos = [random_video(f, n, 24, seed=300 + i) for i, (f, n) in
              enumerate([(7, 49), (3, 49), (1, 49), (12, 49), (5, 36)])]
    cfg = flashvid.FlashVIDConfig(retention_ratio=0.2, min_segments=3, backend=backend)
    outs = flashvid.compress_batch([v[0] for v in videos], [v[1] for v in videos], cfg)
    assert len(outs) == len(videos)
    for (x, a), got in zip(videos, outs):
        want = flashvid.compress(x, a, cfg)
        assert_same(got, want, torch.float32)
        assert got.segment_lengths.sum().item() == x.shape[0]


def test_compress_batch_errors():
    x, a = random_video(3, 10, 8, seed=0)
    with pytest.raises(ValueError, match="one cls_attn per video"):
        flashvid.compress_batch([x, x], [a])
    with pytest.raises(TypeError, match="sequences"):
        flashvid.compress_batch(x, a)
    with pytest.raises(ValueError, match="video 1: cls_attn has negative values"):
        flashvid.compress_batch([x, x], [a, -a])
    bad = x.clone()
    bad[1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="video 2: tokens contain NaN"):
        flashvid.compress_batch([x, x, bad], [a, a, a])
    # one width, dtype and device per batch: the rows form one flat tensor
    x9, _ = random_video(3, 10, 9, seed=1)
    with pytest.raises(ValueError, match="same feature width D; video 0 has 8 and video 1 has 9"):
        flashvid.compress_batch([x, x9], [a, a])
    with pytest.raises(ValueError, match="same dtype; video 0 has torch.float32 and video 1 has "
                                         "torch.float64"):
        flashvid.compress_batch([x, x.double()], [a, a.double()])
    with pytest.raises(ValueError, match="same feature width D"):
        flashvid.compress_batch([x, x9], [a, a], num_tokens=6)
    # different tokens per frame are fine: separate groups, one flat tensor of rows
    x20, a20 = random_video(2, 20, 8, seed=2)
    both = flashvid.compress_batch([x, x20], [a, a20], num_tokens=[5, 7])
    assert both.tokens.shape == (12, 8) and both.offsets.tolist() == [0, 5, 12]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="counts CUDA synchronisations")
@pytest.mark.parametrize("backend", FAST)
def test_gpu_path_synchronises_only_for_data_dependent_sizes(backend):
    """Two host synchronisations on the common path: the segment cuts (with the input checks)
    and the per-frame spatial-merge sizes (with the soft-threshold check)."""
    import warnings

    from flashvid.synthetic import synthetic_clip

    x, a = synthetic_clip(32, 196, 1024, dtype=torch.bfloat16)
    x, a = x.to(device()), a.to(device())
    flashvid.compress(x, a, backend=backend)  # warm-up: compilation, allocator
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            flashvid.compress(x, a, backend=backend)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    assert len(syncs) == 2, [str(w.message) for w in syncs]


def test_threads_do_not_share_workspaces():
    """The CPU torch path keeps a per-thread workspace: concurrent calls give sequential results."""
    from concurrent.futures import ThreadPoolExecutor

    videos = [random_video(6, 64, 32, seed=400 + i, dev=torch.device("cpu")) for i in range(4)]
    want = [flashvid.compress(x, a, backend="torch") for x, a in videos]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda v: flashvid.compress(*v, backend="torch"), videos * 3))
    for i, out in enumerate(got):
        assert_same(out, want[i % 4], torch.float32)


@pytest.mark.parametrize("backend", FAST)
def test_inputs_that_require_grad(backend):
    """Decisions are made without autograd; the output values stay differentiable."""
    x, a = random_video(6, 49, 16, seed=8)
    x = x.clone().requires_grad_(True)
    out = flashvid.compress(x, a, backend=backend, retention_ratio=0.3)
    assert_same(out, flashvid.compress(x.detach(), a, backend=backend, retention_ratio=0.3),
                torch.float32)
    out.tokens.sum().backward()
    grad = x.grad.reshape(-1, 16)
    represented = out.source.reshape(-1) >= 0
    assert bool((grad[represented].abs().sum(-1) > 0).all())  # every represented token counts


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("batch", [1, 2, 3, 5, 7])
def test_products_split_batches_equal_the_product(threads, batch):
    """``products`` (bmm with the batch split into whole multiples of the thread count and
    single matrices) writes every matrix of the batch, each within float32 rounding of the
    float64 product, transposed operands included; one matrix alone is bit for bit bmm's."""
    from flashvid.stages.util import products

    gen = torch.Generator().manual_seed(batch)
    a = torch.randn(batch, 33, 70, generator=gen)
    b = torch.randn(batch, 41, 70, generator=gen).transpose(1, 2)
    out = torch.full((batch, 33, 41), float("nan"))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = products(a, b, out)
        alone = [torch.bmm(a[i : i + 1], b[i : i + 1])[0] for i in range(batch)]
    finally:
        torch.set_num_threads(before)
    assert got.data_ptr() == out.data_ptr()
    want = torch.bmm(a.double(), b.double())
    assert torch.allclose(out.double(), want, rtol=0, atol=1e-4)
    whole = batch - batch % threads if batch > 1 else 0  # matrices multiplied in one call
    for i in range(whole, batch):  # the rest: each alone, as bmm computes it alone
        assert torch.equal(out[i], alone[i])
