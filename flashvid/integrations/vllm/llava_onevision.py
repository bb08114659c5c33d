"""FlashVID version of vLLM's ``LlavaOnevisionForConditionalGeneration`` (registered in its
place): LLaVA-OneVision, and LLaVA-Video weights, which vLLM serves with the same class.

vLLM has no video-pruning path for this family, and needs none: LLaVA's LLM uses 1-D RoPE, so a
shorter video run is just a shorter prompt (positions 0, 1, 2, ... over the compressed prompt,
as SPEC §11 and the published code renumber them). The plugin therefore changes two things, and
only while ``additional_config["flashvid"]`` is set:

* processor (``_get_prompt_updates``): each ``<video>`` becomes ``video_length(...)``
  placeholders, FlashVID's exact count plus the newline(s), instead of ``F * N + 1``;
* model (``_process_video_pixels``, called by ``embed_multimodal`` for every batch of videos):
  SigLIP, the projector and the pooling run as stock on all frames at once; a hook on the
  attention of the last SigLIP layer that vLLM builds (the ``vision_feature_layer``) keeps its q
  and k, whose softmax column mean, pooled like the features, is the importance (SPEC §3.1);
  ``flashvid.compress_batch`` in exact-count mode compresses each video to the announced count,
  and the family's newline rows are put back (§11).

Variants, chosen by the ``preset`` setting (default: "llava_video" when the served model's name
or path says LLaVA-Video, else "llava_onevision"):

* "llava_onevision": vLLM's own bilinear pooling (27x27 -> 14x14 = 196 per frame at 384 px) and
  one ``image_newline`` after the video: at ``retention_ratio=1.0`` the embeddings are stock
  vLLM's, row for row.
* "llava_video": the published LLaVA-Video setting, 2x2 average pooling (27x27 -> 13x13 = 169,
  the last row and column dropped) and one newline after the kept rows of every frame (also
  after a frame that kept none). Stock vLLM serves LLaVA-Video weights with the OneVision
  layout; this variant changes the layout to the one FlashVID was evaluated with.

Images (anyres crops with their own newlines) and text are untouched. With FlashVID off the
class is vLLM's own, except that videos of different lengths in one encoder batch come back as
2-D tensors (vLLM 0.32 returns [1, L, D] per video there and its runner's sanity check fails:
``Expected multimodal embeddings to be a sequence of 2D tensors``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from vllm.model_executor.models.llava_onevision import (
    LlavaOnevisionDummyInputsBuilder,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionMultiModalProcessor,
    LlavaOnevisionProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.processing import PromptReplacement

from ...config import FlashVIDConfig
from ..importance import HALF_DTYPES, attention_column_mean
from ..llava_onevision import (
    VARIANTS,
    average_pool,
    newline_count,
    variant_of_name,
    with_newlines,
)
from . import settings as _settings
from .model import guarded_importance, robust_compress, settings_of, startup_check

FAMILY = "llava_onevision"


# ---------------------------------------------------------------------- settings
def default_preset(model_config: Any) -> str:
    """The preset (= variant) used when the settings name none: "llava_video" when the served
    model's name or path says LLaVA-Video, else "llava_onevision"."""
    names = [getattr(model_config, "model", ""), getattr(model_config, "served_model_name", ""),
             getattr(getattr(model_config, "hf_config", None), "_name_or_path", "")]
    return "llava_video" if any(variant_of_name(n) == "llava_video" for n in names) else FAMILY


