"""Short demo clips animated from real photographs bundled with scikit-image (no downloads).

Every clip is made from photographs that ship inside the scikit-image wheel (``skimage.data``
files such as ``astronaut.png``, ``chelsea.png``, ``coffee.png`` and ``rocket.jpg``; nothing is
fetched with pooch). A virtual camera looks at a photograph: each frame is a square crop of the
photograph (centre and side length per frame) resampled bilinearly to ``size`` x ``size`` pixels,
so panning moves the centre and zooming shrinks the side. A sprite (a feathered ellipse cut from
another photograph) can move across the frame, and a clip can cut from one shot to another.
Seeded Gaussian sensor noise (1 grey level) keeps static regions from being bit-identical.

Built-in clips (all ``frames`` long, default 32):

* ``pan-zoom``: the astronaut photograph; the camera pans right and down while zooming in 1.6x.
* ``moving-object``: a static shot of a coffee cup; the cat's head from ``chelsea`` crosses the
  frame from left to right along a shallow arc (about 6 px per frame at 224 px).
* ``scene-cut``: the rocket launch pad with a slow pan, then a hard cut half-way to the cat
  (``chelsea``) with the camera zooming out.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

CLIP_NAMES = ("pan-zoom", "moving-object", "scene-cut")


@dataclass(frozen=True)
class Clip:
    """A demo clip.

    Attributes:
        name: the clip's name (one of ``CLIP_NAMES``).
        description: one line saying what moves.
        frames: [F, H, W, 3] uint8 RGB frames.
        scene_cuts: frame indices t where a new shot starts (frame t differs from t-1).
        show: the frames the demo figure draws by default (see ``figures.parse_show``).
    """

    name: str
    description: str
    frames: np.ndarray
    scene_cuts: tuple[int, ...]
    show: str = "auto"


def photo(name: str) -> np.ndarray:
    """[H, W, 3] uint8 RGB: a photograph bundled inside scikit-image (no download)."""
    try:
        from skimage import data
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the demo clips need scikit-image; install the demo extra: pip install "
            "'flashvid[demo]' (or pip install scikit-image)") from err
    loaders: dict[str, Callable[[], np.ndarray]] = {
        "astronaut": data.astronaut, "chelsea": data.chelsea, "coffee": data.coffee,
        "rocket": data.rocket}
    if name not in loaders:
        raise ValueError(f"unknown photograph {name!r}; expected one of {sorted(loaders)}")
    return np.ascontiguousarray(loaders[name]()[..., :3])


def camera(image: np.ndarray, centres: np.ndarray, sides: np.ndarray, size: int) -> np.ndarray:
    """[F, size, size, 3] float32 in [0, 1]: square crops of ``image`` resampled bilinearly.

    Args:
        image: [H, W, 3] uint8 photograph.
        centres: [F, 2] float crop centres (x, y) in image pixels.
        sides: [F] float crop side lengths in image pixels.
        size: output side length in pixels.
    """
    h, w = image.shape[:2]
    src = torch.from_numpy(image).permute(2, 0, 1)[None].float().div(255.0)  # [1, 3, H, W]
    lin = (torch.arange(size, dtype=torch.float32) + 0.5) / size - 0.5  # [size] in (-0.5, 0.5)
    out = []
    for (cx, cy), side in zip(centres.tolist(), sides.tolist()):
        xs = (cx + side * lin) / w * 2 - 1  # to grid_sample's [-1, 1] (align_corners=False)
        ys = (cy + side * lin) / h * 2 - 1
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)[None]  # [1, S, S, 2]
        out.append(torch.nn.functional.grid_sample(src, grid, mode="bilinear",
                                                   padding_mode="border", align_corners=False))
    return torch.cat(out).permute(0, 2, 3, 1).numpy()


def sprite(image: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """[size, size, 4] float32 RGBA in [0, 1]: ``box`` = (x0, y0, x1, y1) of ``image`` resampled
    to ``size`` pixels, with a feathered elliptical alpha mask."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0)
    rgb = camera(image, np.array([[(x0 + x1) / 2, (y0 + y1) / 2]]), np.array([side]), size)[0]
    r = (np.arange(size) + 0.5) / size * 2 - 1
    rad = np.sqrt(r[None, :] ** 2 + r[:, None] ** 2)
    alpha = np.clip((1.0 - rad) / 0.12, 0.0, 1.0)[..., None]  # soft edge over ~6% of the sprite
    return np.concatenate([rgb, alpha], axis=-1).astype(np.float32)


