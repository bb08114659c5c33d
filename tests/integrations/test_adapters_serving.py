"""What a serving user does with a patched model: copies, saves, length limits, multi-turn
caches, records, version floor."""

from __future__ import annotations

import copy
import io
import sys

import pytest
import torch
import vlm_builders as vb
from helpers import device

import flashvid
from flashvid.integrations import MIN_TRANSFORMERS

transformers = pytest.importorskip("transformers", minversion=MIN_TRANSFORMERS)

NEW = 4


def qwen(seed: int = 0):
    return vb.tiny_qwen2_5_vl(seed=seed).to(device())


def inputs(batch: bool = False) -> dict:
    grids = [(4, 8, 8), (2, 8, 12)] if batch else [(4, 8, 8)]
    return vb.to(vb.qwen_inputs(grids, seed=1), device())


def patch(m, **kw):
    return flashvid.apply(m, **dict(dict(pruning_layer=2, retention_ratio=0.3), **kw))


def cache_of(output):
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def test_deepcopy_runs_the_copy():
    """A deepcopy of a patched model is patched and runs itself, not the original."""
    m, inp = qwen(), inputs()
    handle = patch(m)
    before = m.generate(**inp, max_new_tokens=NEW)
    twin = copy.deepcopy(m)
    twin_handle = twin.__dict__["_flashvid_handle"]
    assert twin_handle is not handle and twin_handle.model is twin
    assert torch.equal(twin.generate(**inp, max_new_tokens=NEW), before)
    with torch.no_grad():
        twin.lm_head.weight.mul_(-1.0)
    changed = twin.generate(**inp, max_new_tokens=NEW)
    assert torch.equal(m.generate(**inp, max_new_tokens=NEW), before)  # the original is intact
    other = qwen()  # the same change on an independently patched model
    with torch.no_grad():
        other.lm_head.weight.mul_(-1.0)
    with patch(other):
        assert torch.equal(other.generate(**inp, max_new_tokens=NEW), changed)
    assert not torch.equal(changed, before)
    twin_handle.remove()  # removing the copy's patch leaves the original patched
    assert "generate" not in twin.__dict__ and "generate" in m.__dict__
    handle.remove()


def test_torch_save_and_load_patched_model():
    m, inp = qwen(), inputs()
    with patch(m, record=True) as handle:
        want = m.generate(**inp, max_new_tokens=NEW)
        assert handle.last is not None
        buffer = io.BytesIO()
        torch.save(m, buffer)  # stock saves; so does a patched model
        buffer.seek(0)
        loaded = torch.load(buffer, weights_only=False)
    assert loaded.__dict__["_flashvid_handle"].last is None  # records are not saved
    assert torch.equal(loaded.generate(**inp, max_new_tokens=NEW), want)


@pytest.mark.slow
def test_max_and_min_length_count_the_callers_prompt():
    m, inp = qwen(), inputs()
    length = inp["input_ids"].shape[1]
    stock = m.generate(**inp, max_length=length + 5)
    assert stock.shape[1] == length + 5
    with patch(m) as handle:
        out = m.generate(**inp, max_length=length + 5)
        assert out.shape[1] == length + 5
        assert torch.equal(out, m.generate(**inp, max_new_tokens=5))
        config = copy.deepcopy(m.generation_config)
        config.max_length = length + 3
        assert m.generate(**inp, generation_config=config).shape[1] == length + 3
        with pytest.raises(ValueError, match="max_length=.* leaves no room"):
            m.generate(**inp, max_length=length)
        kwargs = {"min_length": length + 4, "max_length": length + 9}
        handle._new_token_limits(kwargs, length)  # what reaches the stock generate()
        assert kwargs == {"min_new_tokens": 4, "max_new_tokens": 9}