def apply_settings(vllm_config: Any, attr: str) -> None:
    """Validate ``additional_config["flashvid"]`` for a LLaVA-OneVision model and store it on
    vLLM's MultiModalConfig (as ``attr``), where the processor and the model read it. Unlike
    the Qwen families, vLLM's video-pruning path stays off: nothing here needs it."""
    additional = vllm_config.additional_config
    if not isinstance(additional, dict) or _settings.KEY not in additional:
        return
    model_config = vllm_config.model_config
    settings = _settings.parse(additional[_settings.KEY], default_preset(model_config))
    if settings["preset"] not in VARIANTS:
        raise ValueError(
            f"additional_config['flashvid']['preset'] = {settings['preset']!r} does not fit "
            f"LlavaOnevisionForConditionalGeneration: expected one of {list(VARIANTS)} "
            "(llava_onevision: bilinear pooling and one newline per video, as vLLM serves the "
            "model; llava_video: 2x2 average pooling and a newline after every frame)")
    mm_config = model_config.multimodal_config
    if mm_config is None:
        raise ValueError("additional_config['flashvid'] needs the model's multimodal inputs "
                         "enabled (do not set language_model_only)")
    if mm_config.video_pruning_rate:
        raise ValueError(
            f"--video-pruning-rate {mm_config.video_pruning_rate} asks for vLLM's own video "
            "pruning, which vLLM 0.32 does not have for LLaVA-OneVision; FlashVID "
            "(additional_config['flashvid']) replaces it: remove --video-pruning-rate")
    if getattr(vllm_config.compilation_config, "compile_mm_encoder", False):
        raise ValueError("FlashVID reads the last SigLIP layer's q and k with a hook, which "
                         "needs the eager vision encoder: turn compile_mm_encoder off")
    setattr(mm_config, attr, settings)


def config_and_variant(multimodal_config: Any) -> tuple[FlashVIDConfig, str] | None:
    """(exact-count FlashVIDConfig, variant) in force for this engine, or None (FlashVID off)."""
    stored = settings_of(multimodal_config)
    if stored is None:
        return None
    return _settings.to_config(stored), stored["preset"]


