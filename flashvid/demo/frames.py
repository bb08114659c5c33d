"""Reading a user's frames for ``flashvid viz`` and matching them to a token grid.

Supported inputs (read with imageio, which scikit-image installs):

* a folder of images, one per token frame, taken in name order: ``.png``, ``.jpg``/``.jpeg``,
  ``.bmp``, ``.tif``/``.tiff``, ``.webp``;
* a multi-frame ``.gif`` or ``.tif``/``.tiff`` file;
* a ``.npy`` array, or a ``.npz`` file holding an array named ``frames`` (or a single array):
  [F, H, W, 3] RGB or [F, H, W] grey, uint8 (0..255) or floating (0..1; floating frames whose
  values lie in 0..255 are read as 0..255, and values outside the range are clipped, each with
  a :class:`FrameWarning`);
* a video file (``.mp4``, ``.mkv``, ``.webm``, ... decoded with PyAV): ``count`` frames sampled
  uniformly from the first to the last (:func:`flashvid.demo.video.sample_indices`), the way
  video LLMs sample; they must be the frames the tokens came from.

Grey frames become RGB; an alpha channel is dropped.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from .video import VIDEO_SUFFIXES, read_video

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MULTI_FRAME_SUFFIXES = (".gif", ".tif", ".tiff")
MAX_SIDE = 640  # video frames are decoded at most this large: enough for the figure


class FrameWarning(UserWarning):
    """Frames were read in a way the user should know about (rescaled or clipped values)."""


def _float_to_uint8(arr: np.ndarray, what: str) -> np.ndarray:
    """uint8 from floating frames: 0..1 as is; 0..255 scaled by 1/255; otherwise clipped to
    0..1 (a warning says so in the last two cases)."""
    if not np.isfinite(arr).all():
        raise ValueError(f"{what}: frames contain NaN or Inf; expected values in [0, 1]")
    low, high = float(arr.min()), float(arr.max())
    if low >= 0.0 and high <= 1.0:
        scaled = arr
    elif low >= 0.0 and high <= 255.0:
        warnings.warn(f"{what}: floating frames with values up to {high:g}: read as 0..255 "
                      "(expected 0..1 for floating frames)", FrameWarning, stacklevel=3)
        scaled = arr / 255.0
    else:
        outside = int(((arr < 0.0) | (arr > 1.0)).sum())
        warnings.warn(f"{what}: {outside} of {arr.size} values lie outside [0, 1] (range "
                      f"{low:g}..{high:g}) and were clipped; expected floating frames in 0..1",
                      FrameWarning, stacklevel=3)
        scaled = np.clip(arr, 0.0, 1.0)
    return np.rint(scaled * 255.0).astype(np.uint8)


def _to_rgb_uint8(arr: np.ndarray, what: str) -> np.ndarray:
    """[F, H, W, 3] uint8 from [F, H, W], [F, H, W, 1|3|4] uint8/uint16/bool/float arrays."""
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{what}: expected frames of shape [frames, height, width, 3] (RGB) or "
                         f"[frames, height, width] (grey), got {arr.shape}")
    if 0 in arr.shape:
        raise ValueError(f"{what}: expected at least one non-empty frame, got shape {arr.shape}")
    arr = arr[..., :3] if arr.shape[-1] == 4 else arr
    arr = np.repeat(arr, 3, axis=-1) if arr.shape[-1] == 1 else arr
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype == np.uint16:
        return (arr // 257).astype(np.uint8)
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.floating):
        return _float_to_uint8(arr, what)
    raise ValueError(f"{what}: unsupported pixel type {arr.dtype}; expected uint8 (0..255), "
                     "uint16 or floating (0..1)")


def load_frames(path: str | Path, count: int | None = None) -> np.ndarray:
    """[F, H, W, 3] uint8 RGB frames from a folder of images, a multi-frame image, a
    ``.npy``/``.npz`` array or a video file (see the module docstring).

    ``count`` is the number of frames to sample from a video file (required for one; ignored
    otherwise). Video frames are decoded at most ``MAX_SIDE`` pixels on their longer side.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    suffix = path.suffix.lower()
    if path.is_file() and suffix in VIDEO_SUFFIXES:
        if count is None:
            raise ValueError(f"{path}: a video file needs the number of frames to sample")
        return load_video_frames(path, count).frames
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"{path}: no images found; expected files ending in "
                             f"{', '.join(IMAGE_SUFFIXES)} (one per token frame)")
        import imageio.v3 as iio

        images = [_to_rgb_uint8(np.asarray(iio.imread(f))[None], str(f)) for f in files]
        shapes = {im.shape[1:3] for im in images}
        if len(shapes) > 1:
            raise ValueError(f"{path}: images have different sizes {sorted(shapes)}; expected "
                             "all frames to be the same size")
        return np.concatenate(images)
    if suffix == ".npy":
        return _to_rgb_uint8(np.load(path, allow_pickle=False), str(path))
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            names = list(data.files)
            if "frames" in names:
                arr = data["frames"]
            elif len(names) == 1:
                arr = data[names[0]]
            else:
                raise ValueError(f"{path}: expected an array named 'frames' (or a single array), "
                                 f"found {names}")
        return _to_rgb_uint8(arr, str(path))
    if suffix in MULTI_FRAME_SUFFIXES:
        import imageio.v3 as iio

        arr = np.asarray(iio.imread(path, index=None))
        if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (3, 4)):
            arr = arr[None]  # a single-frame image
        return _to_rgb_uint8(arr, str(path))
    raise ValueError(f"{path}: unsupported frames input {suffix!r}; expected a folder of images, "
                     f"a multi-frame .gif/.tif, a .npy/.npz array or a video file "
                     f"({', '.join(VIDEO_SUFFIXES[:5])}, ...)")