@pytest.mark.parametrize("family", [vb.family_param("qwen3_5_moe")])
def test_hybrid_moe_copy_save_and_length_limits(family):
    """Qwen3.5-MoE (MoE, linear-attention and full-attention layers, the inner-LLM stage on):
    a deepcopy runs itself, a torch.save round trip gives the same tokens, and max_length counts
    the caller's prompt."""
    m = vb.tiny_qwen3_5_moe().to(device())
    inp = vb.to(vb.qwen_inputs([(4, 8, 8)], seed=1, qwen3=True), device())
    length = inp["input_ids"].shape[1]
    handle = patch(m)
    want = m.generate(**inp, max_new_tokens=NEW)
    twin = copy.deepcopy(m)
    assert twin.__dict__["_flashvid_handle"].model is twin
    with torch.no_grad():
        twin.lm_head.weight.mul_(-1.0)
    assert not torch.equal(twin.generate(**inp, max_new_tokens=NEW), want)
    assert torch.equal(m.generate(**inp, max_new_tokens=NEW), want)
    buffer = io.BytesIO()
    torch.save(m, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert torch.equal(loaded.generate(**inp, max_new_tokens=NEW), want)
    assert torch.equal(m.generate(**inp, max_length=length + NEW), want)
    handle.remove()


def test_multi_turn_cache_reuse_is_refused():
    """The returned cache holds the compressed prompt while the returned sequences hold the
    caller's: continuing from both would be silently wrong, so it raises."""
    m, inp = qwen(), inputs()
    with patch(m):
        out = m.generate(**inp, max_new_tokens=NEW, return_dict_in_generate=True)
        question = torch.tensor([[7, 8, 9]], device=device())
        follow = torch.cat([out.sequences, question], dim=1)
        for name in ("past_key_values", "cache"):
            with pytest.raises(ValueError, match="filled by a FlashVID-compressed video prompt"):
                m.generate(input_ids=follow, attention_mask=torch.ones_like(follow),
                           max_new_tokens=2, **{name: cache_of(out)})
        # a video prompt after an existing cache (either name) must be prefilled from scratch
        from transformers import DynamicCache

        used = DynamicCache()  # filled under the name every supported version knows
        m.generate(input_ids=question, max_new_tokens=1, past_key_values=used)
        for name in ("past_key_values", "cache"):  # 5.24 calls it `cache`
            with pytest.raises(ValueError, match="prefilled from scratch"):
                m.generate(**inp, max_new_tokens=2, **{name: used})
        # an empty cache object is fine, and it is tagged afterwards
        fresh = DynamicCache()
        m.generate(**inp, max_new_tokens=2, past_key_values=fresh)
        with pytest.raises(ValueError, match="FlashVID-compressed"):
            m(input_ids=question, past_key_values=fresh)


def test_record_is_opt_in():
    m, inp = qwen(), inputs()
    with patch(m) as handle:
        m.generate(**inp, max_new_tokens=2)
        assert handle.last is None and not handle.record
        handle.record = True
        m.generate(**inp, max_new_tokens=2)
        assert handle.last.llm.lengths_after[0] < handle.last.lengths_after[0]
        handle.record = False
        m.generate(**inp, max_new_tokens=2)
        assert handle.last is None


def test_forward_warns_that_the_stage_runs_in_generate():
    m, inp = qwen(), inputs()
    with patch(m):
        with pytest.warns(UserWarning, match="inner-LLM stage .* runs in generate"):
            m(**inp)
    with patch(m, llm_retention_ratio=1.0):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("error")
            m(**inp)


@pytest.mark.parametrize(("version", "ok"), [("5.17.0", False), (MIN_TRANSFORMERS, True),
                                             ("5.24.0", True), ("6.0.0.dev0", True),
                                             ("5.18.0rc1", False)])
def test_version_floor(monkeypatch, version, ok):
    m = qwen()
    monkeypatch.setattr(sys.modules["transformers"], "__version__", version)
    if ok:
        flashvid.apply(m, pruning_layer=None).remove()
    else:
        with pytest.raises(ImportError, match=f"transformers >= {MIN_TRANSFORMERS}"):
            flashvid.apply(m)
