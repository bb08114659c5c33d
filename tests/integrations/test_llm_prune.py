"""The inner-LLM stage (§10, ``llm_prune``): the pure selection against the published
fixture, and generate() on tiny models of every family against a reference forward written here
from stock model parts (decoder layers, rotary embedding, norm, LM head) that prunes at K.
Qwen3.5's linear-attention (gated DeltaNet) layers run in the reference without any cache: every
step recomputes their recurrence over the kept prompt tokens and the new ones, so generate()'s
cached recurrent state after pruning is checked against a state built from scratch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import vlm_builders as vb
from helpers import DATA, device

import flashvid
from flashvid.integrations import MIN_TRANSFORMERS, last_query_attention, llm_prune_keep

transformers = pytest.importorskip("transformers", minversion=MIN_TRANSFORMERS)

K, RATIO, STEPS = 2, 0.3, 3  # tiny models have 4 decoder layers
LATEST = ("qwen3_vl_moe", "qwen3_5", "qwen3_5_moe")
SETTINGS = ("llava_onevision", "llava_video", "qwen2_5_vl", "qwen3_vl") + LATEST
BUILDERS = {"llava_onevision": vb.tiny_llava_onevision, "llava_video": vb.tiny_llava_onevision,
            "qwen2_5_vl": vb.tiny_qwen2_5_vl, "qwen3_vl": vb.tiny_qwen3_vl,
            "qwen3_vl_moe": vb.tiny_qwen3_vl_moe, "qwen3_5": vb.tiny_qwen3_5,
            "qwen3_5_moe": vb.tiny_qwen3_5_moe}
_MODELS: dict = {}


def model(setting: str, attn: str = "sdpa"):
    family = "llava_onevision" if setting == "llava_video" else setting
    if (family, attn) not in _MODELS:
        _MODELS[family, attn] = BUILDERS[family](attn=attn).to(device())
    return _MODELS[family, attn]


def inputs(setting: str, batch: bool = True) -> dict:
    if setting.startswith("llava"):
        return vb.to(vb.llava_inputs([3, 2] if batch else [3], seed=1), device())
    grids = [(4, 8, 8), (2, 8, 12)] if batch else [(4, 8, 8)]
    return vb.to(vb.qwen_inputs(grids, seed=1, qwen3=setting in vb.QWEN3_FORMAT), device())


def apply(m, setting: str, **kw):
    kw = dict(dict(retention_ratio=0.3, pruning_layer=K, llm_retention_ratio=RATIO), **kw)
    if setting == "llava_video":
        kw["variant"] = "llava_video"
    return flashvid.apply(m, **kw)


def candidates_of(setting: str, ids: torch.Tensor) -> torch.Tensor:
    """[L] bool prunable columns of one rebuilt prompt, from its token ids alone (§10):
    the video run; OneVision's trailing newline (the run's last placeholder) stays outside."""
    video = ids == vb.VIDEO_ID
    if setting == "llava_onevision":
        video[video.nonzero().flatten()[-1]] = False
    return video


# --------------------------------------------------------------------------- pure selection
def test_selection_matches_published_fixture():
    """fastv_* keys of the published run: head-mean of the last query's weights, top
    ceil(V' * 0.3) of the visual range, sorted, with every other token."""
    d = np.load(DATA / "ov_f32_r025.npz")
    attn = torch.from_numpy(d["fastv_attn_in"])  # [1, H, 1, L]
    start, length = int(d["fastv_visual_start"]), int(d["fastv_visual_len"])
    cand = torch.zeros(1, attn.shape[-1], dtype=torch.bool)
    cand[0, start:start + length] = True
    (keep,) = llm_prune_keep(attn, cand, 0.3)
    assert torch.equal(keep, torch.from_numpy(d["fastv_keep_indices"]))
    assert torch.equal(keep[None], torch.from_numpy(d["fastv_position_ids_out"]))
    assert int((keep >= start).sum() - (keep >= start + length).sum()) == \
        int(d["fastv_num_visual_kept"]) == math.ceil(length * 0.3)


def test_selection_ties_padding_and_rows():
    """Ties follow torch.topk on the row's candidate scores alone; padding columns are dropped;
    each row keeps its own count."""
    attn = torch.zeros(2, 1, 8)
    attn[0, 0] = torch.tensor([0.5, 0.1, 0.1, 0.1, 0.1, 0.1, 0.0, 0.0])
    attn[1, 0] = torch.tensor([0.0, 0.0, 0.3, 0.3, 0.3, 0.05, 0.05, 0.0])
    cand = torch.tensor([[0, 1, 1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1, 1, 0]], dtype=torch.bool)
    valid = torch.tensor([[1] * 8, [0, 1, 1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    rows = llm_prune_keep(attn, cand, 0.5, valid)
    top0 = torch.topk(attn[0, 0, 1:6][None], 3).indices[0].sort().values + 1
    assert torch.equal(rows[0], torch.sort(torch.cat([torch.tensor([0, 6, 7]), top0])).values)
    assert torch.equal(rows[1], torch.tensor([1, 2, 3, 4, 7]))  # 3 of the 0.3s, no column 0


def test_last_query_attention_equals_full_attention_row():
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 1, 8, generator=gen)
    k = torch.randn(2, 2, 10, 8, generator=gen)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, :3] = False
    got = last_query_attention(q[:, :, 0], k, mask, scale=0.3)
    full = (q @ k.repeat_interleave(2, dim=1).transpose(-1, -2))[:, :, 0] * 0.3
    full[1, :, :3] = float("-inf")
    torch.testing.assert_close(got, torch.softmax(full, dim=-1))
    assert bool((got[1, :, :3] == 0).all())


# --------------------------------------------------------------------------- reference forward
class Capture:
    """The language model's keyword arguments of its first (prefill) call."""

    def __init__(self, m):
        self.kwargs: dict | None = None
        self.handle = m.model.language_model.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        if self.kwargs is None:
            self.kwargs = dict(kwargs)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def causal(length: int, dtype) -> torch.Tensor:
    allowed = torch.ones(length, length, dtype=torch.bool, device=device()).tril()
    return torch.where(allowed, 0.0, torch.finfo(dtype).min).to(dtype)[None, None]


def rope_fn(attn):
    import sys

    return sys.modules[type(attn).__module__].apply_rotary_pos_emb


def attention_layer(m, k: int) -> int:
    """The layer whose attention ranks the tokens: the last layer before k with softmax
    attention (``self_attn``); k-1 in every model without linear-attention layers."""
    layers = m.model.language_model.layers
    return max(i for i in range(k) if hasattr(layers[i], "self_attn"))


def reference_logits(m, setting: str, row: dict, k: int = K) -> tuple[list[torch.Tensor],
                                                                        list[int]]:
    """Greedy decoding of STEPS tokens with the stage written out: every step recomputes the
    whole sequence (no cache): layers < k on everything; at the attention layer (k-1, or the
    nearest full-attention layer before it) the last prompt token's full attention row picks the
    kept video tokens; layers >= k on kept prompt tokens + new tokens. Linear-attention layers
    run their whole recurrence each step (no mask: one unpadded row)."""
    lm = m.model.language_model
    scoring = attention_layer(m, k)
    with apply(m, setting, llm_retention_ratio=1.0, record=True) as handle, Capture(m) as cap:
        m.generate(**row, max_new_tokens=1)
    ids = handle.last.inputs["input_ids"][0]
    prompt = cap.kwargs["inputs_embeds"]  # [1, L', D]
    length = prompt.shape[1]
    qwen = setting.startswith("qwen")
    if qwen:
        pos = cap.kwargs["position_ids"][1:, :, :]  # [3, 1, L'] M-RoPE rows
    else:
        pos = torch.arange(length, device=device())[None]
    deep = cap.kwargs.get("deepstack_visual_embeds")
    visual = cap.kwargs.get("visual_pos_masks")
    cand = candidates_of(setting, ids)
    logits, tokens, lengths = [], [], []
    embeds = prompt
    with torch.no_grad():
        for step in range(STEPS):
            total = embeds.shape[1]
            extra = torch.arange(1, total - length + 1, device=device())
            p = torch.cat([pos, pos.amax() + extra.expand(*pos.shape[:-1], -1)], dim=-1)
            text_pos = torch.arange(total, device=device())[None]
            h = embeds
            cos, sin = lm.rotary_emb(h, p)
            for i, layer in enumerate(lm.layers):
                if i == scoring:  # the last prompt token's attention in that layer, full matrix
                    attn = layer.self_attn
                    x = layer.input_layernorm(h)
                    q = attn.q_proj(x).view(1, total, -1, attn.head_dim)
                    if q.shape[2] == 2 * lm.config.num_attention_heads:  # Qwen3.5: query, gate
                        q = q.view(1, total, -1, 2 * attn.head_dim)[..., :attn.head_dim]
                    key = attn.k_proj(x).view(1, total, -1, attn.head_dim)
                    if hasattr(attn, "q_norm"):
                        q, key = attn.q_norm(q), attn.k_norm(key)
                    q, key = rope_fn(attn)(q.transpose(1, 2), key.transpose(1, 2), cos, sin)
                    key = key.repeat_interleave(q.shape[1] // key.shape[1], dim=1)
                    w = (q @ key.transpose(-1, -2)) * attn.scaling + causal(total, q.dtype)
                    w = torch.softmax(w.float(), dim=-1).to(q.dtype)[0, :, length - 1, :length]
                    score = w.mean(dim=0)[cand]
                    count = math.ceil(int(cand.sum()) * RATIO)
                    top = cand.nonzero().flatten()[torch.topk(score, count).indices]
                    keep = torch.cat([(~cand).nonzero().flatten(), top]).sort().values
                    keep = torch.cat([keep, torch.arange(length, total, device=device())])
                if i == k:
                    h = h[:, keep]
                    cos, sin, text_pos = cos[:, keep], sin[:, keep], text_pos[:, keep]
                    if step == 0:
                        lengths.append(int(keep.numel()))
                linear = not hasattr(layer, "self_attn")
                h = layer(h, attention_mask=None if linear else causal(h.shape[1], h.dtype),
                          position_embeddings=(cos, sin), position_ids=text_pos)
                if deep is not None and i < len(deep):
                    mask = torch.cat([visual, visual.new_zeros(1, total - length)], dim=1)
                    h = lm._deepstack_process(h, mask, deep[i])
            out = m.lm_head(lm.norm(h))[0, -1]
            logits.append(out)
            token = out.argmax()
            tokens.append(int(token))
            embeds = torch.cat([embeds, m.get_input_embeddings()(token)[None, None]], dim=1)
    return logits, [length, lengths[0]]


def generate_logits(m, setting, inp, **kw):
    with apply(m, setting, record=True, **kw) as handle:
        out = m.generate(**inp, max_new_tokens=STEPS, output_logits=True,
                         return_dict_in_generate=True)
    return out, handle.last


@pytest.mark.slow
@pytest.mark.parametrize(("setting", "k"), [vb.family_param(s, K, id=f"{s}-K{K}") for s in SETTINGS
                                            if s != "qwen3_vl_moe"]  # = Qwen3-VL + MoE layers
                         + [vb.family_param("qwen3_5", 3, id="qwen3_5-K3-attention_from_layer_1")])
def test_generate_equals_reference_forward(setting, k):
    """Batched, left-padded generate() with the stage: each row's first three logits equal the
    reference forward of that row alone; the prefill drops exactly V' - ceil(V' r) tokens.
    Qwen3.5 (layers: linear, full, linear, full): K=2 ranks with layer 1 = K-1, K=3 with layer 1,
    the nearest full-attention layer before the linear layer 2; both prune before a
    linear-attention layer, whose state must then equal the one built from the kept tokens."""
    m = model(setting)
    inp = inputs(setting, batch=True)
    out, last = generate_logits(m, setting, inp, pruning_layer=k)
    assert last.llm.attention_layer == attention_layer(m, k)
    for b in range(2):
        row = vb.select(inp, b, qwen=setting.startswith("qwen"))
        want, (before, after) = reference_logits(m, setting, row, k)
        for step in range(STEPS):
            torch.testing.assert_close(out.logits[step][b], want[step], atol=2e-5, rtol=1e-4)
        assert last.llm.lengths_before[b] == before and last.llm.lengths_after[b] == after
        v = last.llm.candidates[b]
        assert before - after == v - math.ceil(v * RATIO)


class LayerLengths:
    """Sequence length of each decoder layer's output, per call."""

    def __init__(self, m):
        self.calls: list[list[int]] = []
        layers = m.model.language_model.layers
        self.handles = [layer.register_forward_hook(self.hook(i))
                        for i, layer in enumerate(layers)]

    def hook(self, i):
        def record(module, args, output):
            h = output[0] if isinstance(output, tuple) else output
            if i == 0:
                self.calls.append([])
            self.calls[-1].append(int(h.shape[1]))
        return record

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


@pytest.mark.parametrize("setting", [vb.family_param(s) for s in SETTINGS])
def test_prefill_drops_at_layer_k_and_cache_holds_kept(setting):
    m = model(setting)
    inp = inputs(setting, batch=False)
    with apply(m, setting, record=True) as handle, LayerLengths(m) as seen:
        out = m.generate(**inp, max_new_tokens=STEPS, return_dict_in_generate=True)
    ids = handle.last.inputs["input_ids"][0]
    length = int(ids.numel())
    v = int(candidates_of(setting, ids).sum())
    after = length - (v - math.ceil(v * RATIO))
    layers = len(m.model.language_model.layers)
    assert seen.calls[0] == [length] * K + [after] * (layers - K)
    assert all(c == [1] * layers for c in seen.calls[1:])  # decoding never prunes
    assert len(seen.calls) == STEPS
    cache = out.past_key_values if hasattr(out, "past_key_values") else out.cache
    for i in range(layers):
        if not hasattr(m.model.language_model.layers[i], "self_attn"):  # linear attention
            assert cache.layers[i].recurrent_states[0] is not None  # a fixed-size state
            continue
        cached = cache.layers[i].keys.shape[-2]
        assert cached == (length if i < K else after) + STEPS - 1


@pytest.mark.parametrize("setting", [vb.family_param(s)
                                     for s in ("llava_onevision", "qwen3_vl", "qwen3_5")])
def test_stage_off_is_vision_side_only(setting):
    """llm_retention_ratio=1.0 and pruning_layer=None switch the stage off: identical to the
    vision-side-only path, and every layer sees the whole prompt."""
    m = model(setting)
    inp = inputs(setting)
    outs = []
    for kw in ({"llm_retention_ratio": 1.0}, {"pruning_layer": None}):
        with apply(m, setting, **kw) as handle, LayerLengths(m) as seen:
            assert not handle.llm_stage
            outs.append(m.generate(**inp, max_new_tokens=STEPS))
        assert len(set(seen.calls[0])) == 1
    assert torch.equal(outs[0], outs[1])


def _fa_like(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kw):
    """An attention function with FlashAttention's interface: a 2-D padding mask (or None),
    causal alignment to the bottom right (for causal modules)."""
    q_len, kv_len = query.shape[2], key.shape[2]
    groups = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(groups, 1), value.repeat_interleave(groups, 1)
    rows = torch.arange(q_len, device=query.device)[:, None] + kv_len - q_len
    allowed = torch.arange(kv_len, device=query.device)[None, :] <= rows
    if not getattr(module, "is_causal", True):  # the vision towers
        allowed = torch.ones_like(allowed)
    if attention_mask is not None:
        assert attention_mask.dim() == 2
        allowed = allowed[None] & attention_mask.bool()[:, None, :]
        allowed = allowed | (~allowed.any(-1, keepdim=True) & (torch.arange(
            kv_len, device=query.device) == rows))
        allowed = allowed[:, None]
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=allowed,
                                                           scale=scaling)
    return out.transpose(1, 2).contiguous(), None


@pytest.mark.slow
@pytest.mark.parametrize("setting", ["llava_video", "qwen2_5_vl"])
def test_attention_implementations_agree(setting):
    """eager, sdpa and a FlashAttention-style implementation (2-D padding mask) give the same
    tokens, batched, and the same as each row alone."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, flash_attention_mask

    AttentionInterface.register("test_padding_mask_attention", _fa_like)
    ALL_MASK_ATTENTION_FUNCTIONS.register("test_padding_mask_attention", flash_attention_mask)
    inp = inputs(setting)
    results = []
    for attn in ("sdpa", "eager", "test_padding_mask_attention"):
        m = model(setting, attn)
        with apply(m, setting):
            results.append(m.generate(**inp, max_new_tokens=STEPS))
            for b in range(2):
                row = vb.select(inp, b, qwen=setting.startswith("qwen"))
                alone = m.generate(**row, max_new_tokens=STEPS)
                assert torch.equal(alone[0, -STEPS:], results[-1][b, -STEPS:])
    assert torch.equal(results[0], results[1]) and torch.equal(results[0], results[2])


@pytest.mark.parametrize("setting", ["llava_onevision", "qwen2_5_vl"])
def test_prompt_lookup_verification_steps_do_not_prune(setting):
    """Prompt-lookup (speculative) decoding verifies several tokens per call: only the prefill
    prunes, the cache is cropped per layer, and greedy output is unchanged."""
    m = model(setting)
    inp = inputs(setting, batch=False)
    with apply(m, setting):
        want = m.generate(**inp, max_new_tokens=12)
        with LayerLengths(m) as seen:
            got = m.generate(**inp, max_new_tokens=12, prompt_lookup_num_tokens=3)
    assert torch.equal(got, want)
    assert seen.calls[0][K - 1] > seen.calls[0][K]  # the prefill prunes at K
    assert any(c[0] > 1 for c in seen.calls[1:])  # some steps verify several tokens
    assert all(len(set(c)) == 1 for c in seen.calls[1:])  # and never prune


@pytest.mark.parametrize("setting", [vb.family_param(s) for s in ("qwen2_5_vl", "qwen3_5")])
def test_beams_and_return_sequences(setting):
    """Beam search reorders the cache, including Qwen3.5's recurrent states after pruning."""
    m = model(setting)
    inp = inputs(setting)
    with apply(m, setting):
        out = m.generate(**inp, max_new_tokens=STEPS, num_beams=2, num_return_sequences=2)
        row = m.generate(**vb.select(inp, 1, qwen=True), max_new_tokens=STEPS, num_beams=2,
                         num_return_sequences=2)
    assert torch.equal(out[2:, -STEPS:], row[:, -STEPS:])


@pytest.mark.parametrize("family", [vb.family_param("qwen3_5")])
def test_hybrid_attention_layer_rule(family):
    """Qwen3.5 mixes linear-attention and full-attention layers: the stage ranks with the
    nearest full-attention layer at or before K-1 (shown in the handle), and refuses a K with
    only linear-attention layers before it."""
    m = model(family)  # layers: linear, full, linear, full
    with pytest.raises(ValueError, match="layers 0..0 of this model are all linear-attention"):
        flashvid.apply(m, pruning_layer=1)
    assert "generate" not in m.__dict__
    with flashvid.apply(m, pruning_layer=2) as handle:
        assert handle.attention_layer == 1 and "attention_layer" not in repr(handle)
    with flashvid.apply(m, pruning_layer=3) as handle:
        assert handle.attention_layer == 1 and "attention_layer=1" in repr(handle)
    with flashvid.apply(m, pruning_layer=None) as handle:
        assert handle.attention_layer is None
    late = vb.tiny_qwen3_5(layer_types=["linear_attention"] * 3 + ["full_attention"])
    for k in (1, 2, 3):  # Qwen3.5's released pattern (one full layer in four) on 4 layers
        with pytest.raises(ValueError, match="full attention is at layers \\[3\\]"):
            flashvid.apply(late, pruning_layer=k)
    flashvid.apply(late, pruning_layer=None).remove()  # the vision side alone works


def test_stage_refusals():
    m = model("qwen3_vl")
    with pytest.raises(ValueError, match="pruning_layer=4 does nothing"):
        flashvid.apply(m, pruning_layer=4)
    with pytest.raises(ValueError, match="pruning_layer=20 does nothing"):
        flashvid.apply(model("qwen2_5_vl"))  # the preset K = 20 on a 4-layer model
    with pytest.raises(ValueError, match="deepstack"):
        flashvid.apply(m, pruning_layer=1)
    inp = inputs("qwen3_vl")
    with flashvid.apply(m, pruning_layer=K):
        with pytest.raises(ValueError, match="use_cache=False"):
            m.generate(**inp, max_new_tokens=2, use_cache=False)
        with pytest.raises(ValueError, match="assisted decoding"):
            m.generate(**inp, max_new_tokens=2, assistant_model=model("qwen3_vl", "eager"))
    eager = model("qwen3_vl", "eager")
    eager.config._attn_implementation = "flex_attention"
    eager.model.language_model.config._attn_implementation = "flex_attention"
    try:
        with pytest.raises(ValueError, match="'flex_attention'"):
            flashvid.apply(eager, pruning_layer=K)
    finally:
        eager.config._attn_implementation = "eager"
        eager.model.language_model.config._attn_implementation = "eager"
