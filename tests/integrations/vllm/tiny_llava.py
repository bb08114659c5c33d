"""A tiny random-weight LLaVA-OneVision checkpoint for vLLM, built on the spot.

``build(directory)`` writes config.json (SigLIP + Qwen2, as LLaVA-OneVision and LLaVA-Video
checkpoints converted for transformers), a byte-level tokenizer with ``<image>``, ``<video>`` and
Qwen's chat tokens, the image and video processor configs, and seeded random weights
(transformers' own initialisation, about 1 MB; see tiny_models.py for why not
``load_format="dummy"``). Nothing is downloaded.

The vision grid is small on purpose: frames are resized to 36 x 36 pixels, SigLIP patches of 4
give 9 x 9 = 81 patches per frame (27 x 27 at 384 px / 14 in the real models; odd, as there),
pooled to 5 x 5 = 25 tokens (bilinear, LLaVA-OneVision) or 4 x 4 = 16 (2x2 average,
LLaVA-Video). The tower has three layers and ``vision_feature_layer=-2``, so vLLM builds two of
them and the features (and FlashVID's importance) come from the second, as LLaVA takes the
next-to-last SigLIP layer.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]
BYTE_TOKENS = 256
VOCAB = 288
IMAGE_SIZE = 36
PATCH = 4
SIDE = IMAGE_SIZE // PATCH  # 9 patches a side
LAYERS, FEATURE_LAYER = 3, -2
PINPOINTS = [[IMAGE_SIZE, IMAGE_SIZE], [IMAGE_SIZE, 2 * IMAGE_SIZE],
             [2 * IMAGE_SIZE, IMAGE_SIZE], [2 * IMAGE_SIZE, 2 * IMAGE_SIZE]]
HIDDEN = 64  # the LLM's width: rows of the video embeddings


def special_ids() -> dict[str, int]:
    """Token id of each special token (right after the 256 byte tokens)."""
    return {tok: BYTE_TOKENS + i for i, tok in enumerate(SPECIAL)}


def tokens_per_frame(variant: str) -> int:
    """Video tokens per frame after pooling: bilinear to ceil(side / 2) squared (OneVision) or
    2x2 average pooling, floor(side / 2) squared (LLaVA-Video)."""
    return (math.ceil(SIDE / 2) if variant == "llava_onevision" else SIDE // 2) ** 2


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_map = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(byte_map))}
    assert len(vocab) == BYTE_TOKENS
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIAL)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", additional_special_tokens=SPECIAL)
    for token, token_id in special_ids().items():
        assert fast.convert_tokens_to_ids(token) == token_id, (token, token_id)
    return fast


def _config() -> dict:
    ids = special_ids()
    text = dict(model_type="qwen2", vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=128,
                num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                max_position_embeddings=4096, rms_norm_eps=1e-6, hidden_act="silu",
                initializer_range=0.2,  # outputs that depend on the input (default 0.02)
                tie_word_embeddings=False, bos_token_id=ids["<|endoftext|>"],
                eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    vision = dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64,
                  num_hidden_layers=LAYERS, num_attention_heads=2, image_size=IMAGE_SIZE,
                  patch_size=PATCH, num_channels=3, vision_use_head=False,
                  hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6)
    return dict(architectures=["LlavaOnevisionForConditionalGeneration"],
                model_type="llava_onevision", text_config=text, vision_config=vision,
                image_token_index=ids["<image>"], video_token_index=ids["<video>"],
                vision_feature_layer=FEATURE_LAYER, vision_feature_select_strategy="full",
                vision_aspect_ratio="anyres_max_9", image_grid_pinpoints=PINPOINTS,
                projector_hidden_act="gelu", multimodal_projector_bias=True,
                tie_word_embeddings=False, torch_dtype="float32")


def build(directory: str | Path) -> Path:
    """Write the tiny checkpoint into ``directory``; returns it."""
    from transformers import (
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
    )

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(_config(), indent=1))
    size = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    image = LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=PINPOINTS)
    video = LlavaOnevisionVideoProcessor(size=size)
    processor = LlavaOnevisionProcessor(image_processor=image, tokenizer=_tokenizer(),
                                        video_processor=video, num_image_tokens=SIDE * SIDE,
                                        vision_feature_select_strategy="full")
    processor.save_pretrained(out)
    _save_random_weights(out)
    return out


def _save_random_weights(out: Path, seed: int = 0) -> None:
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoConfig, LlavaOnevisionForConditionalGeneration

    config = AutoConfig.from_pretrained(out)
    torch.manual_seed(seed)
    model = LlavaOnevisionForConditionalGeneration(config).eval()
    model.save_pretrained(out, safe_serialization=True)
    # transformers 5 writes the tower as "vision_tower.<module>"; the published checkpoints
    # (and vLLM's loader) name it "vision_tower.vision_model.<module>"
    path = out / "model.safetensors"
    weights = load_file(path)
    renamed = {("vision_tower.vision_model." + key[len("vision_tower."):]
                if key.startswith("vision_tower.") and ".vision_model." not in key else key): value
               for key, value in weights.items()}
    save_file(renamed, path, metadata={"format": "pt"})
