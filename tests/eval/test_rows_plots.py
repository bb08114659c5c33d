"""Sweep planning, result rows (JSONL/CSV) and the plots, from made-up lmms-eval results.
Pure Python + matplotlib: runs in every environment."""

import csv
import json

import pytest

from flashvid.eval import rows
from flashvid.eval.plots import FRAMES_PNG, RETENTION_PNG, draw
from flashvid.eval.sweep import Run, plan

PNG = b"\x89PNG\r\n\x1a\n"


def test_grid_plan_orders_vanilla_first_per_frame_count():
    runs = plan(["a", "b"], retentions=[0.1, 0.25], frames=[32, 16])
    assert [r.frames for r in runs] == [16] * 6 + [32] * 6
    assert runs[:3] == [Run("a", "vanilla", 1.0, 16), Run("a", "flashvid", 0.1, 16),
                        Run("a", "flashvid", 0.25, 16)]
    assert len(set(runs)) == len(runs) == 2 * 2 * 3


def test_pairs_plan_with_its_own_vanilla_frames():
    runs = plan(["t"], pairs=[(0.1, 160), (0.2, 80)], vanilla_frames=[16])
    assert runs == [Run("t", "vanilla", 1.0, 16), Run("t", "flashvid", 0.2, 80),
                    Run("t", "flashvid", 0.1, 160)]
    assert plan(["t"], pairs=[(0.1, 160)], vanilla=False) == [Run("t", "flashvid", 0.1, 160)]


@pytest.mark.parametrize("kwargs, message", [
    (dict(retentions=[1.5], frames=[8]), "retention ratios"),
    (dict(retentions=[0.1], frames=[0]), "frame counts"),
    (dict(retentions=[0.1], pairs=[(0.1, 8)]), "either --retention"),
    (dict(vanilla=False), "no runs"),
])
def test_bad_plans(kwargs, message):
    with pytest.raises(ValueError, match=message):
        plan(["t"], **kwargs)


def test_run_ids_and_matching():
    run = Run("videomme", "flashvid", 0.1, 32)
    assert run.id == "videomme-flashvid-f32-r0.1"
    assert Run("videomme", "vanilla", 1.0, 16).id == "videomme-vanilla-f16"
    assert run.matches({"benchmark": "videomme", "mode": "flashvid", "frames": 32,
                        "retention": 0.1})
    assert not run.matches({"benchmark": "videomme", "mode": "flashvid", "frames": 32,
                            "retention": 0.15})


LMMS_RESULTS = {  # the shape of lmms-eval's simple_evaluate result
    "results": {
        "grp": {"alias": "grp", "acc,none": 40.0, "acc_stderr,none": "N/A",
                "acc_stderr_clt,none": 1.5},
        "grp_sub": {"alias": " - sub", "acc,none": 50.0, "acc_stderr,none": 2.5,
                    "other,flt": 0.5, "text,none": "x"},
    },
    "n-samples": {"grp_sub": {"original": 10, "effective": 8}},
}


def test_metric_rows():
    got = rows.metric_rows(LMMS_RESULTS, "grp")
    assert {(r["task"], r["metric"], r["filter"], r["score"], r["stderr"], r["samples"])
            for r in got} == {("grp", "acc", "none", 40.0, 1.5, None),
                              ("grp_sub", "acc", "none", 50.0, 2.5, 8),
                              ("grp_sub", "other", "flt", 0.5, None, 8)}
    assert rows.plotted([dict(r, mode="vanilla", frames=1) for r in got]) == \
        [dict(got[0], mode="vanilla", frames=1)]  # the group's own row


def _row(mode, retention, frames, score, tokens):
    return rows.complete({"run": f"{mode}{retention}{frames}", "benchmark": "t", "task": "t",
                          "metric": "acc", "score": score, "mode": mode,
                          "retention": retention, "frames": frames, "visual_tokens": tokens,
                          "visual_tokens_full": 1000 * frames / 8,
                          "measured_retention": tokens / (1000 * frames / 8),
                          "prefill_s": 0.1})


def _sweep_rows():
    return [_row("vanilla", 1.0, 8, 60.0, 1000.0), _row("flashvid", 0.1, 8, 55.0, 101.0),
            _row("flashvid", 0.25, 8, 58.0, 252.0), _row("vanilla", 1.0, 16, 62.0, 2000.0),
            _row("flashvid", 0.1, 16, 59.0, 203.0)]


def test_rows_round_trip_jsonl_and_csv(tmp_path):
    data = _sweep_rows()
    rows.append(tmp_path, data[:2])
    rows.append(tmp_path, data[2:])
    assert rows.read(tmp_path) == data
    with open(tmp_path / rows.CSV, newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == rows.SCHEMA
        table = list(reader)
    assert [float(r["score"]) for r in table] == [r["score"] for r in data]
    assert table[0]["stderr"] == ""  # None is an empty cell
    lines = (tmp_path / rows.JSONL).read_text().splitlines()
    assert [json.loads(line)["run"] for line in lines] == [r["run"] for r in data]


def test_unknown_columns_are_refused():
    with pytest.raises(ValueError, match="unknown result columns"):
        rows.complete({"run": "x", "accuracy": 1})


def test_summary_table_relative_to_vanilla():
    table = rows.summary_table(_sweep_rows())
    line = next(ln for ln in table.splitlines() if "| 8 | flashvid | 0.1 |" in ln)
    assert f"| {100 * 55 / 60:.1f} |" in line and "| 101 |" in line


def test_plots_are_written(tmp_path):
    paths = draw(_sweep_rows(), tmp_path)
    assert [p.name for p in paths] == [RETENTION_PNG, FRAMES_PNG]
    for p in paths:
        assert p.read_bytes()[:8] == PNG and p.stat().st_size > 5000
    with pytest.raises(ValueError, match="no result rows"):
        draw([], tmp_path)