def tokens_per_frame(side: int, variant: str) -> int:
    """Pooled video tokens per frame of a ``side`` x ``side`` patch grid: ceil(side / 2) ** 2
    (bilinear, as vLLM's ``apply_pooling``) or (side // 2) ** 2 (2x2 average)."""
    return (-(-side // 2) if variant == FAMILY else side // 2) ** 2


def video_length(config: FlashVIDConfig, variant: str, frames: int, side: int) -> int:
    """Placeholders of one video with FlashVID on: the exact count of ``frames`` frames of
    ``tokens_per_frame(side, variant)`` tokens, plus the variant's newline(s)."""
    count = _settings.output_length(config, frames, tokens_per_frame(side, variant))
    return count + newline_count(variant, frames)


def _patch_side(hf_config: Any) -> int:
    vision = hf_config.vision_config
    return int(vision.image_size) // int(vision.patch_size)


# ---------------------------------------------------------------------- processor
class FlashVIDLlavaOnevisionMultiModalProcessor(LlavaOnevisionMultiModalProcessor):
    """Announces FlashVID's count (plus newlines) for every video while FlashVID is on."""

    def _get_prompt_updates(self, mm_items: Any, hf_processor_mm_kwargs: Mapping[str, Any],
                            out_mm_kwargs: Any) -> Sequence[Any]:
        updates = super()._get_prompt_updates(mm_items, hf_processor_mm_kwargs, out_mm_kwargs)
        on = config_and_variant(self.info.ctx.get_mm_config())
        if on is None:
            return updates
        config, variant = on
        hf_config = self.info.get_hf_config()
        video_token_id = hf_config.video_token_index
        side = _patch_side(hf_config)

        def flashvid_replacement(stock: Any) -> Any:
            def video_replacement(item_idx: int) -> Any:
                item = out_mm_kwargs["video"][item_idx]
                field = item.get("pixel_values_videos") if item is not None else None
                pixels = getattr(field, "data", None)
                if not isinstance(pixels, torch.Tensor) or pixels.dim() != 4:
                    return stock(item_idx)  # not pixels [frames, 3, H, W]: nothing to compress
                frames = int(pixels.shape[0])
                return [video_token_id] * video_length(config, variant, frames, side)

            return video_replacement

        return [PromptReplacement(modality="video", target=u.target,
                                  replacement=flashvid_replacement(u.replacement))
                if u.modality == "video" else u for u in updates]


# ---------------------------------------------------------------------- model
@MULTIMODAL_REGISTRY.register_processor(FlashVIDLlavaOnevisionMultiModalProcessor,
                                        info=LlavaOnevisionProcessingInfo,
                                        dummy_inputs=LlavaOnevisionDummyInputsBuilder)
class FlashVIDLlavaOnevisionForConditionalGeneration(LlavaOnevisionForConditionalGeneration):
    """Stock LLaVA-OneVision, plus FlashVID on the video path when ``additional_config`` asks."""

    flashvid_config: FlashVIDConfig | None = None
    flashvid_variant: str | None = None

    def __init__(self, *, vllm_config: Any, prefix: str = "") -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        mm_config = vllm_config.model_config.multimodal_config
        additional = vllm_config.additional_config
        on = config_and_variant(mm_config)
        if on is None and isinstance(additional, dict) and _settings.KEY in additional:
            raise RuntimeError(
                "additional_config has 'flashvid' but the FlashVID plugin's config hook did not "
                "run where the engine configuration was made; make sure the `flashvid` vLLM "
                "plugin is loaded there (it is, unless VLLM_PLUGINS excludes it)")
        if on is not None:
            self.flashvid_config, self.flashvid_variant = on
            self._flashvid_attention = self._flashvid_find_attention()
            startup_check(self.flashvid_config, next(self.parameters()).device,
                          vllm_config.model_config.dtype)

    def _flashvid_find_attention(self) -> Any:
        """The self-attention of the SigLIP layer whose output is the video feature: vLLM
        builds the tower only up to ``vision_feature_layer``, so it is the last one built."""
        if not isinstance(self.config.vision_feature_layer, int):
            raise ValueError(
                f"vision_feature_layer={self.config.vision_feature_layer!r}: FlashVID needs one "
                "vision feature layer (an int) to take the importance from")
        tower = getattr(self.vision_tower, "vision_model", None)
        layers = getattr(getattr(tower, "encoder", None), "layers", None)
        if not layers:
            raise TypeError(f"unsupported vision tower {type(self.vision_tower).__name__}: "
                            "FlashVID expects SigLIP (vision_model.encoder.layers)")
        attention = layers[-1].self_attn
        for name in ("attn", "num_heads", "num_heads_per_partition", "head_dim", "scale"):
            if not hasattr(attention, name):
                raise TypeError(f"unsupported SigLIP attention {type(attention).__name__}: "
                                f"no `{name}`")
        return attention

    # ------------------------------------------------------------------ the video path
    def _process_video_pixels(self, inputs: Any) -> Any:
        if self.flashvid_config is None:
            out = super()._process_video_pixels(inputs)
            if isinstance(out, list):  # vLLM returns [1, L, D] per video here: make it [L, D]
                out = [o.reshape(-1, o.shape[-1]) for o in out]
            return out
        pixels = inputs["pixel_values_videos"]
        videos = list(pixels.unbind(0)) if isinstance(pixels, torch.Tensor) else list(pixels)
        frames = [int(v.shape[0]) for v in videos]
        features, importance = self._flashvid_encode(torch.cat(videos))
        per_frame = features.shape[1]
        if importance is None:  # the scores failed (logged): uniform importance
            importance = torch.full(features.shape[:2], 1.0 / per_frame, device=features.device)
        counts = [_settings.output_length(self.flashvid_config, f, per_frame) for f in frames]
        xs = list(torch.split(features, frames))
        scores = list(torch.split(importance, frames))
        results = self._flashvid_compress(xs, scores, counts)
        newline = self.image_newline.to(device=features.device, dtype=features.dtype)
        out = []
        for result, f, count in zip(results, frames, counts):
            rows = with_newlines(self.flashvid_variant, result.tokens, result.indices, f,
                                 per_frame, newline)
            if rows.shape[0] != count + newline_count(self.flashvid_variant, f):
                raise RuntimeError(f"FlashVID gave {rows.shape[0]} rows for a video of {f} "
                                   f"frames, the prompt holds "
                                   f"{count + newline_count(self.flashvid_variant, f)}")
            out.append(rows)
        return out

    def _flashvid_pool(self, x: torch.Tensor) -> torch.Tensor:
        """[S, side*side, C] -> [S, N, C] with this variant's pooling."""
        if self.flashvid_variant == FAMILY:
            return self.apply_pooling(x)
        return average_pool(x, _patch_side(self.config))

    def _flashvid_encode(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All frames [S, 3, H, W] -> pooled features [S, N, D] and importance [S, N] float32."""
        attention = self._flashvid_attention
        captured: dict[str, torch.Tensor] = {}

        def keep_qk(module: Any, args: tuple, kwargs: dict) -> None:
            captured["q"] = kwargs.get("query", args[0] if args else None)
            captured["k"] = kwargs.get("key", args[1] if len(args) > 1 else None)

        handle = attention.attn.register_forward_pre_hook(keep_qk, with_kwargs=True)
        try:
            hidden = self.vision_tower(
                pixels, feature_select_strategy=self.config.vision_feature_select_strategy)
        finally:
            handle.remove()
        features = self._flashvid_pool(self.multi_modal_projector(hidden))
        return features, guarded_importance(
            lambda: self._flashvid_importance(captured, features))

    def _flashvid_importance(self, captured: dict, features: torch.Tensor) -> torch.Tensor:
        """[S, N] float32 importance, pooled like the features."""
        if captured.get("q") is None or captured.get("k") is None:
            raise RuntimeError("FlashVID's importance hook did not fire on the last SigLIP "
                               "layer (is the vision encoder compiled? FlashVID needs it eager)")
        scores = self._flashvid_scores(captured["q"], captured["k"], features.dtype)
        if self.config.vision_feature_select_strategy == "default":
            scores = scores[:, 1:]  # the features dropped the first position too
        importance = self._flashvid_pool(scores[..., None])[..., 0]
        if features.dtype in HALF_DTYPES:
            importance = importance.to(features.dtype).float()
        if importance.shape != features.shape[:2]:
            raise RuntimeError(f"importance {tuple(importance.shape)} does not match the pooled "
                               f"features {tuple(features.shape[:2])}")
        return importance

    def _flashvid_scores(self, q: torch.Tensor, k: torch.Tensor,
                         dtype: torch.dtype) -> torch.Tensor:
        """[S, T] mean attention each patch receives in its frame (SPEC §3.1), from the last
        layer's q, k [S, T, H_local * d]; heads split over tensor-parallel ranks are summed
        across them."""
        attention = self._flashvid_attention
        local, total = int(attention.num_heads_per_partition), int(attention.num_heads)
        frames, patches = q.shape[0], q.shape[1]
        q = q.reshape(frames, patches, local, -1).transpose(1, 2)  # [S, H, T, d]
        k = k.reshape(frames, patches, local, -1).transpose(1, 2)
        split = local != total
        round_to = dtype if (dtype in HALF_DTYPES and not split) else None
        scores = attention_column_mean(q, k, scale=attention.scale, round_to=round_to)
        if split:  # mean over local heads -> mean over all heads
            from vllm.distributed import tensor_model_parallel_all_reduce

            scores = tensor_model_parallel_all_reduce(scores * local) / total
            if dtype in HALF_DTYPES:
                scores = scores.to(dtype).float()
        return scores

    def _flashvid_compress(self, videos: list[torch.Tensor], scores: list[torch.Tensor],
                           counts: list[int]) -> list[Any]:
        """FlashVID in exact-count mode on each video [F, N, D]; one CompressedVideo each with
        exactly ``counts[i]`` rows (``tokens`` [K, D], ``indices`` [K] ascending t*N + n)."""
        return robust_compress(videos, scores, self.flashvid_config, counts)
