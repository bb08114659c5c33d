"""Bad input raises a clear TypeError/ValueError naming the problem; nothing crashes deep inside."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import device

import flashvid


def video(frames=3, n=10, dim=8):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(frames, n, dim, generator=gen).to(device())
    a = torch.softmax(torch.randn(frames, n, generator=gen), -1).to(device())
    return x, a


def poisoned(t: torch.Tensor, value: float) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[t.numel() // 2] = value
    return t


X, A = video()
BAD_INPUTS = [
    ("tokens rank 2", lambda: (X[0], A), ValueError, r"tokens must have shape \[frames"),
    ("tokens rank 4", lambda: (X[None], A), ValueError, r"3 dims"),
    ("cls_attn rank 1", lambda: (X, A[0]), ValueError, r"cls_attn must have shape"),
    ("frame mismatch", lambda: (X, A[:2]), ValueError, r"does not match tokens"),
    ("token mismatch", lambda: (X, A[:, :5]), ValueError, r"does not match tokens"),
    ("zero frames", lambda: (X[:0], A[:0]), ValueError, r"non-empty"),
    ("zero tokens", lambda: (X[:, :0], A[:, :0]), ValueError, r"non-empty"),
    ("zero dim", lambda: (X[:, :, :0], A), ValueError, r"non-empty"),
    ("int tokens", lambda: (X.long(), A), TypeError, r"tokens must be a floating tensor"),
    ("bool tokens", lambda: (X > 0, A), TypeError, r"tokens must be a floating tensor"),
    ("complex tokens", lambda: (torch.complex(X, X), A), TypeError, r"floating tensor"),
    ("int cls_attn", lambda: (X, (A * 100).int()), TypeError, r"cls_attn must be a floating"),
    ("numpy tokens", lambda: (X.cpu().numpy(), A), TypeError, r"torch.Tensor, got ndarray"),
    ("list cls_attn", lambda: (X, A.tolist()), TypeError, r"cls_attn must be a torch.Tensor"),
    ("NaN tokens", lambda: (poisoned(X, math.nan), A), ValueError, r"tokens contain NaN or Inf"),
    ("Inf tokens", lambda: (poisoned(X, math.inf), A), ValueError, r"tokens contain NaN or Inf"),
    ("-Inf tokens", lambda: (poisoned(X, -math.inf), A), ValueError, r"NaN or Inf"),
    ("NaN cls_attn", lambda: (X, poisoned(A, math.nan)), ValueError, r"cls_attn contains NaN"),
    ("Inf cls_attn", lambda: (X, poisoned(A, math.inf)), ValueError, r"cls_attn contains NaN"),
    ("negative cls_attn", lambda: (X, poisoned(A, -1e-3)), ValueError, r"negative"),
    ("huge tokens", lambda: (poisoned(X, 1e12), A), ValueError, r"magnitude"),
    ("huge cls_attn", lambda: (X, poisoned(A, 1e9)), ValueError, r"at most"),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input(case):
    _, make, error, pattern = case
    x, a = make()
    with pytest.raises(error, match=pattern):
        flashvid.compress(x, a)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device (CUDA)")
def test_tensors_on_different_devices():
    x, a = video()
    with pytest.raises(ValueError, match="same device"):
        flashvid.compress(x.cpu(), a.to(device()))


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("kind", ["meta", "sparse", "sparse_csr", "nested"])
def test_tensor_kinds_without_dense_values_are_rejected(kind):
    """Meta, sparse and nested tensors get a TypeError naming the kind, before any arithmetic."""
    x, a = video()
    make = {"meta": lambda t: torch.empty(t.shape, device="meta"),
            "sparse": lambda t: t.cpu().to_sparse(),
            "sparse_csr": lambda t: t.cpu().reshape(t.shape[0], -1).to_sparse_csr(),
            "nested": lambda t: torch.nested.nested_tensor(list(t.cpu()))}[kind]
    with pytest.raises(TypeError, match="meta|dense"):
        flashvid.compress(x, make(a))
    if kind != "sparse_csr":
        with pytest.raises(TypeError, match="meta|dense"):
            flashvid.compress(make(x), a)


BAD_CONFIG = [
    ({"retention_ratio": 0.0}, ValueError, r"retention_ratio must be in \(0.0, 1.0\]"),
    ({"retention_ratio": 1.5}, ValueError, r"retention_ratio"),
    ({"retention_ratio": -0.1}, ValueError, r"retention_ratio"),
    ({"retention_ratio": math.nan}, ValueError, r"retention_ratio must not be NaN"),
    ({"retention_ratio": "0.1"}, TypeError, r"retention_ratio must be a real number"),
    ({"expansion": 0}, ValueError, r"expansion"),
    ({"alpha": 1.2}, ValueError, r"alpha must be in \[0.0, 1.0\]"),
    ({"alpha": -0.1}, ValueError, r"alpha"),
    ({"temporal_threshold": 1.01}, ValueError, r"temporal_threshold must be in \[-1.0, 1.0\]"),
    ({"temporal_threshold": -2}, ValueError, r"temporal_threshold"),
    ({"segment_threshold": 2}, ValueError, r"segment_threshold"),
    ({"llm_retention_ratio": 0}, ValueError, r"llm_retention_ratio"),
    ({"min_segments": 0}, ValueError, r"min_segments must be >= 1"),
    ({"min_segments": 2.5}, TypeError, r"min_segments must be an int"),
    ({"dpc_knn": 0}, ValueError, r"dpc_knn"),
    ({"pruning_layer": 0}, ValueError, r"pruning_layer"),
    ({"selection": "attn_div_v2"}, ValueError, r"selection must be one of \['adts', 'adts_v1'"),
    ({"aggregation": "sum"}, ValueError, r"aggregation must be one of \['official', 'mean'\]"),
    ({"backend": "cuda"}, ValueError, r"backend must be one of"),
    ({"dedupe": 1}, TypeError, r"dedupe must be a bool"),
    ({"retention_ratio": 1e-200, "expansion": 1e-200}, ValueError, r"rounds to 0"),
    ({"retention": 0.1}, TypeError, r"unknown FlashVIDConfig field\(s\) \['retention'\]"),
]


@pytest.mark.parametrize("case", BAD_CONFIG, ids=[str(c[0]) for c in BAD_CONFIG])
def test_bad_config(case):
    overrides, error, pattern = case
    x, a = video()
    with pytest.raises(error, match=pattern):
        flashvid.compress(x, a, **overrides)
    if "retention" not in overrides:  # the constructor validates too
        with pytest.raises(error, match=pattern):
            flashvid.FlashVIDConfig(**overrides)


def test_config_is_frozen_and_presets_differ():
    cfg = flashvid.FlashVIDConfig()
    with pytest.raises(AttributeError):
        cfg.retention_ratio = 0.5  # type: ignore[misc]
    assert flashvid.FlashVIDConfig.qwen2_5_vl().selection == "adts_v1"
    assert flashvid.FlashVIDConfig.qwen2_5_vl().min_segments == 4
    q3 = flashvid.FlashVIDConfig.qwen3_vl()
    assert (q3.pruning_layer, q3.llm_retention_ratio, q3.min_segments) == (28, 0.1, 4)
    assert flashvid.FlashVIDConfig.llava_video(retention_ratio=0.2).retention_ratio == 0.2
    with pytest.raises(ValueError, match="unknown preset"):
        flashvid.FlashVIDConfig.preset("llava-next")
    with pytest.raises(TypeError, match="config must be a FlashVIDConfig"):
        flashvid.compress(*video(), config={"retention_ratio": 0.1})


def test_numpy_scalars_in_the_config():
    """numpy scalars (as from arrays or argparse-free configs) are accepted as the Python numbers
    they stand for."""
    cfg = flashvid.FlashVIDConfig(retention_ratio=np.float32(0.25), expansion=np.float64(1.25),
                                  min_segments=np.int64(4), dpc_knn=np.int32(5),
                                  dedupe=np.bool_(True))
    assert (type(cfg.retention_ratio), type(cfg.min_segments), type(cfg.dedupe)) == \
        (float, int, bool)
    assert cfg.budget(196) == flashvid.FlashVIDConfig(
        retention_ratio=float(np.float32(0.25)), min_segments=4, dpc_knn=5,
        dedupe=True).budget(196)
    with pytest.raises(TypeError, match="min_segments must be an int"):
        flashvid.FlashVIDConfig(min_segments=np.float32(4))


def test_budget_never_overflows():
    """retention * expansion >= 1 keeps every token, however large the product."""
    cfg = flashvid.FlashVIDConfig(retention_ratio=1.0, expansion=1e308)
    assert tuple(cfg.budget(196)) == (196, 138, 58)
    x, a = video()
    assert flashvid.compress(x, a, cfg).tokens.shape[0] >= x.shape[0] * x.shape[1]


def test_float16_overflow_is_an_error_not_inf():
    """Finite float16 input never gives Inf: the published tree arithmetic grows with chain
    length, and a result float16 cannot hold raises, naming the remedy."""
    base = torch.tensor([[48000., 0.], [0., 48000.], [-48000., 0.], [0., -48000.]])
    x = base.expand(3, 4, 2).half().contiguous().to(device())
    a = torch.full((3, 4), .25, dtype=torch.float16, device=device())
    kw = dict(retention_ratio=.25, alpha=.5, segment=False)
    for backend in ("reference", "torch"):
        with pytest.raises(ValueError, match="aggregation='mean'"):
            flashvid.compress(x, a, backend=backend, **kw)
        out = flashvid.compress(x, a, backend=backend, aggregation="mean", **kw)
        assert bool(torch.isfinite(out.tokens).all())
        assert bool(torch.isfinite(flashvid.compress(x.float(), a.float(), backend=backend,
                                                     **kw).tokens).all())


def test_inference_mode_then_no_grad():
    """A call inside torch.inference_mode() must not break later calls on the thread (the CPU
    path reuses buffers)."""
    x, a = video(8, 64, 32)
    with torch.inference_mode():
        first = flashvid.compress(x, a, backend="torch")
    with torch.no_grad():
        again = flashvid.compress(x, a, backend="torch")
    plain = flashvid.compress(x, a, backend="torch")
    assert torch.equal(first.indices, again.indices) and torch.equal(again.indices, plain.indices)
    assert torch.equal(first.tokens, plain.tokens)


def test_numpy_inputs_are_rejected_not_converted():
    x, a = video()
    with pytest.raises(TypeError, match="torch.Tensor"):
        flashvid.compress(np.asarray(x.cpu()), np.asarray(a.cpu()))
