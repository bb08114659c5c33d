"""What the FlashVID versions of vLLM's Qwen2.5-VL and Qwen3-VL models share.

The model classes subclass vLLM's own and change three things, only while FlashVID is on:

* ``_process_video_input`` runs the vision tower as stock, with a hook on the last vision block
  that keeps q and k; the importance of every merged token follows (:mod:`.scores`).
* ``_postprocess_video_embeds_evs`` (vLLM's video-pruning hook, called per video once its
  pruning path is on) runs :func:`flashvid.compress_batch` in exact-count mode with the count
  the processor announced, and hands vLLM each output row with the M-RoPE position of its
  representative token.
* nothing else: images, text, the LLM and the KV cache are stock.

With FlashVID off (no ``"flashvid"`` in ``additional_config``) every method is vLLM's own, so
the model is stock vLLM, EVS and VidCom2 included.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch

import flashvid as _flashvid

from ...config import FlashVIDConfig
from . import settings as _settings
from .scores import capture_last_block, video_scores

logger = logging.getLogger("vllm.flashvid")  # shown by vLLM's log handler
SETTINGS_ATTR = "flashvid_settings"  # set on vLLM's MultiModalConfig by the config hook


def settings_of(multimodal_config: Any) -> dict[str, Any] | None:
    """The normalised FlashVID settings the config hook stored, or None (FlashVID off)."""
    if multimodal_config is None:
        return None
    return getattr(multimodal_config, SETTINGS_ATTR, None)


def config_of(multimodal_config: Any) -> FlashVIDConfig | None:
    """The exact-count FlashVIDConfig in force for this engine, or None (FlashVID off)."""
    stored = settings_of(multimodal_config)
    return None if stored is None else _settings.to_config(stored)


EXACT_ATTR = "_flashvid_positions"


def _prompt_key(ids: Sequence[int]) -> tuple[int, int]:
    """(length, 64-bit hash) of a prompt: what the span memory is keyed by (not the prompt
    itself, which would keep every remembered prompt's tokens alive)."""
    return len(ids), hash(tuple(ids))


def attach_positions(rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Keep the exact int64 positions [n, 3] of a hook output ``rows`` [n, D + c] with it.

    vLLM's pruning path carries positions as extra columns in the embedding dtype, where
    bfloat16 rounds integers above 256 (long Qwen3-VL videos reach that). The runner hands
    ``recompute_mrope_positions`` row slices (views) of the tensor the hook returned, so the
    exact positions are found again through the view's base (:func:`exact_positions`).
    """
    setattr(rows, EXACT_ATTR, positions.to(device=rows.device, dtype=torch.long).T.contiguous())
    return rows


def exact_positions(item: torch.Tensor) -> torch.Tensor | None:
    """[3, n] int64 positions of a (slice of a) hook output, or None if it has none."""
    base = item if item._base is None else item._base
    exact = getattr(base, EXACT_ATTR, None)
    if exact is None or base.dim() != 2 or item.dim() != 2:
        return None
    first = (item.storage_offset() - base.storage_offset()) // base.stride(0)
    return exact[:, first:first + item.shape[0]]


class FlashVIDModelMixin:
    """Mixed into a vLLM Qwen-VL model class, before it in the bases."""

    flashvid_config: FlashVIDConfig | None = None

    def _flashvid_setup(self, vllm_config: Any) -> None:
        mm_config = vllm_config.model_config.multimodal_config
        additional = vllm_config.additional_config
        requested = isinstance(additional, dict) and _settings.KEY in additional
        self.flashvid_config = config_of(mm_config)
        if requested and self.flashvid_config is None:
            raise RuntimeError(
                "additional_config has 'flashvid' but the FlashVID plugin's config hook did not "
                "run where the engine configuration was made; make sure the `flashvid` vLLM "
                "plugin is loaded there (it is, unless VLLM_PLUGINS excludes it)")
        self._flashvid_scores: list[torch.Tensor] | None = None
        self._flashvid_spans: OrderedDict[tuple[int, int], list[tuple[int, int]]] = OrderedDict()
        if self.flashvid_config is not None:
            logger.info("FlashVID on: %s", settings_of(mm_config))

    # ------------------------------------------------------------------ encoding
    def _flashvid_window_index(self) -> Any:
        """Qwen2.5-VL: a function (t, h, w) -> window order of merge units; else None."""
        return None

    def _flashvid_encode(self, video_input: Any, run: Any) -> Any:
        """Run the stock ``_process_video_input`` (``run``); keep per-video importance."""
        self._flashvid_scores = None
        if self.flashvid_config is None or video_input["type"] != "pixel_values_videos":
            return run(video_input)
        grids = video_input["video_grid_thw"].tolist()
        attention = self.visual.blocks[-1].attn
        tp = int(getattr(attention, "tp_size", 1) or 1)
        local_heads = int(attention.num_attention_heads_per_partition)
        all_reduce = None
        if tp > 1:
            from vllm.distributed import tensor_model_parallel_all_reduce as all_reduce
        with capture_last_block(self.visual) as captured:
            out = run(video_input)
        self._flashvid_scores = video_scores(
            captured, grids, merge=int(self.visual.spatial_merge_size),
            scale=getattr(attention.attn, "scale", None), total_heads=local_heads * tp,
            window_index=self._flashvid_window_index(), all_reduce=all_reduce)
        return out

    def _flashvid_take_scores(self, videos: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The importance of each video [t, n] (float32) from the last tower call.

        Precomputed ``video_embeds`` carry no attention: FlashVID then selects by diversity
        alone (uniform importance), with a warning, rather than fail the request.
        """
        scores, self._flashvid_scores = self._flashvid_scores, None
        if scores is not None and len(scores) == len(videos):
            return [s.to(v.device) for s, v in zip(scores, videos)]
        logger.warning("FlashVID: no vision attention for these videos (precomputed "
                       "video_embeds?); using uniform importance")
        return [torch.full(v.shape[:2], 1.0 / v.shape[1], device=v.device) for v in videos]

    # ------------------------------------------------------------------ compression
    def _flashvid_counts(self, grids: Sequence[Sequence[int]]) -> list[int]:
        """Rows per video: exactly what the processor announced for (t, h, w)."""
        merge = int(self.visual.spatial_merge_size)
        return [_settings.output_length(self.flashvid_config, t, (h // merge) * (w // merge))
                for t, h, w in grids]

    def _flashvid_compress(self, videos: list[torch.Tensor], scores: list[torch.Tensor],
                           counts: list[int]) -> list[Any]:
        """FlashVID in exact-count mode on each video [t, n, D]; one CompressedVideo each with
        exactly ``counts[i]`` rows (``tokens`` [K, D], ``indices`` [K] ascending t*n + j)."""
        results = _flashvid.compress_batch(videos, scores, self.flashvid_config,
                                                  num_tokens=counts)
        for i, (result, count) in enumerate(zip(results, counts)):
            if result.tokens.shape[0] != count:
                raise RuntimeError(f"FlashVID returned {result.tokens.shape[0]} rows for video "
                                   f"{i}, the prompt holds {count} placeholders")
        return list(results)

    def _flashvid_videos(self, embeds: Sequence[torch.Tensor], grids: Sequence[Sequence[int]],
                         dim: int | None = None) -> list[torch.Tensor]:
        """Per video [t, n, D] views of the merged tokens (first ``dim`` channels)."""
        merge = int(self.visual.spatial_merge_size)
        out = []
        for emb, (t, h, w) in zip(embeds, grids):
            x = emb if dim is None else emb[:, :dim]
            out.append(x.reshape(int(t), (int(h) // merge) * (int(w) // merge), x.shape[-1]))
        return out

    # ------------------------------------------------------------------ positions
    SPAN_MEMORY = 4096  # prompts whose media spans are remembered (the most recent ones)
    # Each entry is a few ints per media item; the runner computes a request's prompt positions
    # (which records its spans) right before the first recompute for it, in the same process.

    def _flashvid_prompt_positions(self, input_tokens: Sequence[int],
                                   mm_features: Any) -> tuple[torch.Tensor, int]:
        """The prompt's positions before any media is encoded, with pruning on: 0, 1, 2, ...
        (delta 0), one per prompt token; records the media spans.

        Only the text before the first media span keeps these values: the positions of every
        span, and of the text after it, come from the encoded media, in
        :meth:`_flashvid_recompute_positions` (vLLM's runner calls it before the LLM sees any
        token of the span). vLLM 0.32's versions assume unpruned media lengths and give
        positions that do not fit a prompt with several pruned videos (Qwen2.5-VL) or with a
        video shorter than one frame (Qwen3-VL).
        """
        self._flashvid_remember_spans(input_tokens, mm_features)
        count = len(input_tokens)
        return torch.arange(count).view(1, -1).expand(3, -1).clone(), 0

    def _flashvid_remember_spans(self, input_tokens: Sequence[int], mm_features: Any) -> None:
        """Keep the prompt's media spans (offset, length), sorted, for
        :meth:`_flashvid_recompute_positions` (called by vLLM's runner with the prompt only)."""
        if any(getattr(f, "identifier", None) == "DUMMY" for f in mm_features):
            return  # vLLM's own helper call on a synthetic prompt
        spans = sorted((int(f.mm_position.offset), int(f.mm_position.length))
                       for f in mm_features)
        key = _prompt_key(input_tokens)
        self._flashvid_spans[key] = spans
        self._flashvid_spans.move_to_end(key)
        while len(self._flashvid_spans) > self.SPAN_MEMORY:
            self._flashvid_spans.popitem(last=False)

    def _flashvid_recompute_positions(self, input_ids: Any, multimodal_embeddings: Any,
                                      mrope_positions: torch.Tensor, num_computed_tokens: int,
                                      channels: int) -> tuple[list, torch.Tensor, int] | None:
        """vLLM's ``recompute_mrope_positions`` for pruned media, placed by span.

        vLLM 0.32's version (``evs.recompute_mrope_positions``) finds each media item by
        searching ``<|vision_start|>`` tokens from ``num_computed_tokens``, which it advances by
        the item's length instead of to the item's end: from the second media of a prompt on,
        rows and positions land on the first one (EVS too), and Qwen3-VL's outer marker throws
        it off (bug 2). Here each item is placed at its prompt span (recorded by
        ``get_mrope_input_positions``): the first item of the step continues the span that
        contains ``num_computed_tokens`` (chunked prefill) or starts the next one; the others
        start theirs. Positions inside a span are the item's own (relative to the span) plus
        the position after the token before the span; once a span is complete, the text after
        it restarts after the span's advance (Qwen2.5-VL: the 4th column; Qwen3-VL: the largest
        position in the span + 1), as vLLM does.

        Returns None when the prompt's spans are unknown (then vLLM's own version runs).
        """
        if not multimodal_embeddings:  # decoding steps: nothing to place (no prompt lookup)
            return [], mrope_positions, int(mrope_positions.max()) + 1 - len(input_ids)
        ids = input_ids.tolist() if isinstance(input_ids, torch.Tensor) else list(input_ids)
        spans = self._flashvid_spans.get(_prompt_key(ids))
        if spans is None:
            return None
        positions = mrope_positions.clone()
        embeds = [m[:, :-channels] for m in multimodal_embeddings]
        device = positions.device
        pending = [i for i, (off, length) in enumerate(spans) if off + length > num_computed_tokens]
        if len(pending) < len(multimodal_embeddings):
            return None
        first = pending[0]
        media = torch.zeros(len(ids), dtype=torch.bool)
        for off, length in spans:
            media[off:off + length] = True
        media = media.to(device)
        for i, item in enumerate(multimodal_embeddings):
            off, length = spans[first + i]
            start = max(num_computed_tokens, off) if i == 0 else off
            rel = exact_positions(item)
            if rel is None:  # media the plugin did not produce (images): vLLM's columns
                rel = item[:, -channels:-channels + 3].permute(1, 0).long()
            rel = rel.to(device)  # [3, n]
            base = positions[-1, off - 1] + 1 if off > 0 else 0
            positions[:, start:start + rel.shape[1]] = rel + base
            if start - off + rel.shape[1] < length:
                continue  # the span goes on in the next step
            end = off + length
            if channels == 4:
                after = base + item[0, -1].long().to(device)
            else:
                after = positions[:, off:end].max() + 1
            text = torch.cumsum((~media[end:]).long(), dim=0)
            positions[:, end:] = text + after - 1
        return embeds, positions, int(positions.max()) + 1 - len(ids)