def load_video_frames(path: str | Path, count: int):
    """A :class:`flashvid.demo.video.Video` of ``count`` frames sampled uniformly from ``path``,
    at most ``MAX_SIDE`` pixels on the longer side; ValueError if it has fewer frames."""
    path = Path(path)
    probe = read_video(path, frames=1)
    w, h = probe.size
    scale = min(1.0, MAX_SIDE / max(w, h))
    size = (max(2, round(w * scale / 2) * 2), max(2, round(h * scale / 2) * 2))
    video = read_video(path, frames=count, size=size if scale < 1.0 else None)
    if len(video.indices) != count:
        raise ValueError(f"{path} has {video.total} frames but the token file has tokens for "
                         f"{count}; expected a video with at least as many frames as token "
                         "frames")
    return video


def match_grid(frames_shape: tuple[int, ...], tokens_per_frame: int,
               grid: tuple[int, int] | None = None) -> tuple[int, int]:
    """(rows, cols) of the token grid over frames of shape [F, H, W, 3].

    With ``grid`` given, checks rows * cols == N. Otherwise picks the factorisation rows * cols = N
    whose aspect ratio cols / rows is closest to W / H, and requires it within 25% of W / H
    (a grid that does not fit the frames means the tokens belong to other frames or another
    patch layout). Raises ValueError saying what was expected.
    """
    h, w = int(frames_shape[1]), int(frames_shape[2])
    n = int(tokens_per_frame)
    if grid is not None:
        rows, cols = grid
        if rows < 1 or cols < 1 or rows * cols != n:
            raise ValueError(f"grid {rows}x{cols} has {rows * cols} cells but the token file has "
                             f"{n} tokens per frame; expected rows x cols = {n}")
    else:
        pairs = [(r, n // r) for r in range(1, n + 1) if n % r == 0]
        rows, cols = min(pairs, key=lambda rc: abs(math.log((rc[1] / rc[0]) / (w / h))))
        if abs(math.log((cols / rows) / (w / h))) > math.log(1.25):
            raise ValueError(
                f"cannot lay {n} tokens per frame over {w}x{h} (width x height) frames: the "
                f"closest grid, {rows} rows x {cols} columns, has aspect {cols / rows:.2f} but the "
                f"frames have {w / h:.2f}; expected tokens in raster order over the frames "
                "(N = rows x cols); pass --grid ROWSxCOLS to set it")
    if rows > h or cols > w:
        raise ValueError(f"a {rows}x{cols} token grid has more cells than the {h}x{w} frames have "
                         "pixels; expected one token per patch of at least one pixel")
    return rows, cols


def parse_grid(text: str | None) -> tuple[int, int] | None:
    """(rows, cols) from "ROWSxCOLS" (e.g. "14x14"), or None."""
    if text is None:
        return None
    try:
        rows, cols = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"cannot read grid {text!r}; expected ROWSxCOLS, e.g. 14x14") from None
    return rows, cols
