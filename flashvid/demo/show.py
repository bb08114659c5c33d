"""Which frames and which TSTM trees a figure shows (:mod:`flashvid.demo.figures`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..types import CompressedVideo

HIGHLIGHT = 6  # trees drawn in a colour of their own


def auto_window(out: CompressedVideo, count: int) -> list[int]:
    """``count`` consecutive frames that show the most of TSTM: the window holding the most
    merged tokens whose tree root lies inside the window too (so the trees are seen from their
    start); the first such window on ties."""
    frames, n = out.num_frames, out.tokens_per_frame
    count = min(count, frames)
    root_frame = out.roots().cpu().numpy() // n  # [F, N] frame of each token's tree root
    merged = out.parents.cpu().numpy() >= 0
    best, start = -1, 0
    for s in range(frames - count + 1):
        inside = merged[s : s + count] & (root_frame[s : s + count] >= s)
        if int(inside.sum()) > best:
            best, start = int(inside.sum()), s
    return list(range(start, start + count))


def frames_for_aspect(width: int, height: int) -> int:
    """How many frames a figure row shows: 8 for square frames, fewer for wide ones (at least 4),
    so that the figure stays readable when scaled to a page."""
    return max(4, min(8, round(11 * height / width)))


def parse_show(spec: str | Sequence[int] | None, out: CompressedVideo, count: int = 8) -> list[int]:
    """Frames to draw: "auto" (default; :func:`auto_window`), "even" (``count`` evenly spaced
    frames), "A:B" (frames A..B-1) or "i,j,k" (explicit, 0-based); or a sequence of ints."""
    frames = out.num_frames
    if spec is None or spec == "auto":
        return auto_window(out, count)
    if isinstance(spec, str):
        text = spec.strip()
        try:
            if text == "even":
                return sorted(set(np.linspace(0, frames - 1, min(count, frames)).round()
                                  .astype(int).tolist()))
            if ":" in text:
                a, b = text.split(":", 1)
                chosen = list(range(int(a) if a else 0, int(b) if b else frames))
            else:
                chosen = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"cannot read the frames to show {spec!r}; expected 'auto', 'even', "
                             "'A:B' or a comma-separated list like '0,4,8'") from None
    else:
        chosen = [int(v) for v in spec]
    bad = [t for t in chosen if not 0 <= t < frames]
    if not chosen or bad:
        raise ValueError(f"frames to show must be non-empty and within 0..{frames - 1}, got "
                         f"{chosen}")
    return chosen


def highlighted_trees(roots: np.ndarray, parents: np.ndarray, chosen: Sequence[int],
                      count: int = HIGHLIGHT) -> list[int]:
    """The roots (global positions) of the ``count`` trees with the most tokens in the frames
    ``chosen``, among trees with at least one merged token; largest first, lowest root on ties.

    ``roots``, ``parents``: [F, N] int arrays (``CompressedVideo.roots()`` and ``parents``)."""
    merged_roots = np.unique(roots[parents >= 0])
    if merged_roots.size == 0:
        return []
    shown = roots[list(chosen)].reshape(-1)
    sizes = np.bincount(shown, minlength=roots.size)[merged_roots]
    order = np.lexsort((merged_roots, -sizes))
    return [int(merged_roots[i]) for i in order[:count] if sizes[i] > 0]
