"""The result rows of ``flashvid eval``: schema, writing (JSONL + CSV), reading, summary table.

One row per run, task and metric. A *run* is one lmms-eval evaluation of one task with one
setting: ``mode`` "vanilla" (FlashVID off) or "flashvid" at retention ``retention``, with
``frames`` frames per video. Columns (:data:`SCHEMA`, in this order):

* ``run``: the run's id, e.g. ``videomme-flashvid-f32-r0.1``; ``benchmark``: the task as given
  to ``--tasks``; ``task``: the task (or subtask, or group) lmms-eval reported; ``metric``,
  ``filter``: lmms-eval's metric and filter names; ``score``: its value; ``stderr``: its
  standard error as lmms-eval reports it (bootstrap with ``--bootstrap-iters`` > 0, else its
  central-limit estimate where it has one; None otherwise);
  ``samples``: samples lmms-eval scored.
* ``mode``, ``retention`` (the ratio asked for; 1.0 for vanilla), ``frames`` (asked for).
* measured in the model's ``generate()`` calls of the run, per-sample means
  (:mod:`flashvid.eval.meter`): ``measured_samples``, ``frames_measured``,
  ``visual_tokens`` (layer-averaged video tokens in the language model: the quantity the
  retention ratio is defined over), ``visual_tokens_input`` (entering the language model),
  ``visual_tokens_after_k`` (from the inner-LLM stage's layer K on), ``visual_tokens_full``
  (the stock, uncompressed prompt's), ``measured_retention`` (``visual_tokens`` /
  ``visual_tokens_full``), ``prefill_s`` (seconds per sample from entering ``generate()`` to
  the end of the prefill).
* ``wall_s``: the run's wall time; the settings in force: ``preset``, ``variant``,
  ``pruning_layer``, ``llm_retention`` (None when the inner-LLM stage is off or for vanilla),
  ``exact_count``, ``backend``; ``model`` (plugin model), ``lmms_model`` (lmms-eval's base
  model), ``pretrained``, ``model_args``; ``device``, ``flashvid``, ``lmms_eval``,
  ``transformers``, ``torch`` (versions), ``time`` (UTC, ISO 8601, when the run ended).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SCHEMA = (
    "run", "benchmark", "task", "metric", "filter", "score", "stderr", "samples",
    "mode", "retention", "frames",
    "measured_samples", "frames_measured", "visual_tokens", "visual_tokens_input",
    "visual_tokens_after_k", "visual_tokens_full", "measured_retention", "prefill_s",
    "wall_s", "preset", "variant", "pruning_layer", "llm_retention", "exact_count", "backend",
    "model", "lmms_model", "pretrained", "model_args", "device",
    "flashvid", "lmms_eval", "transformers", "torch", "time",
)
JSONL, CSV = "runs.jsonl", "runs.csv"


def metric_rows(results: dict[str, Any], benchmark: str) -> list[dict[str, Any]]:
    """The numeric metrics of an lmms-eval ``simple_evaluate`` result as partial rows
    (``benchmark``, ``task``, ``metric``, ``filter``, ``score``, ``stderr``, ``samples``)."""
    rows = []
    n_samples = results.get("n-samples", {}) or {}
    for task, metrics in (results.get("results") or {}).items():
        if not isinstance(metrics, dict):
            continue
        count = n_samples.get(task, {})
        samples = count.get("effective", count.get("original")) if isinstance(count, dict) \
            else None
        for key, value in metrics.items():
            metric, _, filt = key.partition(",")
            if key == "alias" or "_stderr" in metric or not _number(value):
                continue
            tail = f",{filt}" if filt else ""
            stderr = next((v for v in (metrics.get(f"{metric}_stderr{tail}"),
                                       metrics.get(f"{metric}_stderr_clt{tail}")) if _number(v)),
                          None)
            rows.append({"benchmark": benchmark, "task": task, "metric": metric,
                         "filter": filt or None, "score": float(value),
                         "stderr": float(stderr) if _number(stderr) else None,
                         "samples": samples})
    return rows


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(float(value))


def complete(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with every :data:`SCHEMA` column (missing ones None), in schema order."""
    extra = sorted(set(row) - set(SCHEMA))
    if extra:
        raise ValueError(f"unknown result columns {extra}; expected some of {list(SCHEMA)}")
    return {k: row.get(k) for k in SCHEMA}


def append(out_dir: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Append rows to ``runs.jsonl`` and rewrite ``runs.csv`` from all rows."""
    rows = [complete(r) for r in rows]
    with open(out_dir / JSONL, "a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    write_csv(out_dir / CSV, read(out_dir))


def read(out_dir: Path) -> list[dict[str, Any]]:
    """All rows of ``out_dir/runs.jsonl`` (empty list when there is none)."""
    path = Path(out_dir) / JSONL
    if not path.is_file():
        return []
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{n} is not a JSON row ({err})") from None
    return rows


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=SCHEMA, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in SCHEMA})


def plotted(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows the plots and the summary show: per benchmark, the rows of the task named like
    it (a group's aggregate or the task itself), else all of that benchmark's rows."""
    by_benchmark: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_benchmark.setdefault(row["benchmark"], []).append(row)
    out = []
    for benchmark, group in by_benchmark.items():
        own = [r for r in group if r["task"] == benchmark]
        out += own or group
    return out


def summary_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of the plotted rows: score, % of vanilla at the same frames, tokens."""
    rows = plotted(rows)
    vanilla = {(r["task"], r["metric"], r["frames"]): r["score"] for r in rows
               if r["mode"] == "vanilla"}
    lines = ["| task | metric | frames | mode | retention | score | % of vanilla | visual tokens "
             "/ sample | measured retention | prefill s / sample |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    order = sorted(rows, key=lambda r: (r["task"], r["metric"], r["frames"],
                                        r["mode"] != "vanilla", -(r["retention"] or 0)))
    for r in order:
        base = vanilla.get((r["task"], r["metric"], r["frames"]))
        rel = f"{100 * r['score'] / base:.1f}" if base else "–"
        lines.append(
            f"| {r['task']} | {r['metric']} | {r['frames']} | {r['mode']} | "
            f"{_fmt(r['retention'], '.3g')} | {_fmt(r['score'], '.4g')} | {rel} | "
            f"{_fmt(r['visual_tokens'], ',.0f')} | {_fmt(r['measured_retention'], '.4f')} | "
            f"{_fmt(r['prefill_s'], '.3f')} |")
    return "\n".join(lines) + "\n"


def _fmt(value: Any, spec: str) -> str:
    return "–" if value is None else format(value, spec)


__all__ = ["CSV", "JSONL", "SCHEMA", "append", "complete", "metric_rows", "plotted", "read",
           "summary_table", "write_csv"]
