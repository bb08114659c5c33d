"""Stage ``dyseg``: the published segments on every fixture, complementary cuts that are always
new, and the fast stage equal to the reference."""

from __future__ import annotations

import pytest
import torch
from helpers import FIXTURES, compress_fixture, device, random_video

import flashvid
from flashvid import reference
from flashvid.stages import dyseg as stage

BACKENDS = ["reference", "torch", pytest.param("triton", marks=pytest.mark.slow)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_segments(name, backend):
    _, d, out = compress_fixture(name, backend)
    assert out.segment_lengths.tolist() == [s for s in d["segment_lengths"].tolist() if s > 0]


def fast_lengths(x: torch.Tensor, cfg: flashvid.FlashVIDConfig) -> list[int]:
    means = stage.frame_means(x, torch.float64 if x.dtype == torch.float64 else torch.float32)
    sim = stage.transition_similarity(means).tolist() if x.shape[0] > 1 else []
    return lengths(sim, [x.shape[0]], cfg)


def lengths(sim, video_frames, cfg):
    if not cfg.segment:
        return list(video_frames)
    return stage.published_lengths(sim, tuple(video_frames), cfg.segment_threshold,
                                   cfg.min_segments, cfg.complementary_segments)


def repeated_frames(pattern: str, n: int = 6, dim: int = 4) -> torch.Tensor:
    """A clip whose frames repeat: 'AABB' has frames A, A, B, B (identical copies); different
    letters have orthogonal frame means (a scene change)."""
    gen = torch.Generator().manual_seed(3)
    frames = {}
    for i, c in enumerate(sorted(set(pattern))):
        frames[c] = torch.randn(n, dim, generator=gen)
        frames[c][:, i] += 10.0
    return torch.stack([frames[c] for c in pattern]).to(device())


@pytest.mark.parametrize("pattern, minimum", [("AABB", 3), ("AAABBB", 4), ("AAAA", 4),
                                              ("ABAB", 2), ("AABBCC", 5), ("AB", 8),
                                              ("AAB", 3)])
def test_complementary_cuts_are_new(pattern, minimum):
    """Repeated frames have similarity >= 1.0, the published marker of an existing cut: the
    complementary cuts must still be new ones, so the clip gets min(min_segments, F) segments."""
    x = repeated_frames(pattern)
    a = torch.full(x.shape[:2], 1.0 / x.shape[1], device=x.device)
    cfg = flashvid.FlashVIDConfig(min_segments=minimum, retention_ratio=0.5)
    scene_changes = sum(p != q for p, q in zip(pattern, pattern[1:]))
    for backend in ("reference", "torch"):
        out = flashvid.compress(x, a, cfg, backend=backend)
        lengths = out.segment_lengths.tolist()
        want = max(scene_changes + 1, min(minimum, len(pattern)))
        assert len(lengths) == want, (backend, lengths)
        assert all(s > 0 for s in lengths) and sum(lengths) == len(pattern)
    # a real scene change (A -> B) is always a cut
    for t in range(1, len(pattern)):
        if pattern[t] != pattern[t - 1]:
            starts = torch.cumsum(torch.tensor([0] + lengths[:-1]), 0).tolist()
            assert t in starts


def test_no_complementary_cuts_keeps_threshold_cuts_only():
    x = repeated_frames("AABBC")
    cfg = flashvid.FlashVIDConfig(min_segments=8, complementary_segments=False)
    assert reference.dyseg(x, cfg) == [2, 2, 1] == fast_lengths(x, cfg)
    assert reference.dyseg(x, cfg.replace(segment=False)) == [5]


@pytest.mark.parametrize("case", range(12))
def test_fast_stage_equals_reference(case):
    frames = [1, 2, 3, 5, 8, 9, 16, 17, 24, 32, 33, 40][case]
    dtype = [torch.float32, torch.float16, torch.bfloat16, torch.float64][case % 4]
    x, _ = random_video(frames, 7 + case, 5 + case % 3, seed=case, dtype=dtype, rho=0.99)
    for minimum in (1, 4, 8, 40):
        for threshold in (0.5, 0.9, 0.99):
            cfg = flashvid.FlashVIDConfig(min_segments=minimum, segment_threshold=threshold)
            assert fast_lengths(x, cfg) == reference.dyseg(x, cfg), (minimum, threshold)


def test_batch_segments_never_cross_videos():
    a, b = repeated_frames("AAA"), repeated_frames("BBBB")
    cfg = flashvid.FlashVIDConfig(min_segments=2)
    x = torch.cat([a, b])
    means = stage.frame_means(x, torch.float32)
    sim = stage.transition_similarity(means).tolist()
    assert lengths(sim, [3, 4], cfg) == fast_lengths(a, cfg) + fast_lengths(b, cfg)
