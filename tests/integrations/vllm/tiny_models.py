"""Tiny random-weight Qwen2.5-VL and Qwen3-VL checkpoints for vLLM, built on the spot.

``build(family, directory)`` writes config.json, a byte-level tokenizer with Qwen's special
tokens, the image/video processor configs and seeded random weights (transformers' own
initialisation, saved as safetensors, about 1 MB). Nothing is downloaded. (vLLM's
``load_format="dummy"`` would do without the weights file, but it fills every weight with the
same tiny uniform pattern, which makes the model's output independent of the video, and on the
CPU the linear layers pack their weights at load time, so they cannot be re-randomised later.)
The vision grid is small on purpose: a 2-frame temporal patch of a 56 x 84 frame (Qwen2.5-VL,
patch 14) or 64 x 96 (Qwen3-VL, patch 16) is 4 x 6 patches, 2 x 3 = 6 merged tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
           "<|image_pad|>", "<|video_pad|>"]
BYTE_TOKENS = 256
VOCAB = 320  # 256 byte tokens, the specials, spare rows
FAMILIES = ("qwen2_5_vl", "qwen3_vl")  # the families every scenario of test_plugin.py runs on
# the other Qwen3-VL-family models the plugin serves (same vision side as Qwen3-VL)
QWEN3_FAMILY = ("qwen3_vl", "qwen3_vl_moe", "qwen3_5", "qwen3_5_moe")
ALL_FAMILIES = ("qwen2_5_vl",) + QWEN3_FAMILY
ARCHITECTURE = {"qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
                "qwen3_vl": "Qwen3VLForConditionalGeneration",
                "qwen3_vl_moe": "Qwen3VLMoeForConditionalGeneration",
                "qwen3_5": "Qwen3_5ForConditionalGeneration",
                "qwen3_5_moe": "Qwen3_5MoeForConditionalGeneration"}
PATCH = {"qwen2_5_vl": 14, "qwen3_vl": 16, "qwen3_vl_moe": 16, "qwen3_5": 16, "qwen3_5_moe": 16}
MERGE = 2
TEMPORAL = 2
MAX_PIXELS_UNITS = 96  # largest frame: 96 merge units (e.g. 8 x 12 merged tokens)


def special_ids() -> dict[str, int]:
    """Token id of each special token (right after the 256 byte tokens)."""
    return {tok: BYTE_TOKENS + i for i, tok in enumerate(SPECIAL)}


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_map = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(byte_map))}
    assert len(vocab) == BYTE_TOKENS
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIAL)  # ids 256, 257, ... in SPECIAL's order
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>",
                                   additional_special_tokens=SPECIAL)
    ids = special_ids()
    for token, token_id in ids.items():
        assert fast.convert_tokens_to_ids(token) == token_id, (token, token_id)
    return fast


def _config(family: str) -> dict:
    ids = special_ids()
    text = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                max_position_embeddings=4096, rms_norm_eps=1e-6, hidden_act="silu",
                tie_word_embeddings=False, bos_token_id=ids["<|endoftext|>"],
                eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    common = dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                  vision_start_token_id=ids["<|vision_start|>"],
                  vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=False,
                  torch_dtype="float32")
    if family == "qwen2_5_vl":
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0,
                                   "mrope_section": [4, 6, 6]}
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                      out_hidden_size=64, patch_size=PATCH[family], temporal_patch_size=TEMPORAL,
                      spatial_merge_size=MERGE, window_size=PATCH[family] * MERGE * 2,
                      fullatt_block_indexes=[1], tokens_per_second=2, in_chans=3,
                      hidden_act="silu")
        return dict(architectures=["Qwen2_5_VLForConditionalGeneration"], model_type="qwen2_5_vl",
                    text_config=dict(text, model_type="qwen2_5_vl_text"),
                    vision_config=dict(vision, model_type="qwen2_5_vl"), **common)
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0,
                               "mrope_section": [4, 6, 6], "mrope_interleaved": True}
    vision = dict(depth=3, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                  patch_size=PATCH[family], temporal_patch_size=TEMPORAL, spatial_merge_size=MERGE,
                  num_position_embeddings=144, deepstack_visual_indexes=[0, 1], in_channels=3,
                  hidden_act="gelu_pytorch_tanh")
    if family in ("qwen3_vl_moe", "qwen3_5_moe"):  # 4 experts, 2 per token
        text.update(num_experts=4, num_local_experts=4, num_experts_per_tok=2,
                    moe_intermediate_size=32, decoder_sparse_step=1, mlp_only_layers=[],
                    norm_topk_prob=True)
    if family in ("qwen3_5", "qwen3_5_moe"):  # hybrid: a linear-attention and a full layer
        text.update(layer_types=["linear_attention", "full_attention"], linear_conv_kernel_dim=4,
                    linear_key_head_dim=64, linear_value_head_dim=64, linear_num_key_heads=2,
                    linear_num_value_heads=2, full_attention_interval=2,
                    head_dim=64)  # vLLM's CPU attention has no head size 32
        text["rope_parameters"] = dict(text["rope_parameters"], partial_rotary_factor=0.25,
                                       mrope_section=[2, 3, 3])
        if family == "qwen3_5_moe":
            text.update(shared_expert_intermediate_size=32)
        vision.pop("deepstack_visual_indexes")
    return dict(architectures=[ARCHITECTURE[family]], model_type=family,
                text_config=dict(text, model_type=f"{family}_text"),
                vision_config=dict(vision, model_type=f"{family}_vision"
                                   if family != "qwen3_vl" else "qwen3_vl"), **common)


def build(family: str, directory: str | Path) -> Path:
    """Write a tiny ``family`` checkpoint (no weights) into ``directory``; returns it."""
    if family not in ALL_FAMILIES:
        raise ValueError(f"family must be one of {ALL_FAMILIES}, got {family!r}")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(_config(family), indent=1))
    tokenizer = _tokenizer()
    patch = PATCH[family]
    unit = patch * MERGE
    size = {"shortest_edge": unit * unit * 4, "longest_edge": unit * unit * MAX_PIXELS_UNITS}
    if family == "qwen2_5_vl":
        from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

        image = Qwen2VLImageProcessor(patch_size=patch, temporal_patch_size=TEMPORAL,
                                      merge_size=MERGE, size=size)
        video = Qwen2VLVideoProcessor(patch_size=patch, temporal_patch_size=TEMPORAL,
                                      merge_size=MERGE, size=size)
        processor = Qwen2_5_VLProcessor(image_processor=image, tokenizer=tokenizer,
                                        video_processor=video)
    else:
        from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

        image = Qwen2VLImageProcessor(patch_size=patch, temporal_patch_size=TEMPORAL,
                                      merge_size=MERGE, size=size)
        video = Qwen3VLVideoProcessor(patch_size=patch, temporal_patch_size=TEMPORAL,
                                      merge_size=MERGE, size=size, fps=2, min_frames=2,
                                      max_frames=64, do_sample_frames=False)
        processor = Qwen3VLProcessor(image_processor=image, tokenizer=tokenizer,
                                     video_processor=video)
    processor.save_pretrained(out)
    _save_random_weights(family, out)
    return out


def _save_random_weights(family: str, out: Path, seed: int = 0) -> None:
    import torch
    import transformers
    from transformers import AutoConfig

    model_cls = getattr(transformers, ARCHITECTURE[family])
    config = AutoConfig.from_pretrained(out)
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    model.save_pretrained(out, safe_serialization=True)
    if family == "qwen3_vl_moe":
        _transpose_fused_experts(out)


def _transpose_fused_experts(out: Path) -> None:
    """transformers 5.19 saves Qwen3-VL-MoE's fused experts as [E, out, in]; the published
    checkpoints (and vLLM's loader, ``is_fused_checkpoint_transposed``) have [E, in, out]."""
    from safetensors.torch import load_file, save_file

    for path in out.glob("*.safetensors"):
        tensors = load_file(str(path))
        for name in tensors:
            if name.endswith(("experts.down_proj", "experts.gate_up_proj")):
                tensors[name] = tensors[name].transpose(1, 2).contiguous()
        save_file(tensors, str(path), metadata={"format": "pt"})


# vLLM's CPU kernels for Qwen3.5's linear-attention (GDN) layers run in bfloat16 only
DTYPE = {"qwen3_5": "bfloat16", "qwen3_5_moe": "bfloat16"}


def frame_size(family: str, rows: int, cols: int) -> tuple[int, int]:
    """(height, width) in pixels of a frame with rows x cols merged tokens."""
    unit = PATCH[family] * MERGE
    return rows * unit, cols * unit
