"""PNG plots from the result files of ``flashvid bench`` (needs matplotlib)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

COLORS = {"reference": "#7f7f7f", "torch": "#1f77b4", "triton": "#d62728"}


def load_rows(out: Path) -> list[dict]:
    path = out / "bench.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no results to plot; run `flashvid bench --out {out}` "
                                "first")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_results(out: Path) -> list[Path]:
    """Draw latency vs frames, stage breakdown bars and (GPU) peak memory vs frames."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ValueError("--plot needs matplotlib: pip install -e '.[viz]'") from err
    rows = load_rows(out)
    device = rows[0]["device"]
    written = []

    # latency of the whole compress against frames, per provider and (tokens, dim, dtype)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    series = defaultdict(list)
    for r in rows:
        if r["stage"] == "compress":
            series[(r["provider"], r["tokens"], r["dim"], r["dtype"])].append(r)
    for (provider, n, dim, dtype), rs in sorted(series.items()):
        rs.sort(key=lambda r: r["frames"])
        f = [r["frames"] for r in rs]
        ax.errorbar(f, [r["median_ms"] for r in rs], fmt="o-", capsize=3,
                    yerr=[[r["median_ms"] - r["p20_ms"] for r in rs],
                          [r["p80_ms"] - r["median_ms"] for r in rs]],
                    color=COLORS.get(provider), label=f"{provider} N={n} D={dim} {dtype}")
    floors = defaultdict(dict)
    for (_, n, dim, dtype), rs in series.items():
        for r in rs:
            floors[(n, dim, dtype)].setdefault(r["frames"], r["floor_ms"])
    for (n, dim, dtype), by_frames in sorted(floors.items()):
        f = sorted(by_frames)
        ax.plot(f, [by_frames[k] for k in f], "k--", lw=1, label=f"floor N={n} D={dim} {dtype}")
    ax.set(xscale="log", yscale="log", xlabel="frames", ylabel="compress latency (ms)",
           title=f"FlashVID compress latency\n{device}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    written.append(_save(fig, out / "latency_vs_frames.png"))

    # stage breakdown: one group of bars per stage, one bar per provider, per shape timed by stage
    key = lambda r: (r["frames"], r["tokens"], r["dim"], r["dtype"])  # noqa: E731
    shapes = sorted({key(r) for r in rows if r["stage"] != "compress"})
    fig, axes = plt.subplots(1, max(1, len(shapes)), figsize=(4.8 * max(1, len(shapes)), 4.0),
                             squeeze=False)
    for ax, shape in zip(axes[0], shapes):
        rs = [r for r in rows if key(r) == shape]
        stages = list(dict.fromkeys(r["stage"] for r in rs))
        providers = list(dict.fromkeys(r["provider"] for r in rs))
        width = 0.8 / max(1, len(providers))
        for i, provider in enumerate(providers):
            vals = [next((r["median_ms"] for r in rs if r["stage"] == s
                          and r["provider"] == provider), 0.0) for s in stages]
            ax.bar([k + i * width for k in range(len(stages))], vals, width,
                   color=COLORS.get(provider), label=provider)
        floors = [next(r["floor_ms"] for r in rs if r["stage"] == s) for s in stages]
        ax.scatter([k + 0.4 - width / 2 for k in range(len(stages))], floors, marker="_",
                   s=400, color="k", label="floor", zorder=3)
        ax.set_xticks([k + 0.4 - width / 2 for k in range(len(stages))], stages, rotation=30,
                      ha="right")
        ax.set(yscale="log", ylabel="median time (ms)",
               title=f"{shape[0]}x{shape[1]}x{shape[2]} {shape[3]}")
        ax.grid(True, axis="y", which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"FlashVID stages — {device}", fontsize=9)
    written.append(_save(fig, out / "stages.png"))

    mem = [r for r in rows if r["stage"] == "compress" and r.get("peak_mem_mb") is not None]
    if mem:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        by = defaultdict(list)
        for r in mem:
            by[(r["provider"], r["tokens"], r["dim"], r["dtype"])].append(r)
        for (provider, n, dim, dtype), rs in sorted(by.items()):
            rs.sort(key=lambda r: r["frames"])
            ax.plot([r["frames"] for r in rs], [r["peak_mem_mb"] for r in rs], "o-",
                    color=COLORS.get(provider), label=f"{provider} N={n} D={dim} {dtype}")
        ax.set(xscale="log", yscale="log", xlabel="frames", ylabel="peak extra GPU memory (MiB)",
               title=f"FlashVID compress peak memory\n{device}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        written.append(_save(fig, out / "memory_vs_frames.png"))
    return written


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
