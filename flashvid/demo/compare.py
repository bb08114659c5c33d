"""The fidelity comparison of strategies: run, tabulate (Markdown, CSV) and plot."""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..config import FlashVIDConfig
from .baselines import STRATEGIES, run_strategy
from .metrics import fidelity
from .style import save_png

RETENTIONS = (0.10, 0.15, 0.20, 0.25)


@dataclass(frozen=True)
class Record:
    """One strategy on one clip at one retention ratio.

    ``count`` is the output rows V, ``budget`` the per-video budget F*B, ``mean``/``worst``/
    ``changed`` the fidelity scores (:mod:`flashvid.demo.metrics`), ``seconds`` the run time.
    """

    clip: str
    strategy: str
    retention: float
    count: int
    budget: int
    inputs: int
    mean: float
    worst: float
    worst_frame: int
    changed: float
    seconds: float


def run_comparison(videos: dict[str, tuple[torch.Tensor, torch.Tensor, tuple[int, int]]],
                   strategies: Sequence[str], retentions: Sequence[float],
                   base: FlashVIDConfig | None = None) -> list[Record]:
    """Every strategy on every video at every retention ratio.

    ``videos`` maps a clip name to (tokens [F, N, D], cls_attn [F, N], grid (rows, cols)).
    """
    base = base if base is not None else FlashVIDConfig()
    records = []
    for clip, (tokens, cls_attn, grid) in videos.items():
        frames, n, _ = tokens.shape
        for r in retentions:
            cfg = base.replace(retention_ratio=r)
            for name in strategies:
                start = time.perf_counter()
                out = run_strategy(name, tokens, cls_attn, cfg, grid)
                seconds = time.perf_counter() - start
                fid = fidelity(tokens, out)
                records.append(Record(clip, name, r, fid.count, frames * out.budget.total,
                                      frames * n, fid.mean, fid.worst_frame,
                                      fid.worst_frame_index, fid.changed, seconds))
    return records


