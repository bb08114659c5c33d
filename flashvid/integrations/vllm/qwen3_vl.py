"""FlashVID version of vLLM's ``Qwen3VLForConditionalGeneration`` (registered in its place).

Qwen3-VL's video prompt is one run per temporal patch: ``<t seconds> <|vision_start|> tokens
<|vision_end|>``. With a pruning method on, vLLM's processor announces all of a video's kept
tokens in the first run (``[K, 0, 0, ...]``) and the model returns the whole run sequence, text
included, as embeddings. The FlashVID versions:

* processor: K = ``output_length(t, h*w/4)`` instead of EVS's count, in the HF-processed prompt
  and in the prompt updates alike;
* model: exact-count FlashVID on the visual channels of each video; each output row sits in its
  representative's frame, in raster order, carries the representative's deepstack rows (as the
  transformers adapter does) and its M-RoPE position; timestamps and markers keep theirs
  (vLLM's ``_create_final_video_embeddings`` builds the runs and positions from the kept set);
* ``get_mrope_input_positions``: vLLM's gives a video whose lumped run holds fewer tokens than
  one frame (FlashVID at small budgets; EVS never goes below a frame) a whole frame's
  positions, so the positions no longer fit the prompt; see
  ``FlashVIDModelMixin._flashvid_prompt_positions``;
* ``recompute_mrope_positions``: places each video's run sequence at its own prompt span
  (``FlashVIDModelMixin._flashvid_recompute_positions``), which also avoids vLLM 0.32's search
  for ``<|vision_start|>`` that the outer marker of transformers >= 5.10 processors throws off
  (bug 2 of :mod:`.workarounds`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from vllm.model_executor.models.qwen3_vl import (
    Qwen3VLDummyInputsBuilder,
    Qwen3VLForConditionalGeneration,
    Qwen3VLMultiModalProcessor,
    Qwen3VLProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.processing import PromptReplacement, PromptUpdateDetails
from vllm.multimodal.video_prune.evs import compute_retained_tokens_count

from . import settings as _settings
from .model import FlashVIDModelMixin, attach_positions, config_of
from .workarounds import hide_outer_vision_starts


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


@MULTIMODAL_REGISTRY.register_processor(FlashVIDQwen3VLMultiModalProcessor,
                                        info=Qwen3VLProcessingInfo,
                                        dummy_inputs=Qwen3VLDummyInputsBuilder)
class FlashVIDQwen3VLForConditionalGeneration(FlashVIDModelMixin, Qwen3VLForConditionalGeneration):
    """Stock Qwen3-VL, plus FlashVID on the video path when ``additional_config`` asks."""

    def __init__(self, *, vllm_config: Any, prefix: str = "model") -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self._flashvid_setup(vllm_config)

    def _process_video_input(self, video_input: Any) -> tuple[torch.Tensor, ...]:
        return self._flashvid_encode(video_input, super()._process_video_input)

    def _postprocess_video_embeds_evs(self, video_embeds_split: tuple[torch.Tensor, ...],
                                      video_input: Any) -> tuple[torch.Tensor, ...]:
        """Per video: the whole run sequence (timestamps, markers, FlashVID rows) as
        [L, D_visual * (1 + levels) + 5] embeddings + deepstack rows + positions."""
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
            out.append(attach_positions(final, self._flashvid_expanded[:, :3]))
        return tuple(out)

    def _get_expanded_positions(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """vLLM's, keeping its exact int64 result for :func:`.model.attach_positions`."""
        expanded = super()._get_expanded_positions(*args, **kwargs)
        self._flashvid_expanded = expanded
        return expanded

    def get_mrope_input_positions(self, input_tokens: list[int],
                                  mm_features: list[Any]) -> tuple[torch.Tensor, int]:
        internal = any(getattr(f, "identifier", None) == "DUMMY" for f in mm_features)
        if not self.is_multimodal_pruning_enabled or internal:
            # vLLM's own call from _get_expanded_positions, on one uncompressed video: stock
            return super().get_mrope_input_positions(input_tokens, mm_features)
        return self._flashvid_prompt_positions(input_tokens, mm_features)

    def recompute_mrope_positions(self, input_ids: Any, multimodal_embeddings: Any,
                                  mrope_positions: torch.Tensor,
                                  num_computed_tokens: int) -> tuple[Any, torch.Tensor, int]:
        """Rows and positions of pruned media placed by prompt span (see
        ``FlashVIDModelMixin._flashvid_recompute_positions``); vLLM's own search for
        ``<|vision_start|>``, with the outer markers hidden (bug 2), only for a prompt whose
        spans were not recorded."""
        placed = self._flashvid_recompute_positions(input_ids, multimodal_embeddings,
                                                    mrope_positions, num_computed_tokens, 5)
        if placed is not None:
            return placed
        ids = hide_outer_vision_starts(input_ids, self.config)
        return super().recompute_mrope_positions(ids, multimodal_embeddings, mrope_positions,
                                                 num_computed_tokens)
