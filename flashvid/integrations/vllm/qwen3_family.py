"""What the FlashVID versions of vLLM's Qwen3-VL, Qwen3-VL-MoE, Qwen3.5 and Qwen3.5-MoE share.

The four vLLM classes are one model on the vision side (``Qwen3VLForConditionalGeneration``
and its subclasses; one processor, ``Qwen3VLMultiModalProcessor``, with a per-family
``ProcessingInfo``); they differ in the LLM (dense, MoE, hybrid linear attention).

A Qwen3-VL video prompt is one run per temporal patch: ``<t seconds> <|vision_start|> tokens
<|vision_end|>``. With a pruning method on, vLLM's processor announces all of a video's kept
tokens in the first run (``[K, 0, 0, ...]``) and the model returns the whole run sequence, text
included, as embeddings. The FlashVID versions:

* processor: K = ``output_length(t, h*w/4)`` instead of EVS's count, in the HF-processed prompt
  and in the prompt updates alike;
* model: exact-count FlashVID on the visual channels of each video; each output row sits in its
  representative's frame, in raster order, carries the representative's deepstack rows (as the
  transformers adapter does), and every row of the run sequence carries its M-RoPE position
  relative to the video's start (vLLM's ``_get_expanded_positions``: timestamps and markers
  keep theirs) in :data:`.positions.COLUMNS` exact columns;
* positions (with any pruning on, EVS included): :mod:`.positions`; the text after a video
  starts where it starts in the uncompressed prompt, computed from the video's grid and
  timestamps when the request is added. This also replaces vLLM 0.32's
  ``recompute_mrope_positions``, whose search for ``<|vision_start|>`` the outer marker of
  transformers >= 5.10 processors throws off (bug 2 of :mod:`.workarounds`), and its prompt
  positions, which give a video shorter than one frame a whole frame.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from vllm.model_executor.models.qwen3_vl import (
    Qwen3VLForConditionalGeneration,
    Qwen3VLMultiModalProcessor,
)
from vllm.multimodal.inputs import MultiModalFeatureSpec, MultiModalKwargsItem, PlaceholderRange
from vllm.multimodal.processing import PromptReplacement, PromptUpdateDetails
from vllm.multimodal.video_prune.evs import compute_retained_tokens_count

from . import positions as _positions
from . import settings as _settings
from .model import FlashVIDModelMixin, config_of


def _video_run(tokens_per_frame: list[int], timestamps: Any, tokenizer: Any,
               hf_config: Any) -> list[int]:
    return list(Qwen3VLMultiModalProcessor.get_video_repl(
        tokens_per_frame=tokens_per_frame, timestamps=timestamps, tokenizer=tokenizer,
        vision_start_token_id=hf_config.vision_start_token_id,
        vision_end_token_id=hf_config.vision_end_token_id,
        video_token_id=hf_config.video_token_id).full)


def _replace_runs(ids: list[int], old: list[list[int]], new: list[list[int]]) -> list[int]:
    """Replace the runs ``old[i]`` (in order, non-overlapping) by ``new[i]``."""
    out, cursor = [], 0
    for i, (before, after) in enumerate(zip(old, new)):
        k = len(before)
        start = next((j for j in range(cursor, len(ids) - k + 1)
                      if ids[j] == before[0] and ids[j + k - 1] == before[-1]
                      and ids[j:j + k] == before), None)
        if start is None:
            raise RuntimeError(f"FlashVID: video {i}'s placeholder run was not found in the "
                               "processed prompt")
        out += ids[cursor:start] + after
        cursor = start + k
    return out + ids[cursor:]


class FlashVIDQwen3VLMultiModalProcessor(Qwen3VLMultiModalProcessor):
    """Announces FlashVID's exact count for every video while FlashVID is on."""

    def _flashvid_counts(self, grid_thw: Any) -> tuple[list[int], list[int]]:
        """(FlashVID count, the count vLLM's own code put in) per video of ``grid_thw`` [V, 3].

        With FlashVID on, the config hook sets vLLM's pruning method to "evs" with a nominal
        rate, so the stock processor writes EVS's count, which is then swapped for FlashVID's.
        """
        config = config_of(self.info.ctx.get_mm_config())
        _, rate = self.info.ctx.get_mm_config().get_video_pruning_spec()
        merge = self.info.get_hf_config().vision_config.spatial_merge_size
        ours, theirs = [], []
        for t, h, w in (tuple(int(v) for v in row) for row in grid_thw):
            n = (h // merge) * (w // merge)
            ours.append(_settings.output_length(config, t, n))
            theirs.append(compute_retained_tokens_count(tokens_per_frame=n, num_frames=t, q=rate))
        return ours, theirs

    def _apply_hf_processor_main(self, mm_items: Any, hf_kwargs: Mapping[str, object]) -> Any:
        out = super()._apply_hf_processor_main(mm_items, hf_kwargs)
        if config_of(self.info.ctx.get_mm_config()) is None or "video_grid_thw" not in out \
                or "input_ids" not in out:
            return out
        grid = out["video_grid_thw"]
        ours, theirs = self._flashvid_counts(grid)
        tokenizer, hf_config = self.info.get_tokenizer(), self.info.get_hf_config()
        old, new = [], []
        for count, stock, stamps, (t, _, _) in zip(ours, theirs, out["timestamps"], grid.tolist()):
            rest = [0] * (int(t) - 1)
            old.append(_video_run([stock] + rest, stamps, tokenizer, hf_config))
            new.append(_video_run([count] + rest, stamps, tokenizer, hf_config))
        ids = out["input_ids"]
        as_tensor = isinstance(ids, torch.Tensor)
        rows = ids.tolist() if as_tensor else [list(r) for r in ids]
        rows = [_replace_runs(rows[0], old, new)] + rows[1:]
        out["input_ids"] = torch.tensor(rows, dtype=ids.dtype) if as_tensor else rows
        return out

    def _get_prompt_updates(self, mm_items: Any, hf_processor_mm_kwargs: Mapping[str, Any],
                            out_mm_kwargs: Any) -> Sequence[Any]:
        updates = super()._get_prompt_updates(mm_items, hf_processor_mm_kwargs, out_mm_kwargs)
        if config_of(self.info.ctx.get_mm_config()) is None:
            return updates

        def video_replacement(item_idx: int) -> PromptUpdateDetails:
            item = out_mm_kwargs["video"][item_idx]
            grid = item["video_grid_thw"].data
            (count,), _ = self._flashvid_counts(grid[None])
            run = _video_run([count] + [0] * (int(grid[0]) - 1), item["timestamps"].data,
                             self.info.get_tokenizer(), self.info.get_hf_config())
            return PromptUpdateDetails.from_seq(run)  # as vLLM's pruning path: all embeddings

        return [PromptReplacement(modality="video", target=u.target,
                                  replacement=video_replacement)
                if u.modality == "video" else u for u in updates]


class FlashVIDQwen3FamilyMixin(FlashVIDModelMixin):
    """Mixed in before a vLLM Qwen3-VL-family model class (``Qwen3VLForConditionalGeneration``
    or a subclass): stock, plus FlashVID on the video path when ``additional_config`` asks."""

    STOCK_COLUMNS = 5  # vLLM's pruning columns: (t, h, w, is_vision_start, is_video)

    def __init__(self, *, vllm_config: Any, prefix: str = "model") -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self._flashvid_setup(vllm_config)

    def _process_video_input(self, video_input: Any) -> tuple[torch.Tensor, ...]:
        return self._flashvid_encode(video_input, super()._process_video_input)

    def _postprocess_video_embeds_evs(self, video_embeds_split: tuple[torch.Tensor, ...],
                                      video_input: Any) -> tuple[torch.Tensor, ...]:
        """Per video: the whole run sequence (timestamps, markers, FlashVID rows) as
        [L, D_visual * (1 + levels) + COLUMNS]: embeddings + deepstack rows + positions."""
        if self.flashvid_config is None:
            return super()._postprocess_video_embeds_evs(video_embeds_split, video_input)
        grids = video_input["video_grid_thw"].tolist()
        videos = self._flashvid_videos(video_embeds_split, grids, dim=self.visual_dim)
        results = self._flashvid_compress(videos, self._flashvid_take_scores(videos),
                                          self._flashvid_counts(grids))
        out = []
        for i, (emb, result, video) in enumerate(zip(video_embeds_split, results, videos)):
            frames, per_frame = video.shape[0], video.shape[1]
            indices = result.indices.to(emb.device)
            rows = emb[indices].clone()  # the representatives' deepstack rows
            rows[:, :self.visual_dim] = result.tokens.to(emb.dtype)
            kept = torch.zeros(emb.shape[0], dtype=torch.bool, device=emb.device)
            kept[indices] = True
            counts = torch.bincount(indices // per_frame, minlength=frames).tolist()
            self._flashvid_expanded = None
            final = self._create_final_video_embeddings(
                video_embeddings=rows, num_tokens_per_frame=counts,
                timestamps=video_input.timestamps[i], video_grid_thw=grids[i],
                retention_mask=kept)
            expanded, self._flashvid_expanded = self._flashvid_expanded, None
            final = final[:, :-self.STOCK_COLUMNS]  # vLLM's columns, rounded in the dtype
            out.append(torch.cat([final, _positions.encode(expanded[:, :3], final.dtype,
                                                           final.device)], dim=1))
        return tuple(out)

    def _get_expanded_positions(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """vLLM's, keeping its exact int64 result for the hook above (same call)."""
        expanded = super()._get_expanded_positions(*args, **kwargs)
        self._flashvid_expanded = expanded
        return expanded

    def _flashvid_video_span(self, feature: Any) -> _positions.Span:
        """A pruned video: rows marked; the text after it moves on by the uncompressed run
        sequence's extent (its largest position + 1: the position after its last
        ``<|vision_end|>``), from the grid and the timestamps."""
        t, h, w = (int(v) for v in feature.data["video_grid_thw"].data)
        merge = int(self.config.vision_config.spatial_merge_size)
        stamps = feature.data["timestamps"].data
        stamps = stamps.tolist() if isinstance(stamps, torch.Tensor) else list(stamps)
        ids = _video_run([(h // merge) * (w // merge)] * t, stamps, self._tokenizer, self.config)
        grid = MultiModalKwargsItem({"video_grid_thw": feature.data["video_grid_thw"]})
        alone = MultiModalFeatureSpec(data=grid, modality="video", identifier="DUMMY",
                                      mm_position=PlaceholderRange(offset=0, length=len(ids)))
        positions, _ = Qwen3VLForConditionalGeneration._get_mrope_input_positions(
            input_tokens=ids, mm_features=[alone], config=self.config)
        return _positions.Span(int(feature.mm_position.offset), int(feature.mm_position.length),
                               int(positions.max()) + 1)

    def _flashvid_stock_call(self, mm_features: list[Any]) -> bool:
        """vLLM's own call from ``_get_expanded_positions``, on one uncompressed video (the
        ``DUMMY`` feature of :meth:`_flashvid_video_span`): stock positions."""
        return any(getattr(f, "identifier", None) == "DUMMY" for f in mm_features)

