"""``flashvid eval``: retention ratios x frame counts x {vanilla, FlashVID} over lmms-eval tasks.

The model is loaded once (lmms-eval's class through the plugin, :mod:`flashvid.eval.models`);
each run switches FlashVID on or off, sets the retention ratio and the frames per video, and
calls lmms-eval's Python API (``lmms_eval.evaluator.simple_evaluate``) on one task. After each
run its rows go to ``runs.jsonl`` and ``runs.csv`` (:mod:`flashvid.eval.rows`); at the end the
plots (:mod:`flashvid.eval.plots`) and ``summary.md`` are written. ``--resume`` skips the runs
already in ``runs.jsonl``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import rows as rowlib

SETTINGS = "sweep.json"
SUMMARY = "summary.md"
SAMPLES = "samples"


@dataclass(frozen=True)
class Run:
    """One evaluation: ``task`` with FlashVID on (``mode`` "flashvid", ``retention``) or off
    ("vanilla", retention 1.0), ``frames`` frames per video."""

    task: str
    mode: str
    retention: float
    frames: int

    @property
    def id(self) -> str:
        tail = f"-r{self.retention:g}" if self.mode == "flashvid" else ""
        return f"{self.task}-{self.mode}-f{self.frames}{tail}"

    def matches(self, row: dict[str, Any]) -> bool:
        return (row.get("benchmark"), row.get("mode"), row.get("frames")) == \
            (self.task, self.mode, self.frames) and \
            abs(float(row.get("retention") or 0) - self.retention) < 1e-9


def plan(tasks: Sequence[str], *, retentions: Sequence[float] = (),
         frames: Sequence[int] = (), pairs: Sequence[tuple[float, int]] = (),
         vanilla_frames: Sequence[int] | None = None, vanilla: bool = True) -> list[Run]:
    """The runs of a sweep, grouped by frame count (smallest first), then task; vanilla first.

    Args:
        tasks: lmms-eval task (or group) names.
        retentions, frames: the FlashVID grid (every ratio at every frame count).
        pairs: instead of the grid, (ratio, frames) pairs (e.g. the same token budget at more
            frames: (0.1, 160), (0.2, 80)).
        vanilla_frames: frame counts of the vanilla runs; default: every frame count of the
            FlashVID runs.
        vanilla: False runs no vanilla baseline.
    """
    if not tasks:
        raise ValueError("no tasks: give lmms-eval task names with --tasks")
    if pairs and retentions:
        raise ValueError("give either --retention (a grid with --frames) or --pairs, not both")
    flash = [(float(r), int(f)) for r, f in pairs] if pairs else \
        [(float(r), int(f)) for f in frames for r in retentions]
    for r, f in flash:
        if not 0.0 < r <= 1.0:
            raise ValueError(f"retention ratios must be in (0, 1], got {r:g}")
        if f < 1:
            raise ValueError(f"frame counts must be >= 1, got {f}")
    base = sorted(set(vanilla_frames if vanilla_frames is not None else
                      ([f for _, f in flash] or list(frames)))) if vanilla else []
    if any(f < 1 for f in base):
        raise ValueError(f"frame counts must be >= 1, got {base}")
    runs: list[Run] = []
    for f in sorted({f for _, f in flash} | set(base)):
        for task in tasks:
            if f in base:
                runs.append(Run(task, "vanilla", 1.0, f))
            runs += [Run(task, "flashvid", r, f) for r, ff in flash if ff == f]
    if not runs:
        raise ValueError("the sweep has no runs: give --retention/--frames or --pairs, or "
                         "keep the vanilla baseline")
    return list(dict.fromkeys(runs))


@dataclass
class Options:
    """What ``flashvid eval`` was asked (see ``flashvid eval --help``)."""

    model: str
    model_args: str
    tasks: list[str]
    out: Path
    retentions: list[float]
    frames: list[int] | None
    pairs: list[tuple[float, int]]
    vanilla_frames: list[int] | None
    vanilla: bool = True
    include_path: str | None = None
    limit: float | None = None
    batch_size: int = 1
    device: str | None = None
    gen_kwargs: str | None = None
    bootstrap_iters: int = 0
    log_samples: bool = True
    force_simple: bool = False
    verbosity: str = "WARNING"
    seed: int = 0
    resume: bool = False
    overwrite: bool = False


def run_sweep(opts: Options, echo: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run the sweep ``opts`` describes; returns all rows of ``opts.out/runs.jsonl``."""
    from .plugin import family

    fam = family(opts.model)
    out = Path(opts.out)
    model_args = _parse_model_args(opts.model_args)
    if fam.frames_arg in model_args:
        raise ValueError(f"--model-args {fam.frames_arg}=...: give the frames per video with "
                         "--frames (or --pairs) instead")
    if "flashvid" in model_args or "retention" in model_args or "retention_ratio" in model_args:
        raise ValueError("--model-args: flashvid= and retention= are set by the sweep "
                         "(--retention, --pairs, --no-vanilla); remove them")
    settings = {"model": fam.name, "model_args": opts.model_args, "tasks": opts.tasks,
                "include_path": opts.include_path, "limit": opts.limit,
                "gen_kwargs": opts.gen_kwargs, "force_simple": opts.force_simple}
    done = _prepare_out(out, settings, opts.resume, opts.overwrite)

    lm = None
    frames = opts.frames
    if frames is None and not opts.pairs:
        lm = _load(fam, model_args, opts, flashvid_on=bool(opts.retentions),
                   retention=opts.retentions[0] if opts.retentions else None)
        frames = [lm.flashvid_frames]
    runs = plan(opts.tasks, retentions=opts.retentions, frames=frames or [], pairs=opts.pairs,
                vanilla_frames=opts.vanilla_frames, vanilla=opts.vanilla)
    todo = [r for r in runs if not any(r.matches(row) for row in done)]
    if len(todo) < len(runs):
        echo(f"resuming: {len(runs) - len(todo)} of {len(runs)} runs already in "
             f"{out / rowlib.JSONL}")
    first_flash = next((r for r in todo if r.mode == "flashvid"), None)
    if todo and lm is None:
        lm = _load(fam, model_args, opts, flashvid_on=first_flash is not None,
                   retention=first_flash.retention if first_flash else None)
    from lmms_eval.tasks import TaskManager

    manager = TaskManager(opts.verbosity, include_path=opts.include_path, model_name=fam.base) \
        if todo else None
    meta = _metadata(fam, lm, opts, model_args) if todo else {}
    started = time.perf_counter()
    for i, run in enumerate(todo, 1):
        echo(f"[{i}/{len(todo)}] {run.task}: {run.mode}"
             + (f" r={run.retention:g}" if run.mode == "flashvid" else "")
             + f", {run.frames} frames ...")
        t0 = time.perf_counter()
        new_rows = _evaluate(lm, manager, run, opts, meta, out)
        wall = time.perf_counter() - t0
        for row in new_rows:
            row["wall_s"] = wall
        rowlib.append(out, new_rows)
        echo(_progress_line(run, new_rows, wall, time.perf_counter() - started, i, len(todo)))
    all_rows = rowlib.read(out)
    if all_rows:
        from .plots import draw

        paths = draw(all_rows, out)
        (out / SUMMARY).write_text(rowlib.summary_table(all_rows), encoding="utf-8")
        echo(f"wrote {out / rowlib.JSONL}, {out / rowlib.CSV}, {out / SUMMARY}, "
             + ", ".join(str(p) for p in paths))
    return all_rows


