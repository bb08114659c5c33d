"""Colours, row labels, legends and PNG output of the demo figures (:mod:`.figures`,
:mod:`.compare`). Yellow (kept as-is), the light-blue wash (merged into an earlier frame) and
dark (dropped) mean the same in every row of every figure."""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .show import HIGHLIGHT

KEPT_EDGE = "#ffe600"  # yellow: kept as-is (ADTS) in every row
MUTED = (0.55, 0.75, 0.95)  # light blue wash: merged into an earlier frame (not highlighted)
DARK = (0.06, 0.06, 0.06)  # dropped
TREE_COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#f032e6")[:HIGHLIGHT]
TINT = 0.5  # alpha of the cluster tints


@dataclass(frozen=True)
class Labels:
    """Text of the figure's rows (defaults: FlashVID's stages).

    ``kept``: the stage that keeps tokens as-is; ``temporal``: the merge over time; ``spatial``:
    the spatial merge; ``pruning``: True when the tokens not kept are dropped.
    """

    kept: str = "ADTS"
    temporal: str = "TSTM"
    spatial: str = "DPC-kNN"
    pruning: bool = False


def palette(ids: np.ndarray) -> np.ndarray:
    """[len(ids), 3] RGB in [0, 1]: one colour per distinct id, by rank (golden-ratio hues)."""
    uniq, rank = np.unique(ids, return_inverse=True)
    colours = np.array([colorsys.hsv_to_rgb((0.13 + 0.6180339887 * k) % 1.0,
                                            0.75 if k % 2 else 0.55, 0.95)
                        for k in range(len(uniq))]).reshape(-1, 3)
    return colours[rank.reshape(-1)]


def hex_rgb(colour: str) -> tuple[float, float, float]:
    """(r, g, b) in [0, 1] of a "#rrggbb" colour."""
    return tuple(int(colour[k : k + 2], 16) / 255.0 for k in (1, 3, 5))  # type: ignore


def row_legend(panel: str, labels: Labels, counts: dict[str, int], trees: bool,
               any_dropped: bool):
    """(row label, [(handle, text), ...]) of one row of the figure."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    def cell(face, edge="none", alpha=1.0, width=1.2):
        return Patch(facecolor=face, edgecolor=edge, alpha=alpha, linewidth=width)

    grey = (0.6, 0.6, 0.6)
    kept_box = cell("#c8a070", KEPT_EDGE, width=1.6)
    dot = Line2D([], [], marker="o", linestyle="none", markerfacecolor="white",
                 markeredgecolor="black", markersize=6)
    if panel == "kept":
        handles = [(kept_box, f"kept as-is by {labels.kept} ({counts['kept']} per frame)")]
        if labels.pruning or any_dropped:
            handles.append((cell(DARK), "dropped"))
        if not labels.pruning:
            merges = " and ".join(x for x in (labels.temporal, labels.spatial) if x)
            handles.append((cell((0.8, 0.78, 0.74)), f"not kept: goes on to {merges}"))
        name = f"{labels.kept}\nkept as-is" if not labels.pruning else f"{labels.kept}\nselection"
        return name, handles
    if panel == "temporal":
        handles = []
        if trees:
            handles.append((tuple(cell(c) for c in TREE_COLOURS),
                            f"the {HIGHLIGHT} largest trees here, one colour each"))
        handles += [
            (cell(MUTED), "merged into a token of the previous frame"),
            (dot, "tree root (later tokens merged into it)"),
            (Line2D([], [], color="white", linewidth=1.3, path_effects=_stroke()),
             "merged into a neighbour (followed motion)"),
            (cell(grey), "not merged"),
        ]
        if labels.kept:
            handles.append((cell("none", KEPT_EDGE, width=1.6), f"kept as-is ({labels.kept})"))
        if any_dropped:
            handles.append((cell(DARK), "dropped"))
        return f"{labels.temporal}\nmerged over time", handles
    handles = [
        (tuple(cell(c, alpha=0.8) for c in palette(np.arange(4))),
         "one colour per output token"),
        (dot, "the output token's position"),
    ]
    if labels.temporal:
        handles.append((cell(MUTED), "represented by an earlier frame's token"))
    if labels.kept:
        handles.append((cell("none", KEPT_EDGE, width=1.6), f"kept as-is ({labels.kept})"))
    if any_dropped:
        handles.append((cell(DARK), "dropped (no merge budget)"))
    return f"{labels.spatial}\nspatial merge", handles


def _stroke():
    from matplotlib import patheffects

    return [patheffects.withStroke(linewidth=2.6, foreground="black")]


def handler_map():
    from matplotlib.legend_handler import HandlerTuple

    return {tuple: HandlerTuple(ndivide=None, pad=0.0)}


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