def write_csv(records: Sequence[Record], path: str | Path) -> None:
    """All records, one row each, with a header."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(Record.__dataclass_fields__))
        writer.writeheader()
        for rec in records:
            writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v)
                             for k, v in asdict(rec).items()})


def _cell(rec: Record) -> str:
    changed = "n/a" if math.isnan(rec.changed) else f"{rec.changed:.3f}"
    return f"{rec.mean:.3f} / {rec.worst:.3f} / {changed} / {rec.count}"


def markdown_tables(records: Sequence[Record]) -> str:
    """One Markdown table per clip: strategies x retention ratios; each cell reads
    "mean / worst frame / changed tokens / output count"."""
    clips = list(dict.fromkeys(r.clip for r in records))
    retentions = list(dict.fromkeys(r.retention for r in records))
    strategies = list(dict.fromkeys(r.strategy for r in records))
    by_key = {(r.clip, r.strategy, r.retention): r for r in records}
    parts = []
    for clip in clips:
        first = next(r for r in records if r.clip == clip)
        parts.append(f"**{clip}** ({first.inputs} input tokens); cells: mean / worst frame / "
                     "changed tokens / output count")
        parts.append("")
        parts.append("| strategy | " + " | ".join(f"r = {r:.2f}" for r in retentions) + " |")
        parts.append("|---|" + "---|" * len(retentions))
        for name in strategies:
            cells = [_cell(by_key[clip, name, r]) if (clip, name, r) in by_key else ""
                     for r in retentions]
            parts.append(f"| {name} | " + " | ".join(cells) + " |")
        parts.append("")
    return "\n".join(parts)


def summary_table(records: Sequence[Record]) -> str:
    """A Markdown table of the mean over clips: strategies x ratios, "mean / worst / count"
    (mean fidelity averaged over clips, the worst frame of any clip, mean output count)."""
    retentions = list(dict.fromkeys(r.retention for r in records))
    strategies = list(dict.fromkeys(r.strategy for r in records))
    lines = ["| strategy | " + " | ".join(f"r = {r:.2f}" for r in retentions) + " |",
             "|---|" + "---|" * len(retentions)]
    for name in strategies:
        cells = []
        for r in retentions:
            group = [x for x in records if x.strategy == name and x.retention == r]
            mean = sum(x.mean for x in group) / len(group)
            worst = min(x.worst for x in group)
            count = sum(x.count for x in group) / len(group)
            cells.append(f"{mean:.3f} / {worst:.3f} / {count:.0f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tstm_vs_ttm(records: Sequence[Record]) -> str:
    """A Markdown table per (clip, ratio): TSTM-only minus TTM-only and FlashVID minus
    FlashVID-TTM, for the output count and each fidelity score (positive = TSTM better)."""
    by_key = {(r.clip, r.strategy, r.retention): r for r in records}
    pairs = (("tstm", "ttm"), ("flashvid", "flashvid-ttm"))
    lines = ["| clip | r | TSTM-only vs TTM-only: rows | Δ mean | Δ worst | Δ changed "
             "| FlashVID vs FlashVID-TTM: rows | Δ mean | Δ worst | Δ changed |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    keys = dict.fromkeys((r.clip, r.retention) for r in records)
    for clip, r in keys:
        cells = []
        for a, b in pairs:
            if (clip, a, r) not in by_key or (clip, b, r) not in by_key:
                cells += ["", "", "", ""]
                continue
            x, y = by_key[clip, a, r], by_key[clip, b, r]
            cells += [f"{x.count} vs {y.count}", f"{x.mean - y.mean:+.4f}",
                      f"{x.worst - y.worst:+.4f}", f"{x.changed - y.changed:+.4f}"]
        if any(cells):
            lines.append(f"| {clip} | {r:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


STYLE = {
    "flashvid": ("#d62728", "o", "-"), "flashvid-ttm": ("#ff9896", "o", "--"),
    "uniform": ("#7f7f7f", "s", "-"), "ats": ("#1f77b4", "^", "-"),
    "dts": ("#17becf", "v", "-"), "adts": ("#9467bd", "D", "-"),
    "tstm": ("#2ca02c", "P", "-"), "ttm": ("#98df8a", "P", "--"),
}


PAIRS = (("tstm", "ttm", "TSTM only minus TTM only"),
         ("flashvid", "flashvid-ttm", "FlashVID minus FlashVID-TTM"))


def plot_comparison(records: Sequence[Record], path: str | Path, dpi: int = 90):
    """PNG: one column per clip; rows = mean fidelity, worst-frame fidelity and changed-token
    fidelity against the output token count, one line per strategy (markers at each ratio), each
    row on one y-axis shared by the clips; when TSTM and TTM variants were both run, a last row
    shows their difference in mean fidelity (above 0: TSTM better)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    clips = list(dict.fromkeys(r.clip for r in records))
    strategies = list(dict.fromkeys(r.strategy for r in records))
    by_key = {(r.clip, r.strategy, r.retention): r for r in records}
    pairs = [p for p in PAIRS if p[0] in strategies and p[1] in strategies]
    metrics = [("mean", "mean token fidelity"), ("worst", "worst-frame fidelity"),
               ("changed", "changed-token fidelity")]
    rows = len(metrics) + (1 if pairs else 0)
    fig = Figure(figsize=(4.2 * len(clips) + 0.6, 3.0 * rows + 1.2))
    FigureCanvasAgg(fig)
    # one y-axis per row, shared by the clips, so that clips can be compared at a glance
    axes = fig.subplots(rows, len(clips), squeeze=False, sharey="row")
    for j, clip in enumerate(clips):
        for i, (key, label) in enumerate(metrics):
            ax = axes[i, j]
            for name in strategies:
                pts = sorted((r.count, getattr(r, key)) for r in records
                             if r.clip == clip and r.strategy == name)
                colour, marker, line = STYLE.get(name, ("black", "x", "-"))
                ax.plot([p[0] for p in pts], [p[1] for p in pts], color=colour, marker=marker,
                        linestyle=line, markersize=4, linewidth=1.3,
                        label=STRATEGIES[name].label if name in STRATEGIES else name)
            if j == 0:
                ax.set_ylabel(label, fontsize=9)
        if pairs:
            ax = axes[-1, j]
            ax.axhline(0.0, color="black", linewidth=0.8)
            for a, b, label in pairs:
                pts = sorted((by_key[clip, a, r].count, by_key[clip, a, r].mean
                              - by_key[clip, b, r].mean)
                             for (c, s, r) in by_key if c == clip and s == a
                             and (clip, b, r) in by_key)
                colour, marker, _ = STYLE[a]
                ax.plot([p[0] for p in pts], [p[1] for p in pts], color=colour, marker=marker,
                        markersize=4, linewidth=1.3, label=label)
            if j == 0:
                ax.set_ylabel("mean fidelity: TSTM minus TTM\n(above 0: TSTM better)",
                              fontsize=9)
                ax.legend(fontsize=8, loc="best", frameon=False)
        inputs = next(r.inputs for r in records if r.clip == clip)
        axes[0, j].set_title(f"{clip} ({inputs} input tokens)", fontsize=10)
        axes[-1, j].set_xlabel("output tokens (one marker per retention ratio)", fontsize=9)
        for ax in axes[:, j]:
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=8)
            if j:
                ax.tick_params(labelleft=False)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=9, frameon=False)
    height = fig.get_figheight()
    fig.subplots_adjust(left=1.0 / fig.get_figwidth(), right=0.99, top=1 - 0.35 / height,
                        bottom=1.2 / height, hspace=0.3, wspace=0.06)
    save_png(fig, path, dpi)
    return fig