def replot(out: Path, echo: Callable[[str], None] = print) -> list[Path]:
    """Redraw the plots and ``summary.md`` of a finished (or partial) sweep from its rows."""
    from .plots import draw

    out = Path(out)
    all_rows = rowlib.read(out)
    if not all_rows:
        raise FileNotFoundError(f"no result rows in {out / rowlib.JSONL}")
    paths = draw(all_rows, out)
    (out / SUMMARY).write_text(rowlib.summary_table(all_rows), encoding="utf-8")
    echo(f"wrote {out / SUMMARY}, " + ", ".join(str(p) for p in paths))
    return paths


# ---------------------------------------------------------------------------- steps
def _parse_model_args(text: str) -> dict[str, Any]:
    from lmms_eval.utils import simple_parse_args_string

    try:
        return simple_parse_args_string(text or "")
    except ValueError as err:
        raise ValueError(f"--model-args {text!r} is not name=value,name=value ({err})") from None


def _prepare_out(out: Path, settings: dict[str, Any], resume: bool,
                 overwrite: bool) -> list[dict[str, Any]]:
    out.mkdir(parents=True, exist_ok=True)
    existing = out / rowlib.JSONL
    saved = out / SETTINGS
    if existing.exists() and not (resume or overwrite):
        raise ValueError(f"{existing} exists: pass --resume to continue that sweep or "
                              "--overwrite to start again, or choose another --out")
    if resume and saved.is_file():
        before = json.loads(saved.read_text(encoding="utf-8"))
        changed = [k for k in ("model", "model_args", "include_path", "limit", "gen_kwargs",
                               "force_simple") if before.get(k) != settings.get(k)]
        if changed:
            raise ValueError(f"--resume: {', '.join(changed)} differ from the sweep in {out} "
                             f"({ {k: before.get(k) for k in changed} }); use another --out")
    if overwrite or not resume:
        for name in (rowlib.JSONL, rowlib.CSV, SUMMARY):
            (out / name).unlink(missing_ok=True)
    saved.write_text(json.dumps(settings, indent=1) + "\n", encoding="utf-8")
    return rowlib.read(out) if resume else []


