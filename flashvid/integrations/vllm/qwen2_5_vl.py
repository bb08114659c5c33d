"""FlashVID version of vLLM's ``Qwen2_5_VLForConditionalGeneration`` (registered in its place).

Processor: each video's placeholder run is ``output_length(t, h*w/4)`` ``<|video_pad|>`` tokens.
Model: exact-count FlashVID per video; row i carries four extra columns, which vLLM's pruning
path strips (``recompute_mrope_positions``): its representative's M-RoPE position
(t·tokens_per_second·second_per_grid, h, w) and the position advance of the whole video
(largest position of the uncompressed grid + 1), so that the text after the video keeps the
positions it has without compression. (vLLM's EVS puts the merged grid width there, which
moves the following text to other positions than the uncompressed prompt's.)

With any pruning on (FlashVID or vLLM's EVS), two of vLLM 0.32's position steps are replaced
(workarounds for bugs that break prompts with several videos, EVS included; see
:mod:`.workarounds`):

* ``get_mrope_input_positions`` (positions from the prompt, before the encoder runs): vLLM's
  assumes t·h·w tokens per video and fails on prompts with several pruned videos (``all
  elements of broadcast shape must be non-negative``); see
  ``FlashVIDModelMixin._flashvid_prompt_positions``;
* ``recompute_mrope_positions`` places each video's rows at its own span
  (``FlashVIDModelMixin._flashvid_recompute_positions``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from vllm.model_executor.models.qwen2_5_vl import (
    Qwen2_5_VLDummyInputsBuilder,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLMultiModalProcessor,
    Qwen2_5_VLProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.processing import PromptReplacement
from vllm.multimodal.video_prune.evs import compute_mrope_for_media

from . import settings as _settings
from .model import FlashVIDModelMixin, attach_positions, config_of


class FlashVIDQwen2_5_VLMultiModalProcessor(Qwen2_5_VLMultiModalProcessor):
    """Announces FlashVID's exact count for every video while FlashVID is on."""

    def _get_prompt_updates(self, mm_items: Any, hf_processor_mm_kwargs: Mapping[str, Any],
                            out_mm_kwargs: Any) -> Sequence[Any]:
        updates = super()._get_prompt_updates(mm_items, hf_processor_mm_kwargs, out_mm_kwargs)
        config = config_of(self.info.ctx.get_mm_config())
        if config is None:
            return updates
        hf_processor = self.info.get_hf_processor(**hf_processor_mm_kwargs)
        merge = self.info.get_image_processor(**hf_processor_mm_kwargs).merge_size
        video_token = self.info.get_tokenizer().get_vocab()[hf_processor.video_token]

        def video_replacement(item_idx: int) -> list[int]:
            t, h, w = (int(v) for v in out_mm_kwargs["video"][item_idx]["video_grid_thw"].data)
            count = _settings.output_length(config, t, (h // merge) * (w // merge))
            return [video_token] * count

        return [PromptReplacement(modality="video", target=u.target,
                                  replacement=video_replacement)
                if u.modality == "video" else u for u in updates]


@MULTIMODAL_REGISTRY.register_processor(FlashVIDQwen2_5_VLMultiModalProcessor,
                                        info=Qwen2_5_VLProcessingInfo,
                                        dummy_inputs=Qwen2_5_VLDummyInputsBuilder)
class FlashVIDQwen2_5_VLForConditionalGeneration(FlashVIDModelMixin,
                                                 Qwen2_5_VLForConditionalGeneration):
    """Stock Qwen2.5-VL, plus FlashVID on the video path when ``additional_config`` asks."""

    def __init__(self, *, vllm_config: Any, prefix: str = "") -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self._flashvid_setup(vllm_config)

    def _flashvid_window_index(self) -> Any:
        return lambda t, h, w: self.visual.get_window_index_thw(t, h, w)[0]

    def _process_video_input(self, video_input: Any) -> tuple[torch.Tensor, ...]:
        return self._flashvid_encode(video_input, super()._process_video_input)

    def _postprocess_video_embeds_evs(self, video_embeds_split: tuple[torch.Tensor, ...],
                                      video_input: Any) -> tuple[torch.Tensor, ...]:
        """Per video [K, D + 4]: FlashVID's rows, then (t, h, w, merged width) positions."""
        if self.flashvid_config is None:
            return super()._postprocess_video_embeds_evs(video_embeds_split, video_input)
        grids = video_input["video_grid_thw"].tolist()
        seconds = video_input.get("second_per_grid_ts")
        if seconds is None:
            raise ValueError("second_per_grid_ts is required with FlashVID (as with vLLM's "
                             "video pruning): it sets the temporal M-RoPE positions")
        seconds = seconds.long()  # as vLLM's own pruning path (and transformers) do
        merge = int(self.visual.spatial_merge_size)
        per_second = self.config.vision_config.tokens_per_second
        videos = self._flashvid_videos(video_embeds_split, grids)
        results = self._flashvid_compress(videos, self._flashvid_take_scores(videos),
                                          self._flashvid_counts(grids))
        out = []
        for emb, result, size, second in zip(video_embeds_split, results, grids, seconds):
            positions = compute_mrope_for_media(size, merge, tokens_per_second=per_second,
                                                video_second_per_grid=second.item())  # [T*N, 4]
            kept = positions[result.indices.cpu()]
            kept[:, 3] = positions[:, :3].max() + 1  # advance of the uncompressed video
            rows = torch.cat([result.tokens.to(emb.dtype),
                              kept.to(device=emb.device, dtype=emb.dtype)], dim=1)
            out.append(attach_positions(rows, kept[:, :3]))
        return tuple(out)

    def get_mrope_input_positions(self, input_tokens: list[int],
                                  mm_features: list[Any]) -> tuple[torch.Tensor, int]:
        if not self.is_multimodal_pruning_enabled:
            return super().get_mrope_input_positions(input_tokens, mm_features)
        return self._flashvid_prompt_positions(input_tokens, mm_features)

    def recompute_mrope_positions(self, input_ids: Any, multimodal_embeddings: Any,
                                  mrope_positions: torch.Tensor,
                                  num_computed_tokens: int) -> tuple[Any, torch.Tensor, int]:
        """Rows and positions of pruned media placed by prompt span (see
        ``FlashVIDModelMixin._flashvid_recompute_positions``)."""
        placed = self._flashvid_recompute_positions(input_ids, multimodal_embeddings,
                                                    mrope_positions, num_computed_tokens, 4)
        if placed is not None:
            return placed
        return super().recompute_mrope_positions(input_ids, multimodal_embeddings,
                                                 mrope_positions, num_computed_tokens)
