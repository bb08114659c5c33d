"""Tiny random-config video LLMs and their stock prompts, built in memory (no downloads).

The prompts follow each processor's counting rules (NOTES-transformers §4.1): LLaVA-OneVision
``F * 196 + 1`` placeholders per video; Qwen2.5-VL ``<vision_start> t*h*w/4 x <video>
<vision_end>``; Qwen3-VL one ``<timestamp> <vision_start> h*w/4 x <video> <vision_end>`` run per
temporal patch
(Qwen3.5 and Qwen3-VL-MoE use the Qwen3-VL format).
"""

from __future__ import annotations

import torch

VOCAB, PAD, BOS, EOS = 128, 0, 1, 2
IMAGE_ID, VIDEO_ID, VSTART, VEND = 100, 101, 102, 103
PATCH, TPATCH, MERGE = 4, 2, 2
TEXT = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
            initializer_range=0.2)  # larger than the default 0.02: outputs depend on the input


def tiny_llava_onevision(attn: str = "sdpa", seed: int = 0):
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        Qwen2Config,
        SiglipVisionConfig,
    )

    torch.manual_seed(seed)
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                num_attention_heads=2, image_size=54, patch_size=2,
                                vision_use_head=False)  # 27 x 27 patches, like 384 px / 14
    text = Qwen2Config(**TEXT, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD)
    cfg = LlavaOnevisionConfig(vision_config=vision, text_config=text, image_token_index=IMAGE_ID,
                               video_token_index=VIDEO_ID, vision_feature_layer=-1,
                               vision_feature_select_strategy="full")
    cfg._attn_implementation = attn
    model = LlavaOnevisionForConditionalGeneration(cfg).eval()
    _generation_defaults(model)
    return model


def tiny_qwen2_5_vl(attn: str = "sdpa", seed: int = 0):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    cfg = Qwen2_5_VLConfig(
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                           out_hidden_size=64, patch_size=PATCH, temporal_patch_size=TPATCH,
                           spatial_merge_size=MERGE, window_size=PATCH * MERGE * 2,
                           fullatt_block_indexes=[1], tokens_per_second=2),
        text_config=dict(**TEXT, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                  "mrope_section": [2, 3, 3]},
                         bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD),
        image_token_id=IMAGE_ID, video_token_id=VIDEO_ID, vision_start_token_id=VSTART,
        vision_end_token_id=VEND)
    cfg._attn_implementation = attn
    model = Qwen2_5_VLForConditionalGeneration(cfg).eval()
    _generation_defaults(model)
    return model


def tiny_qwen3_vl(attn: str = "sdpa", seed: int = 0):
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    torch.manual_seed(seed)
    cfg = Qwen3VLConfig(
        vision_config=dict(depth=3, hidden_size=32, intermediate_size=64, num_heads=2,
                           out_hidden_size=64, patch_size=PATCH, temporal_patch_size=TPATCH,
                           spatial_merge_size=MERGE, deepstack_visual_indexes=[0, 1],
                           num_position_embeddings=64),
        text_config=dict(**TEXT, head_dim=16,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                          "mrope_section": [2, 3, 3], "mrope_interleaved": True},
                         bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD),
        image_token_id=IMAGE_ID, video_token_id=VIDEO_ID, vision_start_token_id=VSTART,
        vision_end_token_id=VEND)
    cfg._attn_implementation = attn
    model = Qwen3VLForConditionalGeneration(cfg).eval()
    _generation_defaults(model)
    return model


# Qwen3.5 (dense and MoE) mixes gated-DeltaNet (linear attention) and full-attention layers: the
# tiny models alternate them so that layer K=2 has a full-attention layer K-1 and layers >= K hold
# both kinds (the released checkpoints have one full-attention layer in four).
HYBRID_LAYERS = ["linear_attention", "full_attention", "linear_attention", "full_attention"]
QWEN3_5_TEXT = dict(TEXT, head_dim=16, layer_types=HYBRID_LAYERS, linear_conv_kernel_dim=4,
                    linear_key_head_dim=8, linear_value_head_dim=8, linear_num_key_heads=2,
                    linear_num_value_heads=4,
                    rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                     "partial_rotary_factor": 0.5, "mrope_section": [2, 1, 1],
                                     "mrope_interleaved": True},
                    bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD)
