"""Tiny random-weight checkpoints that lmms-eval loads as it loads real ones (no download).

``build(family, directory)`` writes what ``from_pretrained`` and ``AutoProcessor``/
``AutoTokenizer.from_pretrained`` read: config.json, seeded random weights (safetensors, about
1 MB), a byte-level tokenizer with the family's special tokens, the image and video processor
configs and a chat template. The grids are small on purpose:

* ``llava_onevision``: SigLIP at 54 px with patch 2 (27 x 27 patches, like 384 px / 14),
  pooled to 14 x 14 = 196 tokens per frame (the real count), Qwen2 language model;
* ``qwen2_5_vl`` (patch 14) / ``qwen3_vl``, ``qwen3_5`` (patch 16): a 2-frame temporal patch of
  a frame of 2 x 3 merge units is 6 tokens. Qwen3.5 (where transformers has it) alternates
  linear- and full-attention layers.

Every language model has 4 decoder layers, so the inner-LLM stage runs with ``pruning_layer``
1 to 3.
"""

from __future__ import annotations

import json
from pathlib import Path

FAMILIES = ("llava_onevision", "qwen2_5_vl", "qwen3_vl", "qwen3_5")
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
           "<|image_pad|>", "<|video_pad|>", "<image>", "<video>"]
BYTES = 256
VOCAB = 320
LAYERS = 4
PATCH = {"qwen2_5_vl": 14, "qwen3_vl": 16, "qwen3_5": 16}
QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}"
    "{% if c['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def ids() -> dict[str, int]:
    """Token id of each special token (right after the 256 byte tokens)."""
    return {tok: BYTES + i for i, tok in enumerate(SPECIAL)}


def tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIAL)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", additional_special_tokens=SPECIAL)
    for token, token_id in ids().items():
        assert fast.convert_tokens_to_ids(token) == token_id, (token, token_id)
    return fast


def _text(**extra) -> dict:
    i = ids()
    return dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128,
                num_hidden_layers=LAYERS, num_attention_heads=4, num_key_value_heads=2,
                max_position_embeddings=8192, rms_norm_eps=1e-6, tie_word_embeddings=False,
                initializer_range=0.2, bos_token_id=i["<|endoftext|>"],
                eos_token_id=i["<|im_end|>"], pad_token_id=i["<|endoftext|>"], **extra)


def _llava(out: Path) -> None:
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
        Qwen2Config,
        SiglipVisionConfig,
    )

    i = ids()
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                num_attention_heads=2, image_size=54, patch_size=2,
                                vision_use_head=False)
    config = LlavaOnevisionConfig(
        vision_config=vision.to_dict(), text_config=Qwen2Config(**_text()).to_dict(),
        image_token_index=i["<image>"], video_token_index=i["<video>"],
        vision_feature_layer=-1, vision_feature_select_strategy="full",
        tie_word_embeddings=False)
    _save_model(LlavaOnevisionForConditionalGeneration(config), out)
    size = {"height": 54, "width": 54}
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=[[54, 54]]),
        video_processor=LlavaOnevisionVideoProcessor(size=size), tokenizer=tokenizer(),
        num_image_tokens=27 * 27, vision_feature_select_strategy="full")
    processor.save_pretrained(out)


def _qwen(family: str, out: Path) -> None:
    i = ids()
    patch, merge, temporal = PATCH[family], 2, 2
    unit = patch * merge
    size = {"shortest_edge": unit * unit * 2, "longest_edge": unit * unit * 24}
    common = dict(image_token_id=i["<|image_pad|>"], video_token_id=i["<|video_pad|>"],
                  vision_start_token_id=i["<|vision_start|>"],
                  vision_end_token_id=i["<|vision_end|>"], tie_word_embeddings=False)
    if family == "qwen2_5_vl":
        from transformers import (
            Qwen2_5_VLConfig,
            Qwen2_5_VLForConditionalGeneration,
            Qwen2_5_VLProcessor,
            Qwen2VLImageProcessor,
            Qwen2VLVideoProcessor,
        )

        config = Qwen2_5_VLConfig(
            vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                               out_hidden_size=64, patch_size=patch, temporal_patch_size=temporal,
                               spatial_merge_size=merge, window_size=unit * 2,
                               fullatt_block_indexes=[1], tokens_per_second=2),
            text_config=_text(rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                               "mrope_section": [2, 3, 3]}), **common)
        model = Qwen2_5_VLForConditionalGeneration(config)
        processor = Qwen2_5_VLProcessor(
            image_processor=Qwen2VLImageProcessor(patch_size=patch, temporal_patch_size=temporal,
                                                  merge_size=merge, size=size),
            video_processor=Qwen2VLVideoProcessor(patch_size=patch, temporal_patch_size=temporal,
                                                  merge_size=merge, size=size),
            tokenizer=tokenizer(), chat_template=QWEN_TEMPLATE)
    else:
        import transformers
        from transformers import (
            Qwen2VLImageProcessor,
            Qwen3VLProcessor,
            Qwen3VLVideoProcessor,
        )

        vision = dict(depth=3, hidden_size=32, intermediate_size=64, num_heads=2,
                      out_hidden_size=64, patch_size=patch, temporal_patch_size=temporal,
                      spatial_merge_size=merge, num_position_embeddings=64)
        rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_interleaved": True}
        if family == "qwen3_vl":
            config = transformers.Qwen3VLConfig(
                vision_config=dict(vision, deepstack_visual_indexes=[0, 1]),
                text_config=_text(head_dim=16, rope_parameters=dict(
                    rope, mrope_section=[2, 3, 3])), **common)
            model = transformers.Qwen3VLForConditionalGeneration(config)
        else:
            text = _text(head_dim=16, linear_conv_kernel_dim=4, linear_key_head_dim=8,
                         linear_value_head_dim=8, linear_num_key_heads=2,
                         linear_num_value_heads=4,
                         layer_types=["linear_attention", "full_attention"] * (LAYERS // 2),
                         rope_parameters=dict(rope, partial_rotary_factor=0.5,
                                              mrope_section=[2, 1, 1]))
            config = transformers.Qwen3_5Config(vision_config=vision, text_config=text, **common)
            model = transformers.Qwen3_5ForConditionalGeneration(config)
        processor = Qwen3VLProcessor(
            image_processor=Qwen2VLImageProcessor(patch_size=patch, temporal_patch_size=temporal,
                                                  merge_size=merge, size=size),
            video_processor=Qwen3VLVideoProcessor(patch_size=patch, temporal_patch_size=temporal,
                                                  merge_size=merge, size=size, fps=2,
                                                  min_frames=2, max_frames=64,
                                                  do_sample_frames=False),
            tokenizer=tokenizer(), chat_template=QWEN_TEMPLATE)
    _save_model(model, out)
    processor.save_pretrained(out)


def _save_model(model, out: Path) -> None:
    gc = model.generation_config
    gc.do_sample = False
    model.eval().save_pretrained(out, safe_serialization=True)


def build(family: str, directory: str | Path, seed: int = 0) -> Path:
    """Write a tiny ``family`` checkpoint (:data:`FAMILIES`) into ``directory``; returns it."""
    import torch

    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    (_llava if family == "llava_onevision" else lambda o: _qwen(family, o))(out)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == family, config["model_type"]
    return out
