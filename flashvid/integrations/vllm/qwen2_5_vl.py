"""FlashVID version of vLLM's ``Qwen2_5_VLForConditionalGeneration`` (registered in its place).

Processor: each video's placeholder run is ``output_length(t, h*w/4)`` ``<|video_pad|>`` tokens.
Model: exact-count FlashVID per video; row i carries, in :data:`.positions.COLUMNS` extra
columns (base-256 digits, exact in any dtype), the M-RoPE position of its representative token
(t·tokens_per_second·second_per_grid, h, w) relative to the video's start.

With any pruning on (FlashVID or vLLM's EVS) the two position steps are the plugin's
(:mod:`.positions`): ``get_mrope_input_positions`` gives the final positions of all text and
images, and of the text after each video (the uncompressed video's extent: as without
compression), with the video rows marked; ``recompute_mrope_positions`` writes the rows of each
video that a step computes. vLLM 0.32's own versions assume unpruned media lengths (several
pruned videos in one prompt fail: ``all elements of broadcast shape must be non-negative``) and
leave the text after a video wrong whenever a prefix-cache hit covers the video.
"""

from __future__ import annotations

import threading
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

from . import positions as _positions
from . import settings as _settings
from .model import FlashVIDModelMixin, config_of

_DUMMY = threading.local()  # inside vLLM's dummy-input step (this thread)


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

    def get_dummy_mm_inputs(self, *args: Any, **kwargs: Any) -> Any:
        """vLLM's dummy prompts (profiling, warm-up) are bare placeholders: not checked."""
        _DUMMY.depth = getattr(_DUMMY, "depth", 0) + 1
        try:
            return super().get_dummy_mm_inputs(*args, **kwargs)
        finally:
            _DUMMY.depth -= 1

    def apply(self, *args: Any, **kwargs: Any) -> Any:
        out = super().apply(*args, **kwargs)
        if config_of(self.info.ctx.get_mm_config()) is not None and not getattr(
                _DUMMY, "depth", 0):
            ids = out["prompt_token_ids"]
            video_token = self.info.get_hf_config().video_token_id
            if len(ids) and int(ids[-1]) == video_token:
                # the position after a compressed video is known only from its grid, which the
                # last prompt token's row no longer tells (see .positions.delta_of)
                raise ValueError("FlashVID: a prompt must not end with a video's placeholders; "
                                 "put text after it (the chat template's <|vision_end|> does)")
        return out


@MULTIMODAL_REGISTRY.register_processor(FlashVIDQwen2_5_VLMultiModalProcessor,
                                        info=Qwen2_5_VLProcessingInfo,
                                        dummy_inputs=Qwen2_5_VLDummyInputsBuilder)
class FlashVIDQwen2_5_VLForConditionalGeneration(FlashVIDModelMixin,
                                                 Qwen2_5_VLForConditionalGeneration):
    """Stock Qwen2.5-VL, plus FlashVID on the video path when ``additional_config`` asks."""

    STOCK_COLUMNS = 4  # vLLM's pruning columns: (t, h, w, merged grid width)

    def __init__(self, *, vllm_config: Any, prefix: str = "") -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self._flashvid_setup(vllm_config)

    def _flashvid_window_index(self) -> Any:
        return lambda t, h, w: self.visual.get_window_index_thw(t, h, w)[0]

    def _process_video_input(self, video_input: Any) -> tuple[torch.Tensor, ...]:
        return self._flashvid_encode(video_input, super()._process_video_input)

    def _postprocess_video_embeds_evs(self, video_embeds_split: tuple[torch.Tensor, ...],
                                      video_input: Any) -> tuple[torch.Tensor, ...]:
        """Per video [K, D + COLUMNS]: FlashVID's rows, then their (t, h, w) positions."""
        if self.flashvid_config is None:
            return super()._postprocess_video_embeds_evs(video_embeds_split, video_input)
        grids = video_input["video_grid_thw"].tolist()
        seconds = video_input.get("second_per_grid_ts")
        if seconds is None:  # the processor always sends it for videos
            seconds = torch.ones(len(grids))
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
            kept = positions[result.indices.cpu(), :3]
            out.append(torch.cat([result.tokens.to(emb.dtype),
                                  _positions.encode(kept, emb.dtype, emb.device)], dim=1))
        return tuple(out)

    def _flashvid_video_span(self, feature: Any) -> _positions.Span:
        """A pruned video: rows marked; the text after it moves on by the uncompressed
        video's extent (largest of its (t, h, w) positions + 1)."""
        size = [int(v) for v in feature.data["video_grid_thw"].data]
        second = feature.data.get("second_per_grid_ts") if feature.data is not None else None
        second = 1 if second is None else int(torch.as_tensor(second.data).long())
        positions = compute_mrope_for_media(size, int(self.visual.spatial_merge_size),
                                            tokens_per_second=self.config.vision_config
                                            .tokens_per_second, video_second_per_grid=second)
        return _positions.Span(int(feature.mm_position.offset), int(feature.mm_position.length),
                               int(positions[:, :3].max()) + 1)
