"""The two views of a sweep, drawn from its rows (``runs.jsonl``) as PNG files.

* ``accuracy_vs_retention.png``: per task and metric, the score against the retention ratio
  asked for, one line per frame count; the vanilla model at that frame count is a dashed
  horizontal line of the same colour.
* ``accuracy_vs_frames.png``: per task and metric, the score against the frames per video,
  one line for vanilla and one per retention ratio; each point is labelled with the measured
  visual tokens per sample (so equal budgets can be read off).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .rows import plotted

RETENTION_PNG, FRAMES_PNG = "accuracy_vs_retention.png", "accuracy_vs_frames.png"


def draw(rows: Sequence[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Write both PNGs into ``out_dir``; returns their paths. ValueError without rows."""
    rows = plotted(list(rows))
    if not rows:
        raise ValueError("no result rows to plot")
    try:
        import matplotlib
    except ImportError as err:
        raise ImportError("the sweep plots need matplotlib: pip install 'flashvid[eval]' "
                          "(or pip install matplotlib)") from err
    matplotlib.use("Agg")
    out_dir = Path(out_dir)
    return [_retention(rows, out_dir / RETENTION_PNG), _frames(rows, out_dir / FRAMES_PNG)]


def _panels(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted({(r["task"], r["metric"]) for r in rows})


def _figure(count: int):
    import matplotlib.pyplot as plt

    cols = min(count, 3)
    lines = math.ceil(count / cols)
    fig, axes = plt.subplots(lines, cols, figsize=(5.2 * cols, 3.9 * lines), squeeze=False)
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    return fig, list(axes.flat)


def _retention(rows: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib.pyplot as plt

    panels = _panels(rows)
    fig, axes = _figure(len(panels))
    frames_all = sorted({r["frames"] for r in rows})
    colours = {f: f"C{i % 10}" for i, f in enumerate(frames_all)}
    for ax, (task, metric) in zip(axes, panels):
        mine = [r for r in rows if (r["task"], r["metric"]) == (task, metric)]
        for frames in frames_all:
            points = sorted((r["retention"], r["score"]) for r in mine
                            if r["mode"] == "flashvid" and r["frames"] == frames)
            if points:
                ax.plot(*zip(*points), "o-", color=colours[frames],
                        label=f"FlashVID, {frames} frames")
            for r in mine:
                if r["mode"] == "vanilla" and r["frames"] == frames:
                    ax.axhline(r["score"], ls="--", color=colours[frames], lw=1.2,
                               label=f"vanilla, {frames} frames")
        ax.set_title(f"{task}: {metric}", fontsize=10)
        ax.set_xlabel("retention ratio asked for")
        ax.set_ylabel("score")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Accuracy vs retention", fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _frames(rows: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib.pyplot as plt

    panels = _panels(rows)
    fig, axes = _figure(len(panels))
    for ax, (task, metric) in zip(axes, panels):
        mine = [r for r in rows if (r["task"], r["metric"]) == (task, metric)]
        series: dict[str, list[dict[str, Any]]] = {}
        for r in mine:
            label = "vanilla" if r["mode"] == "vanilla" else f"FlashVID r={r['retention']:g}"
            series.setdefault(label, []).append(r)
        for i, (label, group) in enumerate(sorted(series.items(),
                                                  key=lambda kv: kv[0] != "vanilla")):
            group.sort(key=lambda r: r["frames"])
            xs, ys = [r["frames"] for r in group], [r["score"] for r in group]
            style = "s--" if label == "vanilla" else "o-"
            ax.plot(xs, ys, style, color="k" if label == "vanilla" else f"C{i % 10}",
                    label=label)
            for r in group:
                if r.get("visual_tokens") is not None:
                    ax.annotate(_tokens(r["visual_tokens"]), (r["frames"], r["score"]),
                                textcoords="offset points", xytext=(4, 4 + 8 * i),
                                fontsize=7)  # staggered per series: equal scores stay legible
        frames = sorted({r["frames"] for r in mine})
        if len(frames) > 1 and frames[-1] / frames[0] >= 4:
            ax.set_xscale("log", base=2)
        ax.set_xticks(frames, [str(f) for f in frames])
        ax.set_title(f"{task}: {metric}", fontsize=10)
        ax.set_xlabel("frames per video (labels: visual tokens per sample)")
        ax.set_ylabel("score")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Accuracy vs frames", fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _tokens(value: float) -> str:
    return f"{value / 1000:.1f}k tok" if value >= 1000 else f"{value:.0f} tok"


__all__ = ["FRAMES_PNG", "RETENTION_PNG", "draw"]
