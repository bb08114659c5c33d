"""flashvid.apply on tiny random-config LLaVA-OneVision, Qwen2.5-VL, Qwen3-VL, Qwen3-VL-MoE,
Qwen3.5 and Qwen3.5-MoE models."""

from __future__ import annotations

import math
import sys

import pytest
import torch
import torch.nn.functional as nnf
import vlm_builders as vb
from helpers import device

import flashvid
from flashvid.integrations import MIN_TRANSFORMERS, keep_all

transformers = pytest.importorskip("transformers", minversion=MIN_TRANSFORMERS)

LATEST = ("qwen3_vl_moe", "qwen3_5", "qwen3_5_moe")  # skipped where transformers lacks them
QWEN = ("qwen2_5_vl", "qwen3_vl") + LATEST
# LATEST run the tests of family-specific code; family-agnostic tests run on CLASSIC only
CLASSIC = ["llava_onevision", "qwen2_5_vl", "qwen3_vl"]
BUILDERS = {"llava_onevision": vb.tiny_llava_onevision, "qwen2_5_vl": vb.tiny_qwen2_5_vl,
            "qwen3_vl": vb.tiny_qwen3_vl, "qwen3_vl_moe": vb.tiny_qwen3_vl_moe,
            "qwen3_5": vb.tiny_qwen3_5, "qwen3_5_moe": vb.tiny_qwen3_5_moe}
RETENTION = {"llava_onevision": 0.25, "llava_video": 0.25, "qwen2_5_vl": 0.3, "qwen3_vl": 0.3,
             "qwen3_vl_moe": 0.3, "qwen3_5": 0.3, "qwen3_5_moe": 0.3}
NEW = 6  # new tokens per generate call


def params(families) -> list:
    """pytest parameters of ``families``, each skipped where transformers lacks its class."""
    return [vb.family_param(f) for f in families]

_CACHE: dict = {}


def patch(m, *args, **kw):
    """flashvid.apply for the tiny 4-layer models: the inner-LLM stage at layer 2 (the presets'
    K = 20/28 do not exist there), the last call recorded."""
    kw.setdefault("pruning_layer", 2)
    kw.setdefault("record", True)
    return flashvid.apply(m, *args, **kw)


def family_of(setting: str) -> str:
    return "llava_onevision" if setting == "llava_video" else setting


def apply_kwargs(setting: str, **kw) -> dict:
    """flashvid.apply arguments of a setting (the LLaVA-Video variant on the OneVision class)."""
    return dict(kw, variant="llava_video") if setting == "llava_video" else kw


def model(family: str, attn: str = "sdpa"):
    family = family_of(family)
    key = (family, attn)
    if key not in _CACHE:
        _CACHE[key] = BUILDERS[family](attn=attn).to(device())
    return _CACHE[key]


def fresh(family: str):
    """A new instance (same weights) for tests that must not share patched state."""
    return BUILDERS[family]().to(device())


def inputs(family: str, *, batch: bool, ragged: bool = True, seed: int = 1) -> dict:
    """Stock prompts: one video, or two videos of different lengths (left-padded)."""
    family = family_of(family)
    if family == "llava_onevision":
        frames = ([3, 2] if ragged else [2, 2]) if batch else [3]
        return vb.to(vb.llava_inputs(frames, seed=seed), device())
    grids = [(4, 8, 8), (2, 8, 12)] if batch else [(4, 8, 8)]
    return vb.to(vb.qwen_inputs(grids, seed=seed, qwen3=family in vb.QWEN3_FORMAT), device())


def is_qwen(family: str) -> bool:
    return family_of(family) != "llava_onevision"


def generate(m, inp: dict, **kw) -> torch.Tensor:
    return m.generate(**inp, max_new_tokens=NEW, **kw)


class LMInputs:
    """Records what the language model receives in each call (prefill first)."""

    def __init__(self, m):
        self.calls: list[dict] = []
        self.handle = m.model.language_model.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        self.calls.append({k: kwargs.get(k) for k in
                           ("inputs_embeds", "position_ids", "attention_mask")})

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


