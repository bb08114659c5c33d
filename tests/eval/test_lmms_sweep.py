"""``flashvid eval`` and lmms-eval's own command line end to end, on tiny random checkpoints and
the local flashvid_clips_mc task (5 clips cut from the demo's MP4s). Needs lmms-eval.

Checked: the runs complete; FlashVID really compressed (the measured visual tokens per sample
are what the configuration's budget gives, and vanilla keeps all of them); the scores are
parsed and written (recomputed here from the logged answers); the plots are produced;
``--resume`` runs only what is missing."""

import json
import math
import sys
from pathlib import Path

import pytest

from flashvid import FlashVIDConfig
from flashvid.cli import main
from flashvid.eval import rows as rowlib

pytestmark = pytest.mark.slow
TASK_DIR = str(Path(__file__).parent / "tasks")
# frames of 112 x 84 pixels become 2 x 3 merge units (6 tokens per temporal patch)
QWEN_ARGS = "device=cpu,device_map=cpu,min_pixels=1568,max_pixels=6272,pruning_layer=2"
# no device_map: the plugin makes it cpu (lmms-eval's "auto" would move the inputs to CUDA)
QWEN3_ARGS = "device=cpu,min_pixels=2048,max_pixels=9216,pruning_layer=2"
PNG = b"\x89PNG\r\n\x1a\n"