def _load(fam, model_args: dict[str, Any], opts: Options, *, flashvid_on: bool,
          retention: float | None):
    from lmms_eval.models import get_model

    kwargs = dict(model_args)
    kwargs["flashvid"] = flashvid_on
    if flashvid_on and retention is not None:
        kwargs["retention"] = retention
    for name, value in (("batch_size", opts.batch_size), ("device", opts.device)):
        if value is not None:
            kwargs.setdefault(name, value)
    cls = get_model(fam.name, opts.force_simple)
    lm = cls(**kwargs)
    lm.flashvid_keep_loaded = True  # one model for every run (lmms-eval would delete it)
    return lm


def _evaluate(lm, manager, run: Run, opts: Options, meta: dict[str, Any],
              out: Path) -> list[dict[str, Any]]:
    from lmms_eval.evaluator import simple_evaluate

    lm.flashvid_configure(enabled=run.mode == "flashvid",
                          retention=run.retention if run.mode == "flashvid" else None)
    lm.flashvid_frames = run.frames
    lm.flashvid_meter.take()
    results = simple_evaluate(
        model=lm, tasks=[run.task], limit=opts.limit, batch_size=opts.batch_size,
        device=opts.device, gen_kwargs=opts.gen_kwargs, task_manager=manager,
        bootstrap_iters=opts.bootstrap_iters, log_samples=opts.log_samples,
        verbosity=opts.verbosity, random_seed=opts.seed, numpy_random_seed=opts.seed + 1234,
        torch_random_seed=opts.seed + 1234, fewshot_random_seed=opts.seed + 1234)
    if results is None:
        raise RuntimeError(f"lmms-eval returned no results for {run.id} (a non-zero rank?)")
    measured = lm.flashvid_meter.summarize(lm.flashvid_meter.take())
    state = lm.flashvid_state()
    metrics = rowlib.metric_rows(results, run.task)
    if not metrics:
        raise RuntimeError(f"lmms-eval reported no numeric metric for {run.task} ({run.id}); "
                           f"its results: {results.get('results')}")
    if opts.log_samples and results.get("samples"):
        (out / SAMPLES).mkdir(exist_ok=True)
        with open(out / SAMPLES / f"{run.id}.jsonl", "w", encoding="utf-8") as f:
            for task, samples in results["samples"].items():
                for sample in samples:
                    f.write(json.dumps({"task": task, **sample}, default=str) + "\n")
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    rows = []
    for m in metrics:
        rows.append({
            "run": run.id, **m, "mode": run.mode, "retention": run.retention,
            "frames": run.frames, "measured_samples": measured["samples"],
            "frames_measured": measured["frames"],
            **{k: measured[k] for k in ("visual_tokens", "visual_tokens_input",
                                        "visual_tokens_after_k", "visual_tokens_full",
                                        "measured_retention", "prefill_s")},
            **{k: v for k, v in state.items() if k not in ("mode", "retention")},
            **meta, "time": now})
    return rows


def _metadata(fam, lm, opts: Options, model_args: dict[str, Any]) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    import torch

    import flashvid

    def ver(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    device = getattr(lm.model, "device", None)
    return {"model": fam.name, "lmms_model": fam.base,
            "pretrained": model_args.get("pretrained"), "model_args": opts.model_args,
            "device": str(device) if device is not None else opts.device,
            "flashvid": flashvid.__version__, "lmms_eval": ver("lmms_eval"),
            "transformers": ver("transformers"), "torch": torch.__version__}


def _progress_line(run: Run, new_rows: list[dict[str, Any]], wall: float, elapsed: float,
                   i: int, total: int) -> str:
    own = [r for r in new_rows if r["task"] == run.task] or new_rows
    scores = ", ".join(f"{r['metric']}={r['score']:.4g}" for r in own[:3])
    r0 = new_rows[0]
    tokens = ""
    if r0.get("visual_tokens") is not None:
        tokens = (f"; {r0['visual_tokens']:,.0f} visual tokens/sample of "
                  f"{r0['visual_tokens_full']:,.0f} ({100 * (r0['measured_retention'] or 0):.1f}%)"
                  f", prefill {r0['prefill_s']:.3f} s/sample")
    left = (total - i) * elapsed / i
    eta = f"; about {_duration(left)} left" if i < total else ""
    return f"    done in {_duration(wall)}: {scores}{tokens}{eta}"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