# --------------------------------------------------------------------------- stock equivalence
@pytest.mark.parametrize("family", CLASSIC)
def test_disabled_is_stock(family):
    """enabled=False: generate() and forward() equal the stock model exactly."""
    m = model(family)
    inp = inputs(family, batch=True, ragged=False)
    stock = generate(m, inp)
    stock_logits = m(**inp).logits
    with patch(m, enabled=False) as handle:
        assert torch.equal(generate(m, inp), stock)
        assert torch.equal(m(**inp).logits, stock_logits)
        assert handle.last is None  # nothing was rebuilt


@pytest.mark.parametrize("family", params(CLASSIC + ["qwen3_vl_moe", "qwen3_5"]))
def test_keep_all_path_is_stock(family):
    """The adapter's whole path (own encoding, prompt rebuild, mm_encoder_outputs, M-RoPE gather)
    with a compressor that keeps every token reproduces stock generate() token for token."""
    m = model(family)
    inp = inputs(family, batch=True, ragged=False)
    stock = generate(m, inp)
    stock_logits = m(**inp).logits
    markers = {"drop_vision_markers": False} if is_qwen(family) else {}
    with patch(m, compressor=keep_all, pruning_layer=None, **markers) as handle:
        assert torch.equal(generate(m, inp), stock)
        assert handle.last.lengths_after == handle.last.lengths_before
        torch.testing.assert_close(m(**inp).logits, stock_logits, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- compression
def expected_lengths(family: str, inp: dict, handle) -> list[int]:
    """Per sample: prompt tokens after compression, from the compressor's outputs."""
    mask = inp["attention_mask"]
    lengths = mask.sum(1).tolist()
    for video in handle.last.videos:
        kept = int(video.result.indices.numel())
        if family == "llava_onevision":
            new = kept + 1  # one trailing newline
        elif family == "llava_video":
            new = kept + video.frames  # a newline after every frame
        else:
            new = kept
        lengths[video.sample] -= video.slots_before - new
        if family in vb.QWEN3_FORMAT:
            lengths[video.sample] -= 2 * video.frames  # <|vision_start|>, <|vision_end|> per frame
    return lengths


@pytest.mark.parametrize("family", CLASSIC + ["llava_video"])  # LATEST: see vision_side_only
def test_compression_shrinks_prompt(family):
    m = model(family)
    inp = inputs(family, batch=True)
    cfg = getattr(flashvid.FlashVIDConfig, family)(retention_ratio=RETENTION[family])
    with patch(m, cfg, **apply_kwargs(family)) as handle, LMInputs(m) as seen:
        out = generate(m, inp)
        want = expected_lengths(family, inp, handle)
        prefill = seen.calls[0]
        assert prefill["inputs_embeds"].shape[1] == max(want)
        if prefill["attention_mask"] is not None:
            assert prefill["attention_mask"].sum(1).tolist() == want
        assert handle.last.lengths_after == want
        assert all(w < b for w, b in zip(want, handle.last.lengths_before))
        for video in handle.last.videos:
            frames, per_frame = video.frames, video.tokens_per_frame
            budget = cfg.budget(per_frame)
            assert frames * budget.total <= video.result.indices.numel() < frames * per_frame
            stock_per_frame = 196 if family == "llava_video" else per_frame
            assert video.slots_before == frames * stock_per_frame + (not is_qwen(family))
        indices = [v.result.indices.clone() for v in handle.last.videos]
        again = generate(m, inp)
    assert torch.equal(out, again)  # deterministic
    assert all(torch.equal(a, v.result.indices) for a, v in zip(indices, handle.last.videos))
    # generate() returns the caller's prompt followed by the new tokens, like stock
    assert out.shape == (inp["input_ids"].shape[0], inp["input_ids"].shape[1] + NEW)
    assert torch.equal(out[:, :inp["input_ids"].shape[1]], inp["input_ids"])


@pytest.mark.parametrize("family", params(CLASSIC + ["llava_video", "qwen3_5", "qwen3_5_moe"]))
def test_batch_equals_single_runs(family):
    """Two videos of different lengths in one left-padded batch give, per video, the same
    compression and the same generated tokens as two single runs."""
    m = model(family)
    inp = inputs(family, batch=True)
    length = inp["input_ids"].shape[1]
    with patch(m, **apply_kwargs(family, retention_ratio=RETENTION[family])) as handle:
        batch_out = generate(m, inp)[:, length:]
        batch_videos = handle.last.videos
        assert [v.sample for v in batch_videos] == [0, 1]
        for b in range(2):
            single = vb.select(inp, b, qwen=is_qwen(family))
            out = generate(m, single)[:, single["input_ids"].shape[1]:]
            assert torch.equal(out[0], batch_out[b])
            assert torch.equal(handle.last.videos[0].result.indices,
                               batch_videos[b].result.indices)
            torch.testing.assert_close(handle.last.videos[0].result.tokens,
                                       batch_videos[b].result.tokens)


def test_generate_with_beams_expands_compressed_videos():
    """num_beams / num_return_sequences expand the per-video compressed features correctly."""
    for family in ("llava_onevision", "qwen3_vl"):
        m = model(family)
        inp = inputs(family, batch=True)
        with patch(m, retention_ratio=RETENTION[family]):
            out = generate(m, inp, num_beams=2, num_return_sequences=2)
            first = generate(m, vb.select(inp, 1, qwen=is_qwen(family)), num_beams=2,
                             num_return_sequences=2)
        length = inp["input_ids"].shape[1]
        assert out.shape == (4, length + NEW)
        assert torch.equal(out[:, :length], inp["input_ids"].repeat_interleave(2, dim=0))
        assert torch.equal(out[2:, length:], first[:, -NEW:])  # sample 1's beams as alone


# --------------------------------------------------------------------------- importance
@pytest.mark.parametrize("variant", ["llava_onevision", "llava_video"])
def test_llava_importance_matches_eager_attention(variant):
    """SigLIP last-layer attention from the eager model (output_attentions), averaged over heads
    and queries, pooled like the features (bilinear 14x14 / average 13x13)."""
    m, eager = model("llava_onevision"), model("llava_onevision", attn="eager")
    for a, b in zip(m.state_dict().values(), eager.state_dict().values()):
        assert torch.equal(a, b)  # same seed -> same weights
    inp = inputs("llava_onevision", batch=False)
    with patch(m, variant=variant, retention_ratio=0.25) as handle:
        handle.prepare_inputs(**inp)
    got = handle.last.videos[0].importance
    pixels = inp["pixel_values_videos"][0]
    with torch.no_grad():
        attn = eager.model.vision_tower(pixels, output_attentions=True).attentions[-1]
    frames = pixels.shape[0]
    cls_attn = attn.float().mean(dim=1).mean(dim=1).view(frames, 1, 27, 27)
    if variant == "llava_onevision":
        want = nnf.interpolate(cls_attn, size=(14, 14), mode="bilinear")
    else:
        want = nnf.avg_pool2d(cls_attn, 2)
    want = want.reshape(frames, -1)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


_CAPTURED: list = []


def _capturing_eager_attention(module, query, key, value, attention_mask=None, scaling=None,
                               dropout=0.0, **kwargs):
    """Plain eager attention that records its weights (registered for the Qwen vision towers)."""
    weights = torch.softmax(query.float() @ key.float().transpose(-1, -2) * scaling, dim=-1)
    if attention_mask is not None:
        raise AssertionError("vision attention is unmasked")
    _CAPTURED.append((module, weights))
    return (weights.to(value.dtype) @ value).transpose(1, 2).contiguous(), weights


@pytest.mark.parametrize("family", params(["qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe", "qwen3_5"]))
def test_qwen_importance_matches_eager_attention(family):
    """Attention weights of the last vision block, taken from the model's own attention call,
    averaged over heads and queries per frame, then over 2x2 merge units, in raster order."""
    transformers.AttentionInterface.register("eager_capture_test", _capturing_eager_attention)
    m, probe = model(family), fresh(family)
    probe.model.visual.config._attn_implementation = "eager_capture_test"
    inp = inputs(family, batch=True)
    with patch(m, retention_ratio=0.3) as handle:
        handle.prepare_inputs(**inp)
    got = torch.cat([v.importance.flatten() for v in handle.last.videos])
    _CAPTURED.clear()
    with torch.no_grad():
        probe.model.get_video_features(inp["pixel_values_videos"], inp["video_grid_thw"])
    last = probe.model.visual.blocks[-1].attn
    frames = [w for module, w in _CAPTURED if module is last]
    assert len(frames) == int(inp["video_grid_thw"][:, 0].sum())  # one attention call per frame
    scores = torch.cat([w[0].mean(dim=0).mean(dim=0) for w in frames])
    want = scores.view(-1, 4).mean(dim=-1)
    if family == "qwen2_5_vl":
        from transformers.vision_utils import get_vision_window_index

        visual = probe.model.visual
        window, _ = get_vision_window_index(inp["video_grid_thw"], visual.spatial_merge_size,
                                            visual.window_size, visual.patch_size)
        want = want[torch.argsort(window.to(want.device))]
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def attention_state(m) -> tuple[list, list]:
    """Every module's attention implementation and registered hooks."""
    impl = [(n, getattr(mod.config, "_attn_implementation", None))
            for n, mod in m.named_modules() if hasattr(mod, "config")]
    hooks = [(n, list(mod._forward_hooks), list(mod._forward_pre_hooks))
             for n, mod in m.named_modules()]
    return impl, hooks


@pytest.mark.parametrize("family", params(CLASSIC + ["qwen3_5"]))
def test_importance_hooks_add_no_attention_maps(family):
    """The adapter neither switches any layer to eager nor leaves hooks behind."""
    m = model(family)
    generate(m, inputs(family, batch=False))  # transformers installs its own capture hooks
    before = attention_state(m)
    with patch(m, retention_ratio=RETENTION[family]) as handle:
        generate(m, inputs(family, batch=False))
        assert handle.last is not None
        assert attention_state(m) == before  # the importance hooks live only during encoding
    assert attention_state(m) == before


# --------------------------------------------------------------------------- Qwen positions
def stock_positions(m, inp: dict) -> torch.Tensor:
    pos, _ = m.model.get_rope_index(inp["input_ids"], mm_token_type_ids=inp["mm_token_type_ids"],
                                    video_grid_thw=inp["video_grid_thw"],
                                    attention_mask=inp["attention_mask"])
    return pos


def qwen3_positions(inp: dict) -> torch.Tensor:
    """[3, B, L] M-RoPE positions of a Qwen3-format prompt, written out: a text token at (p, p, p)
    then p += 1; a frame's run of h/2 x w/2 tokens at (p, p + row, p + column), then
    p += max(h, w) / 2. Padding columns are 0."""
    ids, mask, grid = inp["input_ids"].cpu(), inp["attention_mask"].cpu().bool(), inp[
        "video_grid_thw"].cpu().tolist()
    out = torch.zeros(3, *ids.shape, dtype=torch.long)
    videos = iter(grid)
    for b in range(ids.shape[0]):
        cols = mask[b].nonzero().flatten().tolist()
        p, i = 0, 0
        while i < len(cols):
            if ids[b, cols[i]] != vb.VIDEO_ID:
                out[:, b, cols[i]] = p
                p, i = p + 1, i + 1
                continue
            t, h, w = next(videos)
            for _ in range(t):  # one run per temporal patch, each preceded by text tokens
                while ids[b, cols[i]] != vb.VIDEO_ID:
                    out[:, b, cols[i]] = p
                    p, i = p + 1, i + 1
                for r in range(h // vb.MERGE):
                    for c in range(w // vb.MERGE):
                        out[:, b, cols[i]] = torch.tensor([p, p + r, p + c])
                        i += 1
                p += max(h, w) // vb.MERGE
    return out


@pytest.mark.parametrize("family", params(QWEN))
def test_qwen_kept_tokens_keep_their_positions(family):
    """Every token of the compressed prompt has the M-RoPE position it has in the uncompressed
    prompt: text at its own column, a kept/merged video token at its representative's column."""
    m = model(family)
    inp = inputs(family, batch=True)
    full = stock_positions(m, inp)
    if family in vb.QWEN3_FORMAT:  # the model's own positions equal the written-out ones
        assert torch.equal(full.cpu(), qwen3_positions(inp))
    with patch(m, retention_ratio=0.3) as handle:
        prepared = handle.prepare_inputs(**inp)
    ids, mask = inp["input_ids"], inp["attention_mask"].bool()
    new_ids, new_mask = prepared["input_ids"], prepared["attention_mask"].bool()
    pos = prepared["position_ids"]
    assert pos.shape == (4, ids.shape[0], new_ids.shape[1])
    for b in range(ids.shape[0]):
        video_cols = ((ids[b] == vb.VIDEO_ID) & mask[b]).nonzero().flatten()
        (video,) = [v for v in handle.last.videos if v.sample == b]
        kept = video_cols[video.result.indices]  # the representative's original column
        text = mask[b] & (ids[b] != vb.VIDEO_ID)
        if family in vb.QWEN3_FORMAT:  # published Qwen3-VL drops the vision markers
            text &= (ids[b] != vb.VSTART) & (ids[b] != vb.VEND)
        cols = torch.sort(torch.cat([text.nonzero().flatten(), kept]), stable=True).values
        assert int(new_mask[b].sum()) == cols.numel()
        real = new_mask[b]
        assert torch.equal(new_ids[b, real], ids[b, cols])
        assert torch.equal(pos[1:, b][:, real], full[:, b, cols])
        assert torch.equal(pos[0, b, real], torch.arange(cols.numel(), device=pos.device))
        if family in vb.QWEN3_FORMAT:
            assert not bool(torch.isin(new_ids[b, real], torch.tensor(
                [vb.VSTART, vb.VEND], device=new_ids.device)).any())
            timestamps = torch.arange(10, 10 + video.frames, device=ids.device)
            assert bool(torch.isin(timestamps, new_ids[b, real]).all())


@pytest.mark.parametrize("family", params(["qwen2_5_vl", "qwen3_vl", "qwen3_5"]))
def test_qwen_decoding_positions_equal_stock(family):
    """rope_deltas and the generate() position extension give the new tokens exactly the 3-D
    positions they get without compression."""
    m = model(family)
    inp = inputs(family, batch=True)
    with LMInputs(m) as seen:
        generate(m, inp)
    stock = [c["position_ids"] for c in seen.calls[1:]]
    with patch(m, retention_ratio=0.3) as handle, LMInputs(m) as seen:
        generate(m, inp)
        deltas = m.model.rope_deltas.clone()
        lengths = torch.tensor(handle.last.lengths_after, device=deltas.device)
    ours = [c["position_ids"] for c in seen.calls[1:]]
    assert len(ours) == len(stock) == NEW - 1
    for s, o in zip(stock, ours):
        assert torch.equal(o[1:], s[1:])
    # the cached deltas continue a compressed sequence of length L' at the stock positions
    first_new = stock[0][1, :, 0]
    assert torch.equal(lengths + deltas[:, 0], first_new)


@pytest.mark.parametrize("family", params(["qwen3_vl", "qwen3_vl_moe"]))
def test_qwen3_deepstack_gathered_at_representatives(family):
    m = model(family)
    inp = inputs(family, batch=True)
    with torch.no_grad():
        stock = m.model.get_video_features(inp["pixel_values_videos"], inp["video_grid_thw"])
    with patch(m, retention_ratio=0.3) as handle:
        prepared = handle.prepare_inputs(**inp)
    video = prepared["mm_encoder_outputs"]["video"]
    assert len(video.deepstack_features) == len(stock.deepstack_features) == 2
    for level, stock_level in zip(video.deepstack_features, stock.deepstack_features):
        for v, record in enumerate(handle.last.videos):
            torch.testing.assert_close(level[v], stock_level[v][record.result.indices])


# --------------------------------------------------------------------------- LLaVA-Video
def test_llava_video_variant():
    """variant="llava_video": 2x2 average pooling (13x13) and a newline after every frame.
    keep_all equals stock generate() fed the hand-built LLaVA-Video features; with compression
    every frame's kept tokens are followed by image_newline."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    m = model("llava_onevision")
    inp = inputs("llava_onevision", batch=False)
    pixels = inp["pixel_values_videos"][0]
    frames = pixels.shape[0]
    with torch.no_grad():
        hidden = m.model.vision_tower(pixels, output_hidden_states=True).hidden_states[-1]
        proj = m.model.multi_modal_projector(hidden)  # [F, 729, D]
        grid = proj.view(frames, 27, 27, -1).permute(0, 3, 1, 2)
        pooled = nnf.avg_pool2d(grid, 2).flatten(2).transpose(1, 2)  # [F, 169, D]
        newline = m.model.image_newline
        feats = torch.cat([pooled, newline.expand(frames, 1, -1)], dim=1).reshape(1, -1, 64)
    pre, post = [vb.BOS, 5, 6], [7, 8, 9]
    ids = torch.tensor([pre + [vb.VIDEO_ID] * (frames * 170) + post], device=device())
    stock = m.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW,
                       mm_encoder_outputs={"video": BaseModelOutputWithPooling(
                           pooler_output=feats)})
    with patch(m, variant="llava_video", compressor=keep_all, pruning_layer=None) as handle:
        assert handle.variant == "llava_video"
        out = generate(m, inp)
    assert torch.equal(out[:, -NEW:], stock[:, -NEW:])

    with patch(m, variant="video", retention_ratio=0.25) as handle, LMInputs(m) as seen:
        generate(m, inp)
        embeds = seen.calls[0]["inputs_embeds"][0]
        video = handle.last.videos[0]
    per_frame = torch.bincount(video.result.indices // 169, minlength=frames).tolist()
    assert video.tokens_per_frame == 169
    assert video.slots_after == sum(per_frame) + frames
    start = len(pre)
    for count in per_frame:  # newline right after each frame's tokens
        start += count
        torch.testing.assert_close(embeds[start], newline)
        start += 1
    torch.testing.assert_close(embeds[start - 1], newline)
    assert embeds.shape[0] == len(pre) + video.slots_after + len(post)


def test_llava_variant_detection_and_presets():
    m = model("llava_onevision")
    with patch(m, pruning_layer=None) as handle:  # the preset unchanged, stage off
        assert handle.variant == "llava_onevision"
        assert handle.config == flashvid.FlashVIDConfig.llava_onevision()
        assert not handle.llm_stage
    m.config._name_or_path = "lmms-lab/LLaVA-Video-7B-Qwen2"
    try:
        with patch(m, retention_ratio=0.2) as handle:
            assert handle.variant == "llava_video"
            assert handle.config == flashvid.FlashVIDConfig.llava_video(retention_ratio=0.2,
                                                                        pruning_layer=2)
            assert handle.llm_stage
    finally:
        m.config._name_or_path = ""
    with patch(model("qwen3_vl"), pruning_layer=None) as handle:
        assert handle.config == flashvid.FlashVIDConfig.qwen3_vl()


@pytest.mark.parametrize("family", params(LATEST))
def test_latest_family_presets(family):
    """Each new family gets its own preset (the published Qwen3-VL settings) and drops the
    vision markers as Qwen3-VL does."""
    preset = getattr(flashvid.FlashVIDConfig, family)()
    assert preset == flashvid.FlashVIDConfig.qwen3_vl()
    assert flashvid.FlashVIDConfig.preset(family.replace("_", "-")) == preset
    with patch(model(family), pruning_layer=None) as handle:
        assert handle.family == family and handle.config == preset and handle.drop_markers
        assert not handle.llm_stage


@pytest.mark.parametrize("family", params(LATEST))
def test_latest_family_vision_side_only_and_remove(family):
    """flashvid.apply(model, retention_ratio=0.25, pruning_layer=None): the prefill is shorter
    by exactly the dropped video tokens and markers (counted from the grid and the budget, exactly
    in exact-count mode), the inner-LLM stage is off, and .remove() gives back the stock tokens
    and logits bit for bit."""
    m = fresh(family)
    inp = inputs(family, batch=True)
    stock, stock_logits = m.generate(**inp, max_new_tokens=3), m(**inp).logits
    grid = inp["video_grid_thw"].tolist()
    lengths = inp["attention_mask"].sum(1).tolist()
    for exact in (False, True):
        handle = flashvid.apply(m, retention_ratio=0.25, pruning_layer=None, exact_count=exact)
        assert not handle.llm_stage
        with LMInputs(m) as seen:
            m.generate(**inp, max_new_tokens=1)
        prefill = seen.calls[0]
        got = prefill["attention_mask"].sum(1).tolist()
        assert prefill["inputs_embeds"].shape[1] == max(got)
        for (t, h, w), before, after in zip(grid, lengths, got):
            per_frame = h * w // vb.MERGE ** 2
            budget = handle.config.budget(per_frame).total
            kept = after - (before - t * per_frame - 2 * t)  # t runs lose both vision markers
            if exact:
                assert kept == t * budget
            else:
                assert t * budget <= kept <= t * budget + t
        handle.remove()
    assert torch.equal(m.generate(**inp, max_new_tokens=3), stock)
    assert torch.equal(m(**inp).logits, stock_logits)


# --------------------------------------------------------------------------- patching
def test_remove_restores_stock_and_patch_is_per_instance():
    family = "qwen2_5_vl"
    m, other = fresh(family), fresh(family)
    cls = type(m)
    class_attrs = (cls.generate, cls.forward)
    inp = inputs(family, batch=False)
    stock = generate(m, inp)
    handle = patch(m, retention_ratio=0.3)
    assert "generate" in m.__dict__ and "forward" in m.__dict__
    compressed = generate(m, inp)
    assert not torch.equal(compressed, stock)  # compression changes this model's answer
    assert torch.equal(generate(other, inp), stock)  # another instance is untouched
    assert "generate" not in other.__dict__ and (cls.generate, cls.forward) == class_attrs
    handle.enabled = False
    assert torch.equal(generate(m, inp), stock)
    handle.enabled = True
    assert torch.equal(generate(m, inp), compressed)
    handle.remove()
    handle.remove()  # idempotent
    assert "generate" not in m.__dict__ and "forward" not in m.__dict__
    assert "_flashvid_handle" not in m.__dict__
    assert torch.equal(generate(m, inp), stock)
    with pytest.raises(RuntimeError, match="removed"):
        handle.prepare_inputs(**inp)
    with patch(m, retention_ratio=0.3):  # can be applied again
        assert torch.equal(generate(m, inp), compressed)
    assert torch.equal(generate(m, inp), stock)  # leaving the with block removes it


def test_apply_twice_and_foreign_patch():
    m = model("qwen3_vl")
    with patch(m) as handle:
        with pytest.raises(RuntimeError, match="already"):
            patch(m)
        wrapper = m.__dict__["generate"]
        m.__dict__["generate"] = lambda *a, **k: None  # someone patches on top of us
        with pytest.raises(RuntimeError, match="replaced after"):
            handle.remove()
        m.__dict__["generate"] = wrapper
    assert "generate" not in m.__dict__


# --------------------------------------------------------------------------- errors
def test_errors():
    m = model("qwen2_5_vl")
    with pytest.raises(TypeError, match="Qwen2_5_VLForConditionalGeneration"):
        flashvid.apply(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="base model"):
        flashvid.apply(m.model)
    with pytest.raises(TypeError, match="unknown FlashVIDConfig field"):
        flashvid.apply(m, retention=0.1)
    with pytest.raises(TypeError, match="FlashVIDConfig"):
        flashvid.apply(m, config={"retention_ratio": 0.1})
    with pytest.raises(ValueError, match="retention_ratio"):
        flashvid.apply(m, retention_ratio=1.5)
    with pytest.raises(ValueError, match="LLaVA-OneVision models only"):
        flashvid.apply(m, variant="llava_video")
    with pytest.raises(ValueError, match="variant must be one of"):
        flashvid.apply(model("llava_onevision"), variant="llava_next")
    with pytest.raises(ValueError, match="Qwen models only"):
        flashvid.apply(model("llava_onevision"), drop_vision_markers=True)
    with pytest.raises(TypeError, match="enabled must be a bool"):
        flashvid.apply(m, enabled="yes")
    with pytest.raises(TypeError, match="compressor must be callable"):
        flashvid.apply(m, compressor=3)
    assert "generate" not in m.__dict__  # failed applies leave nothing behind


def test_transformers_too_old(monkeypatch):
    m = model("qwen2_5_vl")
    # transformers swaps its lazy module in sys.modules while loading models: patch the live one
    monkeypatch.setattr(sys.modules["transformers"], "__version__", "4.57.3")
    with pytest.raises(ImportError, match=f"transformers >= {MIN_TRANSFORMERS}.*4.57.3"):
        patch(m)


def test_bad_prompts():
    m = model("qwen2_5_vl")
    inp = inputs("qwen2_5_vl", batch=True)
    with patch(m) as handle:
        short = dict(inp, input_ids=inp["input_ids"].clone())
        short["input_ids"][0, -5] = 7  # one placeholder replaced by text
        idx = (inp["input_ids"][0] == vb.VIDEO_ID).nonzero()[0, 0]
        short["input_ids"][0, idx] = 7
        with pytest.raises(ValueError, match="video placeholder tokens .* but the videos need"):
            generate(m, short)
        with pytest.raises(ValueError, match="inputs_embeds"):
            m(inputs_embeds=torch.zeros(1, 3, 64, device=device()),
              pixel_values_videos=inp["pixel_values_videos"],
              video_grid_thw=inp["video_grid_thw"])
        missing = {k: v for k, v in inp.items() if k != "video_grid_thw"}
        with pytest.raises(ValueError, match="video_grid_thw"):
            generate(m, missing)
        with pytest.raises(ValueError, match="compressor returned indices"):
            handle.compressor = lambda x, a, c: keep_all(x, a, c)._replace(
                indices=torch.arange(x.shape[0] * x.shape[1], device=x.device) + 1)
            generate(m, inp)
    lm = model("llava_onevision")
    lin = inputs("llava_onevision", batch=False)
    with patch(lm):
        with pytest.raises(ValueError, match="frames x 196 \\+ 1 newline"):
            generate(lm, dict(lin, pixel_values_videos=lin["pixel_values_videos"][:, :2]))
        with pytest.raises(ValueError, match="position_ids"):
            lm(**lin, position_ids=torch.arange(lin["input_ids"].shape[1], device=device())[None])


def test_forward_with_labels_and_rebuilt_inputs():
    """forward() with pixel values runs the compressed prompt; labels follow their tokens and
    video positions are ignored (-100)."""
    m = model("llava_onevision")
    inp = inputs("llava_onevision", batch=False)
    labels = inp["input_ids"].masked_fill(inp["input_ids"] == vb.VIDEO_ID, -100)
    with patch(m, retention_ratio=0.25) as handle:
        out = m(**inp, labels=labels)
        prepared = handle.last.inputs
        again = m(**prepared)
    length = handle.last.lengths_after[0]
    assert out.logits.shape == (1, length, vb.VOCAB)
    new_labels = prepared["labels"][0]
    text = prepared["input_ids"][0] != vb.VIDEO_ID
    assert torch.equal(new_labels[text], labels[0][labels[0] != -100])
    assert bool((new_labels[~text] == -100).all())
    assert torch.isfinite(out.loss)
    torch.testing.assert_close(again.logits, out.logits)
    assert math.isclose(out.loss.item(), again.loss.item(), rel_tol=1e-6)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_qwen_image_and_video_in_one_prompt(family):
    """An image before the video passes through untouched: keep_all still equals stock, and
    with compression all image placeholders stay."""
    m = model(family)
    image = (vb.BOS, vb.VSTART) + (vb.IMAGE_ID,) * 16 + (vb.VEND, 5)
    inp = vb.qwen_inputs([(4, 8, 8)], seed=2, qwen3=family in vb.QWEN3_FORMAT, pre=image)
    gen = torch.Generator().manual_seed(5)
    inp["pixel_values"] = torch.randn(64, 3 * vb.TPATCH * vb.PATCH ** 2, generator=gen)
    inp["image_grid_thw"] = torch.tensor([[1, 8, 8]])
    inp["mm_token_type_ids"] = inp["mm_token_type_ids"] + (inp["input_ids"] == vb.IMAGE_ID).long()
    inp = vb.to(inp, device())
    stock = generate(m, inp)
    with patch(m, compressor=keep_all, drop_vision_markers=False, pruning_layer=None):
        assert torch.equal(generate(m, inp), stock)
    with patch(m, retention_ratio=0.3) as handle:
        generate(m, inp)
        rebuilt = handle.last.inputs
    assert int((rebuilt["input_ids"] == vb.IMAGE_ID).sum()) == 16
    assert torch.equal(rebuilt["mm_token_type_ids"] == 1, rebuilt["input_ids"] == vb.IMAGE_ID)
    assert handle.last.lengths_after[0] < handle.last.lengths_before[0]


def test_bfloat16_model():
    """A bfloat16 model: features stay bfloat16, importance is rounded like the published
    model-dtype attention average, and a batched video is compressed as when alone. (Generated
    tokens of a padded bfloat16 batch may drift from single runs, as in the stock model.)"""
    m = fresh("qwen3_vl").to(torch.bfloat16)
    inp = inputs("qwen3_vl", batch=True)
    with patch(m, retention_ratio=0.3) as handle:
        out = generate(m, inp)
        batch_videos = handle.last.videos
        for video in batch_videos:
            assert video.result.tokens.dtype == torch.bfloat16
            assert torch.equal(video.importance, video.importance.bfloat16().float())
        generate(m, vb.select(inp, 1, qwen=True))
    assert out.shape == (2, inp["input_ids"].shape[1] + NEW)
    assert torch.equal(handle.last.videos[0].result.indices, batch_videos[1].result.indices)
