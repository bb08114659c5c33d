"""Figures of what a compression kept, drawn with matplotlib's Agg canvas (headless, no pyplot).

:func:`draw_compression` shows a row of frames up to three times, one row per stage the
strategy has (a row that would be empty is left out), each row with its own legend on the
right; yellow outlines (kept as-is) and dark cells (dropped) mean the same in every row:

1. **kept as-is** (ADTS, or a pruning strategy's selection): the kept tokens in full colour with
   a yellow outline; the others faded (FlashVID: they go on to the merging stages) or dark
   (pruning strategies: dropped).
2. **merged over time** (TSTM, or TTM): a token merged into a token of the previous frame is
   washed over. The largest trees in the frames shown (by their tokens there,
   :func:`highlighted_trees`) each get a colour of their own and the rest share one muted
   colour, so a reader can follow a few trees through the frames; a dot marks a tree root (a
   token that later tokens merged into), and a white line joins a coloured tree's token to its
   parent's position when the parent is a neighbour (the tree followed motion). Cells with no
   wash were not merged.
3. **spatial merge** (DPC-kNN clusters, or uniform pooling's cells): each token whose output
   token lies in this frame is tinted with that output token's colour (white borders between
   output tokens, a dot at the output token's position); tokens represented by a token of an
   earlier frame (merged over time) get the muted wash of row 2.

Frames that start a DySeg segment are titled "new segment" in red. By default the figure shows
the window of consecutive frames that shows the most merging (:func:`auto_window`), 8 frames
for square video and fewer for wide video (:func:`frames_for_aspect`).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..types import KIND_ADTS, CompressedVideo
from .show import auto_window, frames_for_aspect, highlighted_trees, parse_show
from .style import (
    DARK,
    KEPT_EDGE,
    MUTED,
    TINT,
    TREE_COLOURS,
    Labels,
    handler_map,
    hex_rgb,
    palette,
    row_legend,
    save_png,
)

__all__ = ["Labels", "auto_window", "draw_compression", "frames_for_aspect", "highlighted_trees",
           "palette", "parse_show", "save_png"]

MIN_COLUMN = 2.1  # inches per drawn frame (at least)
MIN_CELL = 0.14  # inches per token cell (at least)
LEGEND_INCHES = 3.2
MIN_ROW = 1.45  # inches per row of panels (at least): room for a row's legend
NEAR = 2  # a merge into a parent at most this many cells away is drawn as a line


def _cell_index(h: int, w: int, rows: int, cols: int) -> np.ndarray:
    """[H, W] the grid cell (raster index) under each pixel."""
    ys = np.minimum(np.arange(h) * rows // h, rows - 1)
    xs = np.minimum(np.arange(w) * cols // w, cols - 1)
    return ys[:, None] * cols + xs[None, :]


def _grey(frame: np.ndarray) -> np.ndarray:
    """[H, W, 3] float in [0, 1]: a light grey version of the frame (the background)."""
    lum = frame.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.repeat(0.30 + 0.55 * lum[..., None] / 255.0, 3, axis=-1)


def _compose(base: np.ndarray, cells: np.ndarray, colour: np.ndarray, alpha: np.ndarray):
    """Blend per-cell ``colour`` [C, 3] with per-cell ``alpha`` [C] over ``base`` [H, W, 3];
    ``cells`` [H, W] is the cell of each pixel."""
    a = alpha[cells][..., None]
    return base * (1 - a) + colour[cells] * a


def _boundaries(labels: np.ndarray, ph: float, pw: float) -> list[list[tuple[float, float]]]:
    """Line segments (pixel coordinates) between grid cells with different labels (>= 0)."""
    segs = []
    diff = (labels[:, 1:] != labels[:, :-1]) & ((labels[:, 1:] >= 0) | (labels[:, :-1] >= 0))
    for r, c in zip(*np.nonzero(diff)):
        x = (c + 1) * pw
        segs.append([(x, r * ph), (x, (r + 1) * ph)])
    diff = (labels[1:, :] != labels[:-1, :]) & ((labels[1:, :] >= 0) | (labels[:-1, :] >= 0))
    for r, c in zip(*np.nonzero(diff)):
        y = (r + 1) * ph
        segs.append([(c * pw, y), ((c + 1) * pw, y)])
    return segs


def _outline(ax, positions: np.ndarray, cols: int, ph: float, pw: float, width: float) -> None:
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Rectangle

    boxes = [Rectangle(((p % cols) * pw, (p // cols) * ph), pw, ph) for p in positions]
    if boxes:
        ax.add_collection(PatchCollection(boxes, facecolor="none", edgecolor=KEPT_EDGE,
                                          linewidth=width, zorder=4))


def draw_compression(frames: np.ndarray, out: CompressedVideo, grid: tuple[int, int], *,
                     show: str | Sequence[int] | None = None, title: str = "",
                     subtitle: str = "", labels: Labels | None = None,
                     frame_titles: Sequence[str] | None = None,
                     path: str | Path | None = None, dpi: int = 80):
    """Draw (and optionally save as PNG) the figure of one compression (module docstring).

    Args:
        frames: [F, H, W, 3] uint8 RGB frames the tokens came from.
        out: the compression of those frames' tokens (F frames of rows * cols tokens).
        grid: (rows, cols) of the token grid; token n covers grid cell (n // cols, n % cols).
        show: frames to draw, see :func:`parse_show` (default: 8 consecutive frames, "auto").
        title, subtitle: text above the panels.
        labels: names of the stages (default FlashVID's; see :class:`Labels`).
        frame_titles: [F] text over each frame (default "t=<index>").
        path: where to write the PNG (parent folders are created); None to only return it.
        dpi: resolution of the PNG.

    Returns:
        The matplotlib Figure.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels = labels if labels is not None else Labels()
    frames = np.asarray(frames)
    rows, cols = grid
    f_count, n = out.num_frames, out.tokens_per_frame
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 RGB of shape [frames, height, width, 3], got "
                         f"{frames.dtype} {frames.shape}")
    if frames.shape[0] != f_count or rows * cols != n:
        raise ValueError(f"{frames.shape[0]} frames with a {rows}x{cols} grid do not match the "
                         f"compressed video of {f_count} frames x {n} tokens")
    if frame_titles is not None and len(frame_titles) != f_count:
        raise ValueError(f"frame_titles must have one entry per frame ({f_count}), got "
                         f"{len(frame_titles)}")
    h, w = frames.shape[1:3]
    chosen = parse_show(show, out, frames_for_aspect(w, h))
    ph, pw = h / rows, w / cols

    kinds = out.kinds.cpu().numpy()
    idx = out.indices.cpu().numpy()
    source = out.source.cpu().numpy()
    parents = out.parents.cpu().numpy()
    roots = out.roots().cpu().numpy()
    kept = np.zeros(f_count * n, dtype=bool)
    kept[idx[kinds == KIND_ADTS]] = True
    kept = kept.reshape(f_count, n)
    dropped = source < 0
    row_frame = idx // n
    merged_roots = np.unique(roots[parents >= 0])
    is_root = np.zeros(f_count * n, dtype=bool)
    is_root[merged_roots] = True
    is_root = is_root.reshape(f_count, n)
    top = highlighted_trees(roots, parents, chosen)
    tree_of = {r: k for k, r in enumerate(top)}
    # segment starts matter only where frames are merged over time
    starts = (set(np.cumsum([0, *out.segment_lengths.tolist()])[:-1].tolist())
              if labels.temporal else set())

    panels = []
    if kept.any():
        panels.append("kept")
    if (parents >= 0).any():
        panels.append("temporal")
    if (kinds != KIND_ADTS).any():
        panels.append("spatial")
    if not panels:
        panels.append("kept")

    column = max(MIN_COLUMN, MIN_CELL * cols, MIN_ROW * w / h)
    cell_h = column * h / w
    width = column * len(chosen) + 0.75 + LEGEND_INCHES
    chars = max(60, int((width - LEGEND_INCHES) * 14))
    sub_lines = textwrap.wrap(subtitle, chars) if subtitle else []
    title_lines = 2 if any(t in starts for t in chosen) or frame_titles is not None else 1
    top_in = 0.5 + 0.18 * len(sub_lines) + 0.17 * title_lines + 0.1
    bottom_in = 0.12
    height = cell_h * len(panels) + 0.1 * (len(panels) - 1) + top_in + bottom_in
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), len(chosen), squeeze=False)
    fig.subplots_adjust(left=0.7 / width, right=1 - LEGEND_INCHES / width, wspace=0.03,
                        hspace=0.1 / cell_h, top=1 - top_in / height, bottom=bottom_in / height)
    extent = (0, w, h, 0)
    cells = _cell_index(h, w, rows, cols)
    cell_pt = 72 * column / cols  # a cell's width in points
    outline = 1.0 if cell_pt > 10 else 0.7
    cluster_colour = palette(np.arange(max(1, len(kinds))))  # by output row
    tree_rgb = np.array([hex_rgb(c) for c in TREE_COLOURS])

    for j, t in enumerate(chosen):
        frame = frames[t]
        grey = _grey(frame)
        colour = frame.astype(np.float32) / 255.0
        for i, panel in enumerate(panels):
            ax = axes[i, j]
            if panel == "kept":
                # kept tokens in colour, the others grey (merged later) or dark (dropped)
                alpha = np.where(kept[t], 0.0, np.where(dropped[t], 0.8, 0.0))
                faded = 0.45 * colour + 0.55 * 0.8
                base = np.where(kept[t][cells][..., None], colour, faded)
                img = _compose(base, cells, np.tile(DARK, (n, 1)), alpha)
                ax.imshow(img, extent=extent, interpolation="nearest")
                _outline(ax, np.nonzero(kept[t])[0], cols, ph, pw, outline + 0.4)
            elif panel == "temporal":
                tint = np.tile(np.array(MUTED), (n, 1))
                alpha = np.where(parents[t] >= 0, 0.55, 0.0)
                tree_k = np.array([tree_of.get(int(r), -1) for r in roots[t]])
                top_member = tree_k >= 0
                tint[top_member] = tree_rgb[tree_k[top_member]]
                alpha[top_member & (parents[t] >= 0)] = 0.75
                alpha[dropped[t]] = 0.8
                tint[dropped[t]] = DARK
                ax.imshow(_compose(grey, cells, tint, alpha), extent=extent,
                          interpolation="nearest")
                _draw_links(ax, t, parents, tree_k, n, cols, ph, pw)
                rp = np.nonzero(is_root[t])[0]
                face = [tuple(tree_rgb[tree_k[p]]) if tree_k[p] >= 0 else (1.0, 1.0, 1.0)
                        for p in rp]
                size = [(0.5 * cell_pt) ** 2 if tree_k[p] >= 0 else (0.3 * cell_pt) ** 2
                        for p in rp]
                ax.scatter(((rp % cols) + 0.5) * pw, ((rp // cols) + 0.5) * ph, s=size,
                           c=face if face else "white", edgecolors="black", linewidths=0.6,
                           zorder=5)
                _outline(ax, np.nonzero(kept[t])[0], cols, ph, pw, outline)
            else:
                rep = source[t]
                here = (rep >= 0) & ~kept[t]
                here &= row_frame[np.where(rep >= 0, rep, 0)] == t
                earlier = (rep >= 0) & ~kept[t] & ~here
                tint = np.zeros((n, 3))
                tint[here] = cluster_colour[rep[here]]
                tint[earlier] = MUTED
                tint[dropped[t]] = DARK
                alpha = np.where(here, TINT, np.where(earlier, 0.55, 0.0))
                alpha[dropped[t]] = 0.8
                ax.imshow(_compose(grey, cells, tint, alpha), extent=extent,
                          interpolation="nearest")
                lab = np.where(here, rep, -1).reshape(rows, cols)
                from matplotlib.collections import LineCollection

                ax.add_collection(LineCollection(_boundaries(lab, ph, pw), colors="white",
                                                 linewidths=0.9, zorder=3))
                mine = (row_frame == t) & (kinds != KIND_ADTS)
                pos = idx[mine] % n
                ax.scatter(((pos % cols) + 0.5) * pw, ((pos // cols) + 0.5) * ph,
                           s=(0.3 * cell_pt) ** 2, c="white", edgecolors="black",
                           linewidths=0.6, zorder=5)
                _outline(ax, np.nonzero(kept[t])[0], cols, ph, pw, outline)
            ax.set_xlim(0, w)
            ax.set_ylim(h, 0)
            ax.set_xticks([])
            ax.set_yticks([])
        head = frame_titles[t] if frame_titles is not None else f"t={t}"
        if t in starts:
            head += "\nnew segment"
        elif title_lines == 2:
            head += "\n "
        axes[0, j].set_title(head, fontsize=9, color="#b00020" if t in starts else "black",
                             linespacing=1.2)

    counts = _counts(out, kept, parents, dropped)
    for i, panel in enumerate(panels):
        text, handles = row_legend(panel, labels, counts, bool(top), bool(dropped.any()))
        axes[i, 0].set_ylabel(text, fontsize=9)
        axes[i, -1].legend(*zip(*handles), loc="center left", bbox_to_anchor=(1.04, 0.5),
                           fontsize=8, frameon=False, handlelength=2.2, borderaxespad=0.0,
                           handler_map=handler_map())
    if title:
        fig.suptitle(title, fontsize=12, y=1 - 0.08 / height, va="top")
    if sub_lines:
        fig.text(0.5 * (1 - LEGEND_INCHES / width), 1 - 0.4 / height, "\n".join(sub_lines),
                 ha="center", va="top", fontsize=9)
    if path is not None:
        save_png(fig, path, dpi)
    return fig


def _draw_links(ax, t: int, parents: np.ndarray, tree_k: np.ndarray, n: int, cols: int,
                ph: float, pw: float) -> None:
    """White lines from a highlighted tree's merged tokens to their parents' positions, where
    the parent is a neighbour (at most NEAR cells away: the tree followed motion; longer jumps,
    common in uniform regions, are not drawn)."""
    from matplotlib import patheffects
    from matplotlib.collections import LineCollection

    segs = []
    for p in np.nonzero((parents[t] >= 0) & (tree_k >= 0))[0]:
        q = parents[t, p] % n
        if q != p and abs(p // cols - q // cols) <= NEAR and abs(p % cols - q % cols) <= NEAR:
            segs.append([(((q % cols) + 0.5) * pw, ((q // cols) + 0.5) * ph),
                         (((p % cols) + 0.5) * pw, ((p // cols) + 0.5) * ph)])
    if segs:
        lines = LineCollection(segs, colors="white", linewidths=1.3, zorder=4)
        lines.set_path_effects([patheffects.withStroke(linewidth=2.6, foreground="black")])
        ax.add_collection(lines)


def _counts(out: CompressedVideo, kept, parents, dropped) -> dict[str, int]:
    f = max(1, out.num_frames)
    return {"kept": int(kept.sum()) // f, "merged": int((parents >= 0).sum()),
            "dropped": int(dropped.sum()), "frames": out.num_frames}