def _tasks_utils():
    import importlib.util

    spec = importlib.util.spec_from_file_location("clips_task_utils", f"{TASK_DIR}/utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sweep(out, model, model_args, *extra):
    argv = ["eval", "--model", model, "--model-args", model_args, "--tasks", "flashvid_clips_mc",
            "--include-path", TASK_DIR, "--out", str(out), *extra]
    assert main(argv) == 0


def _by_run(rows):
    return {(r["mode"], r["retention"], r["frames"]): r for r in rows}


def _check_scores(out, rows, docs):
    """Every row's score is the share of right answers in its logged samples."""
    parse = _tasks_utils().parse_choice
    answer = {d["id"]: d["answer"] for d in docs}
    for row in rows:
        samples = [json.loads(line) for line in
                   (out / "samples" / f"{row['run']}.jsonl").read_text().splitlines()]
        assert len(samples) == row["samples"] == row["measured_samples"] == len(docs)
        right = []
        for s in samples:
            response = s["filtered_resps"][0] if s.get("filtered_resps") else s["resps"][0][0]
            if isinstance(response, dict):
                response = response.get("text", "")
            right.append(parse(response) == answer[s["doc"]["id"]])
        assert row["score"] == pytest.approx(100.0 * sum(right) / len(right))


def test_qwen2_5_vl_sweep(checkpoint, in_data, capsys):
    import taskdata

    docs = [json.loads(line) for line in (in_data / taskdata.DATA).read_text().splitlines()]
    out = in_data.parent / "sweep_qwen25"
    _sweep(out, "flashvid_qwen2_5_vl", f"pretrained={checkpoint('qwen2_5_vl')},{QWEN_ARGS}",
           "--frames", "4,8", "--retention", "0.25,0.5")
    printed = capsys.readouterr().out
    assert "[6/6] flashvid_clips_mc: flashvid r=0.5, 8 frames" in printed
    rows = rowlib.read(out)
    assert len(rows) == 6 and {r["metric"] for r in rows} == {"mc_accuracy"}
    assert all(tuple(r) == rowlib.SCHEMA for r in rows)
    runs = _by_run(rows)
    per_patch = runs[("vanilla", 1.0, 4)]["visual_tokens_full"] // 2  # per temporal patch
    assert per_patch == 6
    for frames in (4, 8):
        vanilla = runs[("vanilla", 1.0, frames)]
        patches = frames // 2
        assert vanilla["frames_measured"] == frames
        assert vanilla["visual_tokens"] == vanilla["visual_tokens_full"] == patches * per_patch
        assert vanilla["measured_retention"] == 1.0 and vanilla["pruning_layer"] is None
        tokens = []
        for r in (0.25, 0.5):
            row = runs[("flashvid", r, frames)]
            assert row["visual_tokens_full"] == vanilla["visual_tokens_full"]
            budget = FlashVIDConfig.qwen2_5_vl(retention_ratio=r).budget(per_patch).total
            assert patches * budget <= row["visual_tokens_input"] <= patches * (budget + 1)
            kept = math.ceil(row["visual_tokens_input"] * 0.3)
            assert row["visual_tokens_after_k"] == kept
            assert row["visual_tokens"] == pytest.approx((2 * row["visual_tokens_input"]
                                                          + 2 * kept) / 4)
            assert row["measured_retention"] == pytest.approx(
                row["visual_tokens"] / row["visual_tokens_full"])
            assert row["pruning_layer"] == 2 and row["llm_retention"] == 0.3
            assert row["prefill_s"] > 0 and row["wall_s"] > 0
            tokens.append(row["visual_tokens"])
        assert tokens[0] < tokens[1] < vanilla["visual_tokens"]
    _check_scores(out, rows, docs)
    for name in ("accuracy_vs_retention.png", "accuracy_vs_frames.png"):
        assert (out / name).read_bytes()[:8] == PNG
    assert (out / rowlib.CSV).read_text().splitlines()[0] == ",".join(rowlib.SCHEMA)
    assert "| flashvid_clips_mc | mc_accuracy | 8 | flashvid | 0.25 |" in \
        (out / "summary.md").read_text()

    # an existing sweep is never overwritten by accident; --resume runs only the new ratio
    assert main(["eval", "--model", "flashvid_qwen2_5_vl", "--model-args", "x=1", "--tasks",
                 "flashvid_clips_mc", "--out", str(out)]) == 2
    _sweep(out, "flashvid_qwen2_5_vl", f"pretrained={checkpoint('qwen2_5_vl')},{QWEN_ARGS}",
           "--frames", "4", "--retention", "0.25,0.75", "--resume")
    printed = capsys.readouterr().out
    assert "resuming: 2 of 3 runs" in printed and "[1/1]" in printed and "[2/" not in printed
    assert len(rowlib.read(out)) == 7


def test_qwen3_vl_and_llava_onevision_pairs(checkpoint, in_data):
    import taskdata

    docs = [json.loads(line) for line in (in_data / taskdata.DATA).read_text().splitlines()]
    out = in_data.parent / "sweep_qwen3"
    _sweep(out, "flashvid_qwen3_vl", f"pretrained={checkpoint('qwen3_vl')},{QWEN3_ARGS}",
           "--vanilla-frames", "4", "--pairs", "0.5:8")
    runs = _by_run(rowlib.read(out))
    vanilla, flash = runs[("vanilla", 1.0, 4)], runs[("flashvid", 0.5, 8)]
    per_patch = vanilla["visual_tokens_full"] / 2
    assert vanilla["visual_tokens"] == vanilla["visual_tokens_full"] and per_patch == 6
    assert flash["visual_tokens_full"] == 4 * per_patch and flash["frames_measured"] == 8
    assert flash["visual_tokens"] < flash["visual_tokens_full"]
    _check_scores(out, list(runs.values()), docs)

    out = in_data.parent / "sweep_llava"
    _sweep(out, "flashvid_llava_hf", f"pretrained={checkpoint('llava_onevision')},device=cpu,"
           "pruning_layer=2", "--frames", "3", "--retention", "0.1", "--no-log-samples")
    runs = _by_run(rowlib.read(out))
    vanilla, flash = runs[("vanilla", 1.0, 3)], runs[("flashvid", 0.1, 3)]
    assert vanilla["visual_tokens"] == vanilla["visual_tokens_full"] == 3 * 196 + 1
    budget = FlashVIDConfig.llava_onevision(retention_ratio=0.1).budget(196).total
    assert 3 * budget + 1 <= flash["visual_tokens_input"] <= 3 * (budget + 1) + 1
    assert flash["visual_tokens_after_k"] == math.ceil((flash["visual_tokens_input"] - 1)
                                                       * 0.3) + 1
    assert flash["preset"] == "llava_onevision" and flash["variant"] == "llava_onevision"
    assert not (out / "samples").exists()


def test_qwen3_5_when_flashvid_supports_it(checkpoint, in_data):
    from lmms_eval.models import list_available_models

    if "flashvid_qwen3_5" not in list_available_models():
        pytest.skip("flashvid_qwen3_5 is registered only where flashvid.apply supports "
                    "Qwen3_5ForConditionalGeneration (and lmms-eval has qwen3_5)")
    out = in_data.parent / "sweep_qwen3_5"
    _sweep(out, "flashvid_qwen3_5", f"pretrained={checkpoint('qwen3_5')},{QWEN3_ARGS},"
           "enable_thinking=false", "--frames", "4", "--retention", "0.5", "--limit", "2")
    runs = _by_run(rowlib.read(out))
    vanilla, flash = runs[("vanilla", 1.0, 4)], runs[("flashvid", 0.5, 4)]
    assert vanilla["visual_tokens"] == vanilla["visual_tokens_full"] > 0
    assert flash["visual_tokens_full"] == vanilla["visual_tokens_full"]
    assert flash["visual_tokens_input"] < flash["visual_tokens_full"]
    assert flash["visual_tokens"] < flash["visual_tokens_input"]  # the stage ran at layer 2


def test_lmms_eval_command_line(checkpoint, in_data, monkeypatch):
    """The plugin through lmms-eval's own command line (its argument parser, the entry point,
    --include_path, --model_args), in this process."""
    from lmms_eval.__main__ import cli_evaluate

    out = in_data.parent / "lmms_cli"
    args = (f"pretrained={checkpoint('qwen2_5_vl')},{QWEN_ARGS},retention=0.25,"
            "max_num_frames=4")
    monkeypatch.setattr(sys, "argv", [
        "lmms-eval", "--model", "flashvid_qwen2_5_vl", "--model_args", args, "--tasks",
        "flashvid_clips_mc", "--include_path", TASK_DIR, "--output_path", str(out),
        "--limit", "2", "--verbosity", "ERROR"])
    cli_evaluate()
    results = [json.loads(p.read_text()) for p in out.rglob("*results*.json")]
    assert results, f"no results file under {out}"
    result = results[0]
    assert result["config"]["model_args"] == args
    assert 0.0 <= result["results"]["flashvid_clips_mc"]["mc_accuracy,none"] <= 100.0
    assert result["n-samples"]["flashvid_clips_mc"]["effective"] == 2
