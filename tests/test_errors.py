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


def test_different_devices_via_meta():
    """The device check runs before any arithmetic (a meta tensor stands in for a second device)."""
    x, a = video()
    with pytest.raises(ValueError, match="same device"):
        flashvid.compress(x.cpu(), torch.empty(a.shape, device="meta"))


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


def test_numpy_inputs_are_rejected_not_converted():
    x, a = video()
    with pytest.raises(TypeError, match="torch.Tensor"):
        flashvid.compress(np.asarray(x.cpu()), np.asarray(a.cpu()))