def paste(frame: np.ndarray, rgba: np.ndarray, x: float, y: float) -> None:
    """Alpha-blend ``rgba`` [s, s, 4] into ``frame`` [H, W, 3] (in place) with its top-left
    corner at (x, y), rounded to whole pixels and clipped at the frame border."""
    s = rgba.shape[0]
    h, w = frame.shape[:2]
    x, y = int(round(x)), int(round(y))
    fx0, fy0, fx1, fy1 = max(x, 0), max(y, 0), min(x + s, w), min(y + s, h)
    if fx0 >= fx1 or fy0 >= fy1:
        return
    patch = rgba[fy0 - y : fy1 - y, fx0 - x : fx1 - x]
    a = patch[..., 3:]
    frame[fy0:fy1, fx0:fx1] = a * patch[..., :3] + (1 - a) * frame[fy0:fy1, fx0:fx1]


def _ramp(frames: int, start: float, stop: float) -> np.ndarray:
    """[frames] smooth (cosine-eased) interpolation from start to stop."""
    u = np.linspace(0.0, 1.0, frames)
    return start + (stop - start) * (1 - np.cos(math.pi * u)) / 2


def _finish(frames: np.ndarray, seed: int) -> np.ndarray:
    """Add 1-grey-level seeded Gaussian sensor noise and quantise to uint8."""
    rng = np.random.default_rng(seed)
    noisy = frames * 255.0 + rng.normal(0.0, 1.0, frames.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def pan_zoom(frames: int = 32, size: int = 224, seed: int = 0) -> Clip:
    """The astronaut photograph; the camera pans right and down while zooming in 1.6x."""
    img = photo("astronaut")
    cx, cy = _ramp(frames, 190, 300), _ramp(frames, 200, 250)
    sides = _ramp(frames, 400, 250)
    out = camera(img, np.stack([cx, cy], axis=1), sides, size)
    return Clip("pan-zoom", "astronaut photo; camera pans right/down and zooms in 1.6x",
                _finish(out, seed), ())


def moving_object(frames: int = 32, size: int = 224, seed: int = 0) -> Clip:
    """A static shot of a coffee cup; the cat's head crosses the frame along a shallow arc."""
    background = camera(photo("coffee"), np.array([[300.0, 200.0]] * frames),
                        np.full(frames, 400.0), size)
    head = sprite(photo("chelsea"), (110, 10, 350, 250), size * 3 // 8)
    s = head.shape[0]
    xs = np.linspace(-s * 0.4, size - s * 0.6, frames)
    ys = size * 0.45 - s / 2 - size * 0.25 * np.sin(np.linspace(0.0, math.pi, frames))
    out = background.copy()
    for t in range(frames):
        paste(out[t], head, xs[t], ys[t])
    return Clip("moving-object", "static coffee-cup shot; the cat's head crosses left to right",
                _finish(out, seed), ())


def scene_cut(frames: int = 32, size: int = 224, seed: int = 0) -> Clip:
    """The rocket launch pad with a slow pan, then a hard cut half-way to the cat, zooming out."""
    first = frames // 2
    second = frames - first
    rocket = camera(photo("rocket"), np.stack([_ramp(first, 230, 380),
                                              np.full(first, 230.0)], axis=1),
                    np.full(first, 360.0), size)
    cat = camera(photo("chelsea"), np.stack([np.full(second, 230.0), _ramp(second, 130, 150)],
                                           axis=1), _ramp(second, 180, 290), size)
    out = np.concatenate([rocket, cat]) if first else cat
    cut = (first,) if 0 < first < frames else ()
    around = f"{max(0, first - 4)}:{min(frames, max(0, first - 4) + 8)}"  # 8 frames, cut inside
    return Clip("scene-cut", "rocket launch pad, slow pan; cut to the cat, zooming out",
                _finish(out, seed), cut, around if cut else "auto")


BUILDERS: dict[str, Callable[..., Clip]] = {
    "pan-zoom": pan_zoom, "moving-object": moving_object, "scene-cut": scene_cut}


def demo_clip(name: str, frames: int = 32, size: int = 224, seed: int = 0) -> Clip:
    """One built-in clip by name (see the module docstring); frames [F, size, size, 3] uint8."""
    if name not in BUILDERS:
        raise ValueError(f"unknown demo clip {name!r}; expected one of {list(CLIP_NAMES)}")
    if frames < 2:
        raise ValueError(f"a demo clip needs at least 2 frames, got {frames}")
    if size < 16:
        raise ValueError(f"frame size must be at least 16 pixels, got {size}")
    return BUILDERS[name](frames=frames, size=size, seed=seed)
