"""Figures of what a compression kept, drawn with matplotlib's Agg canvas (headless, no pyplot).

:func:`draw_compression` shows a row of frames three times:

1. **kept as-is** - the frame, with the tokens kept as-is (kind 0: ADTS, or the selection of a
   pruning strategy) outlined in yellow and every other token dimmed;
2. **TSTM trees** - a disc on every token that belongs to a tree of two or more tokens, coloured
   by its tree (the tree's root, ``CompressedVideo.roots()``) alike in every frame the tree
   spans; a white line joins a token to its parent's position in the previous frame where the
   two differ by at most two grid cells (the tree followed local motion; longer jumps, common in
   uniform regions, are not drawn); ADTS tokens are dark;
3. **spatial clusters** - every non-ADTS token is tinted with the colour of the output row that
   represents it (``source``), white lines separate different rows, and a dot marks each row's
   representative position; dropped tokens (pruning strategies) are black.

Colours are assigned by rank with golden-ratio hue steps, so neighbouring trees and clusters get
well-separated hues.
"""

from __future__ import annotations

import colorsys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..types import KIND_ADTS, KIND_CLUSTER, KIND_ROOT, CompressedVideo

CELL_INCHES = 2.1
KEPT_EDGE = "#ffe600"
LEGEND = ("yellow boxes: tokens kept as-is (ADTS, or a pruning strategy's selection) | trees: a "
          "disc per member of a redundancy tree, one colour per tree across frames; white line = "
          "merged into a neighbouring parent position; no disc = single-token tree; dark = kept "
          "as-is | clusters: one colour per output token, dot = its position, black = dropped")
TINT = 0.45


def palette(ids: np.ndarray) -> np.ndarray:
    """[len(ids), 3] RGB in [0, 1]: one colour per distinct id, by rank (golden-ratio hues)."""
    uniq, rank = np.unique(ids, return_inverse=True)
    colours = np.array([colorsys.hsv_to_rgb((0.13 + 0.6180339887 * k) % 1.0,
                                            0.85 if k % 2 else 0.65, 0.95)
                        for k in range(len(uniq))]).reshape(-1, 3)
    return colours[rank.reshape(-1)]


def auto_window(out: CompressedVideo, count: int) -> list[int]:
    """``count`` consecutive frames holding the most TSTM edges (first such window on ties)."""
    frames = out.num_frames
    count = min(count, frames)
    merged = (out.parents >= 0).sum(dim=1).cpu().numpy()  # [F] edges ending in frame t
    best, start = -1, 0
    for s in range(frames - count + 1):
        edges = int(merged[s + 1 : s + count].sum())
        if edges > best:
            best, start = edges, s
    return list(range(start, start + count))


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


def _grey(frame: np.ndarray) -> np.ndarray:
    lum = frame.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.repeat((0.35 + 0.55 * lum[..., None] / 255.0), 3, axis=-1)


