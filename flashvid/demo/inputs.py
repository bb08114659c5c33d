"""The demo's inputs: bundled video clips, the user's video files and the photo clips, as frames
sized to a whole number of patches, ready for :func:`flashvid.demo.features.patch_features`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .clips import CLIP_NAMES
from .video import VIDEO_NAMES, VIDEOS, bundled_video, grid_for, read_video

CLIP_GROUPS = {"videos": VIDEO_NAMES, "photos": CLIP_NAMES, "all": VIDEO_NAMES + CLIP_NAMES}
ALL_CLIPS = VIDEO_NAMES + CLIP_NAMES


@dataclass(frozen=True)
class DemoInput:
    """Frames of one demo clip.

    Attributes:
        name: short name (the figure is ``<name>.png``).
        description: one line saying what the clip shows.
        origin: where the frames came from (for the summary).
        frames: [F, H, W, 3] uint8 RGB, H = rows * patch, W = cols * patch.
        grid: (rows, cols) of the patch grid.
        show: the frames the figure draws by default (see ``figures.parse_show``).
        frame_titles: [F] text over each drawn frame.
    """

    name: str
    description: str
    origin: str
    frames: np.ndarray
    grid: tuple[int, int]
    show: str
    frame_titles: tuple[str, ...]


def expand_clips(names: list[str]) -> list[str]:
    """Clip names with the groups ``videos``, ``photos`` and ``all`` expanded, in order, once."""
    out: list[str] = []
    for name in names:
        for clip in CLIP_GROUPS.get(name, (name,)):
            if clip not in ALL_CLIPS:
                raise ValueError(f"unknown clip {clip!r}; expected one of {list(ALL_CLIPS)} or a "
                                 f"group {list(CLIP_GROUPS)}")
            if clip not in out:
                out.append(clip)
    return out


def video_input(path: str | Path, frames: int = 32, size: int = 224, patch: int = 16,
                name: str | None = None, description: str = "") -> DemoInput:
    """``frames`` frames sampled uniformly from a video file, resized (aspect kept) to a grid of
    about (size / patch)^2 patches of ``patch`` pixels."""
    path = Path(path)
    probe = read_video(path, frames=1)
    w, h = probe.size
    rows, cols = grid_for(w, h, (size // patch) ** 2)
    video = read_video(path, frames=frames, size=(cols * patch, rows * patch))
    if len(video.indices) < 2:
        raise ValueError(f"{path} has {video.total} frame(s); the demo needs a video of at least "
                         "2 frames")
    titles = tuple(f"t={t} ({s:.2f} s)" for t, s in enumerate(video.times))
    rate = f" at {video.fps:.4g} fps" if video.fps else ""
    origin = (f"{path.name}: {len(video.indices)} of {video.total} frames{rate} sampled "
              f"uniformly, {w}x{h} resized to {cols * patch}x{rows * patch}")
    return DemoInput(name or path.stem, description or path.name, origin, video.frames,
                     (rows, cols), "auto", titles)


def photo_input(name: str, frames: int = 32, size: int = 224, patch: int = 16,
                seed: int = 0) -> DemoInput:
    """A clip animated from scikit-image's bundled photographs (:mod:`.clips`)."""
    from .clips import demo_clip

    if size % patch:
        raise ValueError(f"--size {size} must be a multiple of --patch {patch}")
    clip = demo_clip(name, frames=frames, size=size, seed=seed)
    return DemoInput(name, clip.description, f"photo clip '{name}' (scikit-image photographs)",
                     clip.frames, (size // patch, size // patch), clip.show,
                     tuple(f"t={t}" for t in range(frames)))


def demo_input(name: str, frames: int = 32, size: int = 224, patch: int = 16,
               seed: int = 0) -> DemoInput:
    """A bundled clip by name: a video from :data:`flashvid.demo.video.VIDEOS` or a photo clip
    from :data:`flashvid.demo.clips.CLIP_NAMES`."""
    if name in VIDEOS:
        return video_input(bundled_video(name), frames, size, patch, name, VIDEOS[name][1])
    return photo_input(name, frames, size, patch, seed)