MOE = dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32)
QWEN3_VISION = dict(depth=3, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                    patch_size=PATCH, temporal_patch_size=TPATCH, spatial_merge_size=MERGE,
                    num_position_embeddings=64)


def _qwen3_family(config_cls, model_cls, text: dict, attn: str, seed: int, deepstack: bool):
    torch.manual_seed(seed)
    vision = dict(QWEN3_VISION, deepstack_visual_indexes=[0, 1]) if deepstack else QWEN3_VISION
    cfg = config_cls(vision_config=vision, text_config=text, image_token_id=IMAGE_ID,
                     video_token_id=VIDEO_ID, vision_start_token_id=VSTART,
                     vision_end_token_id=VEND)
    cfg._attn_implementation = attn
    model = model_cls(cfg).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        # a trained checkpoint's pad token has an embedding (nn.Embedding's padding_idx zeroes
        # it at init): padding columns then carry non-zero states that masks must keep out
        emb = model.get_input_embeddings().weight
        emb[PAD] = torch.randn(emb.shape[1], generator=gen) * TEXT["initializer_range"]
        for layer in model.model.language_model.layers:
            if hasattr(layer, "linear_attn"):
                # slow decay (A in [0.01, 0.1], the init draws up to 16): the recurrent state
                # then remembers the whole tiny prompt, so a wrong state cannot fade unnoticed
                a_log = layer.linear_attn.A_log
                a_log.copy_(torch.empty(a_log.shape).uniform_(0.01, 0.1, generator=gen).log())
    _generation_defaults(model)
    return model


def tiny_qwen3_vl_moe(attn: str = "sdpa", seed: int = 0):
    """Qwen3-VL-MoE: Qwen3-VL (deepstack at the first 2 layers) with 4-expert MoE MLPs."""
    from transformers import Qwen3VLMoeConfig, Qwen3VLMoeForConditionalGeneration

    text = dict(TEXT, **MOE, head_dim=16, decoder_sparse_step=1,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                 "mrope_section": [2, 3, 3], "mrope_interleaved": True},
                bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD)
    return _qwen3_family(Qwen3VLMoeConfig, Qwen3VLMoeForConditionalGeneration, text, attn, seed,
                         deepstack=True)


def tiny_qwen3_5(attn: str = "sdpa", seed: int = 0, layer_types: list[str] | None = None):
    """Qwen3.5 (dense): no deepstack; HYBRID_LAYERS unless ``layer_types`` is given."""
    from transformers import Qwen3_5Config, Qwen3_5ForConditionalGeneration

    text = dict(QWEN3_5_TEXT, layer_types=list(layer_types or HYBRID_LAYERS))
    return _qwen3_family(Qwen3_5Config, Qwen3_5ForConditionalGeneration, text, attn, seed,
                         deepstack=False)


def tiny_qwen3_5_moe(attn: str = "sdpa", seed: int = 0):
    """Qwen3.5-MoE: Qwen3.5 with 4-expert MoE MLPs and a shared expert in every layer."""
    from transformers import Qwen3_5MoeConfig, Qwen3_5MoeForConditionalGeneration

    text = dict(QWEN3_5_TEXT, **MOE, shared_expert_intermediate_size=32)
    text.pop("intermediate_size")
    return _qwen3_family(Qwen3_5MoeConfig, Qwen3_5MoeForConditionalGeneration, text, attn, seed,
                         deepstack=False)


# the transformers class of every family whose tests skip where the installed release lacks it
MODEL_CLASSES = {"qwen3_vl_moe": "Qwen3VLMoeForConditionalGeneration",
                 "qwen3_5": "Qwen3_5ForConditionalGeneration",
                 "qwen3_5_moe": "Qwen3_5MoeForConditionalGeneration"}
QWEN3_FORMAT = ("qwen3_vl", "qwen3_vl_moe", "qwen3_5", "qwen3_5_moe")  # per-frame runs


def family_param(family: str, *values, id: str | None = None):
    """``(family, *values)`` as a pytest parameter, skipped (with the reason) where the
    installed transformers has no model class for the family."""
    import pytest
    import transformers

    name = MODEL_CLASSES.get(family)
    missing = name is not None and not hasattr(transformers, name)
    return pytest.param(family, *values, id=id or family, marks=pytest.mark.skipif(
        missing, reason=f"transformers {transformers.__version__} has no {name}"))