def _near(p: int, q: int, cols: int, cells: int = 2) -> bool:
    """Whether grid positions p and q are at most ``cells`` rows and columns apart."""
    return abs(p // cols - q // cols) <= cells and abs(p % cols - q % cols) <= cells


def _boundaries(labels: np.ndarray, ph: float, pw: float) -> list[list[tuple[float, float]]]:
    """Line segments (pixel coordinates) between grid cells with different labels."""
    rows, cols = labels.shape
    segs = []
    for r, c in zip(*np.nonzero(labels[:, 1:] != labels[:, :-1])):
        x = (c + 1) * pw
        segs.append([(x, r * ph), (x, (r + 1) * ph)])
    for r, c in zip(*np.nonzero(labels[1:, :] != labels[:-1, :])):
        y = (r + 1) * ph
        segs.append([(c * pw, y), ((c + 1) * pw, y)])
    return segs


def draw_compression(frames: np.ndarray, out: CompressedVideo, grid: tuple[int, int], *,
                     show: str | Sequence[int] | None = None, title: str = "",
                     subtitle: str = "", path: str | Path | None = None, dpi: int = 80):
    """Draw (and optionally save as PNG) the kept / trees / clusters figure of one compression.

    Args:
        frames: [F, H, W, 3] uint8 RGB frames the tokens came from.
        out: the compression of those frames' tokens (F frames of rows * cols tokens).
        grid: (rows, cols) of the token grid; token n covers grid cell (n // cols, n % cols).
        show: frames to draw, see :func:`parse_show` (default: 8 consecutive frames, "auto").
        title, subtitle: text above the panels.
        path: where to write the PNG (parent folders are created); None to only return it.
        dpi: resolution of the PNG.

    Returns:
        The matplotlib Figure.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    frames = np.asarray(frames)
    rows, cols = grid
    f_count, n = out.num_frames, out.tokens_per_frame
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 RGB of shape [frames, height, width, 3], got "
                         f"{frames.dtype} {frames.shape}")
    if frames.shape[0] != f_count or rows * cols != n:
        raise ValueError(f"{frames.shape[0]} frames with a {rows}x{cols} grid do not match the "
                         f"compressed video of {f_count} frames x {n} tokens")
    chosen = parse_show(show, out)
    h, w = frames.shape[1:3]
    ph, pw = h / rows, w / cols

    kinds = out.kinds.cpu().numpy()
    idx = out.indices.cpu().numpy()
    source = out.source.cpu().numpy()
    parents = out.parents.cpu().numpy()
    roots = out.roots().cpu().numpy()
    adts = np.zeros(f_count * n, dtype=bool)
    adts[idx[kinds == KIND_ADTS]] = True
    adts = adts.reshape(f_count, n)
    tree_size = np.bincount(roots.reshape(-1), minlength=f_count * n)
    tree_colour = palette(roots.reshape(-1)).reshape(f_count, n, 3)
    src_colour = palette(np.where(source >= 0, source, -1).reshape(-1)).reshape(f_count, n, 3)
    starts = set(np.cumsum([0, *out.segment_lengths.tolist()])[:-1].tolist())

    width = CELL_INCHES * len(chosen) + 1.0
    chars = max(40, int(width * 15))  # characters per line at 8-9 pt
    sub_lines = textwrap.wrap(subtitle, chars) if subtitle else []
    foot = textwrap.wrap(LEGEND, chars)
    top = 0.45 + 0.17 * len(sub_lines) + 0.3  # inches: title, subtitle lines, column titles
    bottom = 0.2 + 0.15 * len(foot)
    fig = Figure(figsize=(width, CELL_INCHES * 3 + 0.2 + top + bottom))
    FigureCanvasAgg(fig)
    axes = fig.subplots(3, len(chosen), squeeze=False)
    height = fig.get_figheight()
    fig.subplots_adjust(left=0.6 / width, right=0.995, wspace=0.03, hspace=0.06,
                        top=1 - top / height, bottom=bottom / height)
    extent = (0, w, h, 0)
    disc = (0.55 * CELL_INCHES * 72 / max(rows, cols)) ** 2  # marker area in points^2
    any_adts = bool(adts.any())
    for j, t in enumerate(chosen):
        frame = frames[t]
        a_kept, a_tree, a_clu = axes[:, j]
        # ---- row 1: ADTS-kept tokens outlined, the rest dimmed
        a_kept.imshow(frame, extent=extent)
        if any_adts:
            dim = np.zeros((rows, cols, 4), dtype=np.float32)
            dim[..., 3] = np.where(adts[t].reshape(rows, cols), 0.0, 0.5)
            a_kept.imshow(dim, extent=extent, interpolation="nearest")
            for p in np.nonzero(adts[t])[0]:
                a_kept.add_patch(Rectangle(((p % cols) * pw, (p // cols) * ph), pw, ph,
                                           fill=False, edgecolor=KEPT_EDGE, linewidth=1.3))
        # ---- row 2: TSTM trees: a disc per tree member, coloured by tree
        a_tree.imshow(_grey(frame), extent=extent)
        dark = np.zeros((rows, cols, 4), dtype=np.float32)
        dark[adts[t].reshape(rows, cols)] = (0.05, 0.05, 0.05, 0.75)
        a_tree.imshow(dark, extent=extent, interpolation="nearest")
        moved = [(p, q) for p in np.nonzero(parents[t] >= 0)[0]
                 for q in [parents[t, p] % n] if q != p and _near(p, q, cols)]
        if moved:
            lines = [[(((q % cols) + 0.5) * pw, ((q // cols) + 0.5) * ph),
                      (((p % cols) + 0.5) * pw, ((p // cols) + 0.5) * ph)] for p, q in moved]
            a_tree.add_collection(LineCollection(lines, colors="white", linewidths=1.2))
        member = np.nonzero((~adts[t]) & (tree_size[roots[t]] >= 2))[0]
        a_tree.scatter(((member % cols) + 0.5) * pw, ((member // cols) + 0.5) * ph,
                       s=disc, c=tree_colour[t, member], edgecolors="black", linewidths=0.4,
                       zorder=3)
        # ---- row 3: spatial clusters (the output row representing each token)
        a_clu.imshow(_grey(frame), extent=extent)
        tint = np.zeros((rows, cols, 4), dtype=np.float32)
        tint[..., :3] = src_colour[t].reshape(rows, cols, 3)
        tint[..., 3] = TINT
        tint[adts[t].reshape(rows, cols)] = (0.05, 0.05, 0.05, 0.75)
        tint[(source[t] < 0).reshape(rows, cols)] = (0.0, 0.0, 0.0, 0.92)
        a_clu.imshow(tint, extent=extent, interpolation="nearest")
        labels = np.where(adts[t], -2, source[t]).reshape(rows, cols)
        a_clu.add_collection(LineCollection(_boundaries(labels, ph, pw), colors="white",
                                            linewidths=0.8))
        here = (idx // n == t) & ((kinds == KIND_CLUSTER) | (kinds == KIND_ROOT))
        pos = idx[here] % n
        a_clu.scatter(((pos % cols) + 0.5) * pw, ((pos // cols) + 0.5) * ph, s=9, c="white",
                      edgecolors="black", linewidths=0.6, zorder=3)
        label = f"t={t}" + ("  new segment" if t in starts else "")
        a_kept.set_title(label, fontsize=9, color="#b00020" if t in starts else "black")
        for ax in (a_kept, a_tree, a_clu):
            ax.set_xlim(0, w)
            ax.set_ylim(h, 0)
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("kept as-is (ADTS)\noutlined", fontsize=9)
    axes[1, 0].set_ylabel("TSTM trees\ncolour = tree", fontsize=9)
    axes[2, 0].set_ylabel("spatial clusters\ncolour = output token", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=12, y=1 - 0.1 / height, va="top")
    if sub_lines:
        fig.text(0.5, 1 - 0.42 / height, "\n".join(sub_lines), ha="center", va="top", fontsize=9)
    fig.text(0.5, 0.05 / height, "\n".join(foot), ha="center", va="bottom", fontsize=8,
             color="#333333")
    if path is not None:
        save_png(fig, path, dpi)
    return fig


def save_png(fig, path: str | Path, dpi: int) -> None:
    """Write ``fig`` as a 256-colour PNG (Pillow's octree quantiser, no dithering): about 4x
    smaller than full RGB for photographs, with no visible change at this size. Parent folders
    are created."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.set_dpi(dpi)
    canvas = fig.canvas
    canvas.draw()
    rgb = Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3])
    rgb.quantize(colors=256, method=Image.Quantize.FASTOCTREE,
                 dither=Image.Dither.NONE).save(path, format="PNG", optimize=True)
