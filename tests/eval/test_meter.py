"""GenerateMeter on tiny in-memory models: what the language model really got, vanilla and
FlashVID, measured the same way. Needs transformers only (no lmms-eval)."""

import math
import time

import pytest
import torch

pytest.importorskip("transformers")

import vlm_builders as vb  # noqa: E402

import flashvid  # noqa: E402
from flashvid.eval.meter import GenerateMeter  # noqa: E402

pytestmark = pytest.mark.slow
PER_FRAME = 196  # tiny LLaVA-OneVision: 27 x 27 patches pooled to 14 x 14


def _llava():
    model = vb.tiny_llava_onevision()
    return model, vb.llava_inputs([3], seed=1)


def test_vanilla_counts_the_stock_prompt():
    model, inputs = _llava()
    meter = GenerateMeter(model).install()
    stock = (inputs["input_ids"] == vb.VIDEO_ID).sum().item()
    assert stock == 3 * PER_FRAME + 1
    model.generate(**inputs, max_new_tokens=2)
    (rec,) = meter.take()
    assert rec.frames == 3
    assert rec.visual_tokens_full == rec.visual_tokens_input == rec.visual_tokens_after_k == stock
    assert rec.visual_tokens == stock
    assert rec.prefill_s > 0


def test_flashvid_counts_the_rebuilt_prompt_and_the_stage():
    model, inputs = _llava()
    handle = flashvid.apply(model, record=True, retention_ratio=0.2, pruning_layer=2)
    meter = GenerateMeter(model, handle).install()
    t0 = time.perf_counter()
    model.generate(**inputs, max_new_tokens=2)
    wall = time.perf_counter() - t0
    (rec,) = meter.take()
    video = handle.last.videos[0]
    # the prefill's placeholders are what the adapter says it built (two independent paths)
    assert rec.visual_tokens_input == video.slots_after
    budget = handle.config.budget(PER_FRAME).total
    assert 3 * budget + 1 <= rec.visual_tokens_input <= 3 * budget + 3 + 1  # + the newline
    assert rec.visual_tokens_full == 3 * PER_FRAME + 1
    # the stage keeps ceil(V' * ratio) of the V' candidates (OneVision's newline is not one)
    kept = math.ceil((rec.visual_tokens_input - 1) * 0.3) + 1
    assert rec.visual_tokens_after_k == kept
    layers = model.config.text_config.num_hidden_layers
    assert rec.visual_tokens == pytest.approx(
        (2 * rec.visual_tokens_input + (layers - 2) * kept) / layers)
    assert 0 < rec.prefill_s <= wall
    # switched off: the stock path, measured like vanilla
    handle.enabled = False
    model.generate(**inputs, max_new_tokens=2)
    (off,) = meter.take()
    assert off.visual_tokens_input == off.visual_tokens == off.visual_tokens_full


def test_stage_off_and_text_only_calls():
    model, inputs = _llava()
    handle = flashvid.apply(model, record=True, retention_ratio=0.2, pruning_layer=None)
    meter = GenerateMeter(model, handle).install()
    model.generate(**inputs, max_new_tokens=1)
    ids = torch.tensor([[vb.BOS, 5, 6, 7]])
    model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=1)
    video, text = meter.take()
    assert video.visual_tokens_after_k == video.visual_tokens_input == video.visual_tokens
    assert video.visual_tokens < video.visual_tokens_full
    assert (text.frames, text.visual_tokens_full, text.visual_tokens) == (0, 0, 0.0)


def test_qwen_batch_rows_and_frames():
    model = vb.tiny_qwen2_5_vl()
    inputs = vb.qwen_inputs([(4, 8, 8), (2, 8, 12)], seed=0)
    handle = flashvid.apply(model, record=True, retention_ratio=0.25, pruning_layer=None)
    meter = GenerateMeter(model, handle).install()
    model.generate(**inputs, max_new_tokens=1)
    first, second = meter.take()
    assert (first.frames, second.frames) == (8, 4)  # 2 frames per temporal patch
    assert (first.visual_tokens_full, second.visual_tokens_full) == (64, 48)
    assert [first.visual_tokens_input, second.visual_tokens_input] == \
        [v.slots_after for v in handle.last.videos]
    assert first.prefill_s == second.prefill_s  # one call's time, shared by its rows


def test_beams_are_counted_per_caller_row():
    model, inputs = _llava()
    meter = GenerateMeter(model).install()
    model.generate(**inputs, max_new_tokens=1, num_beams=2, do_sample=False)
    (rec,) = meter.take()
    assert rec.visual_tokens_input == 3 * PER_FRAME + 1


def test_errors_are_kept_and_raised_and_uninstall_restores():
    model, inputs = _llava()
    stock = model.generate
    meter = GenerateMeter(model).install()
    assert model.generate is not stock
    bad = dict(inputs, pixel_values_videos=inputs["pixel_values_videos"][:, :2])  # too few
    with pytest.raises(ValueError):
        model.generate(**bad, max_new_tokens=1)
    assert len(meter.errors) == 1 and not meter.records
    meter.uninstall()
    assert "generate" not in model.__dict__
    model.generate(**inputs, max_new_tokens=1)
    assert not meter.records  # hooks are gone too


def test_summary():
    model, inputs = _llava()
    meter = GenerateMeter(model).install()
    model.generate(**inputs, max_new_tokens=1)
    model.generate(**inputs, max_new_tokens=1)
    s = GenerateMeter.summarize(meter.take())
    assert s["samples"] == 2 and s["measured_retention"] == 1.0
    assert s["visual_tokens"] == s["visual_tokens_full"] == 3 * PER_FRAME + 1
    empty = GenerateMeter.summarize([])
    assert empty["samples"] == 0 and empty["visual_tokens"] is None
