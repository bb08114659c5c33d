"""What the vLLM plugin does when FlashVID fails inside a request, and its start-up check
(flashvid.integrations.vllm.model; no vLLM needed)."""

from __future__ import annotations

import logging

import pytest
import torch

from flashvid import FlashVIDConfig
from flashvid.integrations.vllm.model import fallback_selection, robust_compress, startup_check

CONFIG = FlashVIDConfig.preset("qwen2_5_vl", exact_count=True, retention_ratio=0.3)


def test_faulty_videos_keep_an_evenly_spaced_selection(caplog):
    good = torch.randn(4, 6, 8)
    bad = good.clone()
    bad[1, 2, 3] = float("nan")
    scores = [torch.rand(4, 6), torch.rand(4, 6)]
    counts = [CONFIG.output_length(4, 6)] * 2
    with caplog.at_level(logging.ERROR, logger="vllm.flashvid"):
        results = robust_compress([good, bad], scores, CONFIG, counts)
    assert "compression failed" in caplog.text
    for result, count in zip(results, counts):  # the whole call falls back, with exact counts
        assert result.tokens.shape == (count, 8)
        assert torch.equal(result.indices, torch.sort(result.indices).values)
        assert bool(torch.isfinite(result.tokens).all())


def test_healthy_videos_are_compressed():
    video, score = torch.randn(4, 6, 8), torch.rand(4, 6)
    (result,) = robust_compress([video], [score], CONFIG, [CONFIG.output_length(4, 6)])
    import flashvid

    want = flashvid.compress(video, score, CONFIG, num_tokens=CONFIG.output_length(4, 6))
    assert torch.equal(result.tokens, want.tokens) and torch.equal(result.indices, want.indices)


def test_fallback_selection_is_exact_and_deterministic():
    video = torch.arange(5 * 7 * 2, dtype=torch.float32).view(5, 7, 2)
    for count in (1, 3, 17, 35):
        picked = fallback_selection(video, count)
        assert picked.indices.numel() == count == picked.tokens.shape[0]
        assert bool((picked.indices[1:] > picked.indices[:-1]).all())
        assert torch.equal(picked.tokens, video.reshape(-1, 2)[picked.indices])


def test_startup_check_refuses_what_cannot_run_here(monkeypatch):
    startup_check(CONFIG, "cpu", torch.float32)
    startup_check(CONFIG, "cpu", torch.bfloat16)
    import flashvid

    def broken(*args, **kwargs):  # what e.g. backend="triton" gives on a CPU engine
        raise ValueError("backend 'triton' cannot run here: no CUDA")

    monkeypatch.setattr(flashvid, "compress_batch", broken)
    with pytest.raises(ValueError, match="cannot run on this engine's device.*triton"):
        startup_check(CONFIG, "cpu", torch.float32)