def _generation_defaults(model) -> None:
    gc = model.generation_config
    gc.pad_token_id, gc.bos_token_id, gc.eos_token_id = PAD, BOS, None  # never stop early
    gc.do_sample = False


# --------------------------------------------------------------------------- prompts
def _left_pad(rows: list[list[int]], extra: list[list[int]] | None = None):
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), PAD, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, length - len(r):] = torch.tensor(r)
        mask[b, length - len(r):] = 1
    return ids, mask


def llava_inputs(frames: list[int], *, seed: int, size: int = 54,
                 pre: tuple = (BOS, 5, 6), post: tuple = (7, 8, 9)) -> dict:
    """Stock LLaVA-OneVision inputs: one video per sample (frame counts ``frames``), left-padded.
    pixel_values_videos is a [B, F, 3, S, S] tensor when all videos have equal length, else a
    list of [F_i, 3, S, S] tensors."""
    gen = torch.Generator().manual_seed(seed)
    side = size // 2
    per_frame = (-(-side // 2)) ** 2
    rows = [list(pre) + [VIDEO_ID] * (f * per_frame + 1) + list(post) for f in frames]
    ids, mask = _left_pad(rows)
    videos = [torch.randn(f, 3, size, size, generator=gen) for f in frames]
    pixels = torch.stack(videos) if len(set(frames)) == 1 else videos
    return {"input_ids": ids, "attention_mask": mask, "pixel_values_videos": pixels}


def qwen_video(t: int, h: int, w: int, gen: torch.Generator):
    """Flattened patches [t*h*w, 3*2*4*4] and grid (t, h, w) in patch units."""
    return torch.randn(t * h * w, 3 * TPATCH * PATCH * PATCH, generator=gen), [t, h, w]


def qwen_inputs(grids: list[tuple[int, int, int]], *, seed: int, qwen3: bool = False,
                pre: tuple = (BOS, 5, 6), post: tuple = (7, 8, 9)) -> dict:
    """Stock Qwen2.5-VL / Qwen3-VL inputs: one video per sample with grid (t, h, w), left-padded."""
    gen = torch.Generator().manual_seed(seed)
    rows, pixels, thw = [], [], []
    for t, h, w in grids:
        pv, g = qwen_video(t, h, w, gen)
        pixels.append(pv)
        thw.append(g)
        per_frame = h * w // (MERGE * MERGE)
        if qwen3:
            body = []
            for i in range(t):
                body += [10 + i, VSTART] + [VIDEO_ID] * per_frame + [VEND]  # <t_i> timestamp
        else:
            body = [VSTART] + [VIDEO_ID] * (t * per_frame) + [VEND]
        rows.append(list(pre) + body + list(post))
    ids, mask = _left_pad(rows)
    token_types = (ids == VIDEO_ID).long() * 2
    return {"input_ids": ids, "attention_mask": mask, "mm_token_type_ids": token_types,
            "pixel_values_videos": torch.cat(pixels), "video_grid_thw": torch.tensor(thw)}


def select(inputs: dict, b: int, *, qwen: bool) -> dict:
    """The single-sample inputs of sample b of a batch built by the functions above (unpadded)."""
    keep = inputs["attention_mask"][b].bool()
    out = {k: inputs[k][b:b + 1, keep] for k in ("input_ids", "attention_mask")}
    if qwen:
        out["mm_token_type_ids"] = inputs["mm_token_type_ids"][b:b + 1, keep]
        grid = inputs["video_grid_thw"]
        sizes = grid.prod(-1).tolist()
        out["pixel_values_videos"] = torch.split(inputs["pixel_values_videos"], sizes)[b]
        out["video_grid_thw"] = grid[b:b + 1]
    else:
        pv = inputs["pixel_values_videos"]
        out["pixel_values_videos"] = pv[b:b + 1] if isinstance(pv, torch.Tensor) else pv[b][None]
    return out


def to(inputs: dict, dev: torch.device) -> dict:
    """The inputs with every tensor (also inside lists) moved to ``dev``."""
    def move(v):
        if isinstance(v, torch.Tensor):
            return v.to(dev)
        if isinstance(v, (list, tuple)):
            return type(v)(move(x) for x in v)
        return v
    return {k: move(v) for k, v in inputs.items()}
