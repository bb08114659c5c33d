"""Demo inputs: clips from bundled photographs (offline), patch features, user frames, grids."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch

from flashvid.demo.clips import CLIP_NAMES, demo_clip, photo
from flashvid.demo.features import importance, patch_features, patchify, projection
from flashvid.demo.frames import load_frames, match_grid, parse_grid


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("the demo tried to use the network")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_photographs_ship_with_scikit_image(no_network):
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        img = photo(name)
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
        assert min(img.shape[:2]) >= 300 and img.std() > 20
    with pytest.raises(ValueError, match=r"unknown photograph 'lena'; expected one of"):
        photo("lena")


@pytest.mark.parametrize("name", CLIP_NAMES)
def test_clips_are_seeded_frames_with_the_described_motion(name, no_network):
    clip = demo_clip(name, frames=16, size=64, seed=1)
    assert clip.frames.shape == (16, 64, 64, 3) and clip.frames.dtype == np.uint8
    assert np.array_equal(clip.frames, demo_clip(name, frames=16, size=64, seed=1).frames)
    assert not np.array_equal(clip.frames, demo_clip(name, frames=16, size=64, seed=2).frames)
    f = clip.frames.astype(np.float64)
    step = np.abs(f[1:] - f[:-1]).mean(axis=(1, 2, 3))  # [15] mean change per frame
    if name == "scene-cut":
        assert clip.scene_cuts == (8,)
        assert step[7] > 2 * np.delete(step, 7).max()  # the cut dominates
    else:
        assert clip.scene_cuts == ()
        assert (step > 3).all()  # the camera or the object moves throughout
    if name == "moving-object":  # a static shot: the bottom-right corner never changes much
        corner = f[:, -12:, -12:]
        assert np.abs(corner - corner[0]).max() < 8


def test_clip_errors():
    with pytest.raises(ValueError, match=r"unknown demo clip 'dance'; expected one of"):
        demo_clip("dance")
    with pytest.raises(ValueError, match=r"at least 2 frames"):
        demo_clip("pan-zoom", frames=1)


def test_patchify_is_raster_order():
    rows, cols, p = 3, 4, 5
    frame = np.zeros((rows * p, cols * p, 3), dtype=np.uint8)
    for r in range(rows):
        for c in range(cols):
            frame[r * p : (r + 1) * p, c * p : (c + 1) * p] = 10 * (r * cols + c)
    patches = patchify(frame[None], p)
    assert patches.shape == (1, rows * cols, p * p * 3)
    for n in range(rows * cols):
        assert torch.allclose(patches[0, n], torch.full((p * p * 3,), 10 * n / 255.0))
    with pytest.raises(ValueError, match=r"frame size 15x20 must be a multiple of the patch"):
        patchify(frame[None], 4)


def test_patch_features_and_importance():
    clip = demo_clip("pan-zoom", frames=4, size=64)
    x = patch_features(clip.frames, patch=16, dim=24, seed=0)
    assert x.shape == (4, 16, 24) and x.dtype == torch.float32
    # LayerNorm without affine: zero mean, unit variance per token
    assert torch.allclose(x.mean(-1), torch.zeros(4, 16), atol=1e-5)
    assert torch.allclose(x.var(-1, unbiased=False), torch.ones(4, 16), atol=1e-3)
    assert torch.equal(x, patch_features(clip.frames, 16, 24, seed=0))
    assert not torch.equal(x, patch_features(clip.frames, 16, 24, seed=1))
    w = projection(16, 24, seed=0)
    assert w.shape == (768, 24) and abs(float(w.std()) * 768**0.5 - 1) < 0.05
    a = importance(x)
    assert a.shape == (4, 16) and bool((a > 0).all())
    assert torch.allclose(a.sum(-1), torch.ones(4), atol=1e-5)
    # four equal tokens and an odd one: saliencies 1 - cos to the frame mean; the z-scores are
    # -1/2 (x4) and 2, so a = softmax(2 z) = [e^-1 (x4), e^4] / (4 e^-1 + e^4)
    y = torch.zeros(1, 5, 8)
    y[0, :4, 0] = 3.0
    y[0, 4, 1] = 3.0
    want = torch.tensor([np.exp(-1.0)] * 4 + [np.exp(4.0)])
    assert torch.allclose(importance(y)[0], (want / want.sum()).float(), atol=1e-6)


def test_load_frames_formats(tmp_path):
    import imageio.v3 as iio

    frames = demo_clip("moving-object", frames=3, size=32).frames
    folder = tmp_path / "frames"
    folder.mkdir()
    for t in range(3):
        iio.imwrite(folder / f"f{t:02d}.png", frames[t])
    (folder / "notes.txt").write_text("ignored")
    assert np.array_equal(load_frames(folder), frames)
    np.save(tmp_path / "f.npy", frames)
    assert np.array_equal(load_frames(tmp_path / "f.npy"), frames)
    np.savez(tmp_path / "f.npz", frames=frames.astype(np.float32) / 255.0)
    assert np.array_equal(load_frames(tmp_path / "f.npz"), frames)
    grey = frames[..., 0]
    np.save(tmp_path / "g.npy", grey)
    assert np.array_equal(load_frames(tmp_path / "g.npy"), np.repeat(grey[..., None], 3, -1))
    iio.imwrite(tmp_path / "f.gif", frames, loop=0)
    gif = load_frames(tmp_path / "f.gif")
    assert gif.shape == frames.shape and gif.dtype == np.uint8


def test_load_frames_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no such file or folder"):
        load_frames(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"no images found; expected files ending in"):
        load_frames(tmp_path / "empty")
    np.save(tmp_path / "bad.npy", np.zeros((2, 3), np.uint8))
    with pytest.raises(ValueError, match=r"expected frames of shape \[frames, height, width, 3\]"):
        load_frames(tmp_path / "bad.npy")
    np.save(tmp_path / "nan.npy", np.full((1, 4, 4, 3), np.nan, np.float32))
    with pytest.raises(ValueError, match=r"NaN or Inf"):
        load_frames(tmp_path / "nan.npy")
    np.savez(tmp_path / "two.npz", a=np.zeros((1, 4, 4, 3)), b=np.zeros((1, 4, 4, 3)))
    with pytest.raises(ValueError, match=r"expected an array named 'frames'"):
        load_frames(tmp_path / "two.npz")
    (tmp_path / "clip.xyz").write_bytes(b"")
    with pytest.raises(ValueError, match=r"unsupported frames input '.xyz'; expected .* a video"):
        load_frames(tmp_path / "clip.xyz")


def test_grid_matching():
    assert match_grid((2, 224, 224, 3), 196) == (14, 14)
    assert match_grid((2, 448, 784, 3), 448) == (16, 28)  # Qwen-style 28-px merged tokens
    assert match_grid((2, 224, 224, 3), 196, (7, 28)) == (7, 28)  # an explicit grid is trusted
    with pytest.raises(ValueError, match=r"closest grid, 1 rows x 13 columns"):
        match_grid((2, 224, 224, 3), 13)
    with pytest.raises(ValueError, match=r"grid 10x10 has 100 cells but the token file has 196"):
        match_grid((2, 224, 224, 3), 196, (10, 10))
    with pytest.raises(ValueError, match=r"more cells than the 8x8 frames have pixels"):
        match_grid((2, 8, 8, 3), 256)
    assert parse_grid("14x14") == (14, 14) and parse_grid(None) is None
    with pytest.raises(ValueError, match=r"expected ROWSxCOLS"):
        parse_grid("14by14")


def test_float_frames_outside_0_1(tmp_path):
    from flashvid.demo.frames import FrameWarning

    frames = demo_clip("moving-object", frames=2, size=32).frames
    np.save(tmp_path / "f255.npy", frames.astype(np.float32))  # 0..255 stored as float
    with pytest.warns(FrameWarning, match=r"values up to 2\d\d: read as 0..255"):
        assert np.array_equal(load_frames(tmp_path / "f255.npy"), frames)
    wild = frames.astype(np.float32) / 255.0 * 2 - 0.5  # -0.5 .. 1.5
    np.save(tmp_path / "wild.npy", wild)
    with pytest.warns(FrameWarning, match=r"values lie outside \[0, 1\] .* were clipped"):
        got = load_frames(tmp_path / "wild.npy")
    assert np.array_equal(got, np.rint(np.clip(wild, 0, 1) * 255).astype(np.uint8))
