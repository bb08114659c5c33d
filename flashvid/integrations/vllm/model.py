"""What the FlashVID versions of vLLM's Qwen-VL models share (Qwen2.5-VL and the Qwen3-VL
family), and the fault handling that LLaVA-OneVision's class uses too.

The model classes subclass vLLM's own and change, only while FlashVID is on:

* ``_process_video_input`` runs the vision tower as stock, with a hook on the last vision block
  that keeps q and k; the importance of every merged token follows (:mod:`.scores`).
* ``_postprocess_video_embeds_evs`` (vLLM's video-pruning hook, called per video once its
  pruning path is on) runs :func:`flashvid.compress_batch` in exact-count mode with the count
  the processor announced (:func:`robust_compress`: a fault gives a valid selection, never an
  exception), and hands vLLM each output row with its M-RoPE position relative to the video in
  exact columns (:mod:`.positions`);
* with any pruning on (FlashVID or EVS), the two position steps (:mod:`.positions`);
* at load, one tiny compression on the worker's device (:func:`startup_check`).

Images, text, the LLM and the KV cache are stock. With FlashVID off (no ``"flashvid"`` in
``additional_config``) and no pruning, every method is vLLM's own.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

import flashvid as _flashvid

from ...config import FlashVIDConfig
from . import positions as _positions
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


@dataclass
class FallbackVideo:
    """What a video gets when FlashVID fails inside a request (see :func:`robust_compress`):
    ``tokens`` [K, D] at ``indices`` [K] (ascending t*N + n), evenly spaced over the video."""

    tokens: torch.Tensor
    indices: torch.Tensor


def fallback_selection(video: torch.Tensor, count: int) -> FallbackVideo:
    """``count`` rows of ``video`` [T, N, D], evenly spaced over its T*N tokens (deterministic,
    ascending), non-finite values set to 0."""
    flat = video.reshape(-1, video.shape[-1])
    total = flat.shape[0]
    count = max(0, min(int(count), total))
    indices = torch.arange(count, device=flat.device) * total // max(count, 1)
    tokens = torch.nan_to_num(flat[indices], nan=0.0, posinf=0.0, neginf=0.0)
    return FallbackVideo(tokens, indices)


def robust_compress(videos: list[torch.Tensor], scores: list[torch.Tensor],
                    config: FlashVIDConfig, counts: list[int]) -> list[Any]:
    """``flashvid.compress_batch`` in exact-count mode with ``counts[i]`` rows per video.

    A fault inside a request must not stop the engine: vLLM 0.32 has no way for a model to
    fail one request (an exception in the model's forward kills the engine core, and every
    request with it). So when compression raises (non-finite features, a bug), the error is
    logged and the videos of this call keep an evenly spaced selection of the announced count
    (:func:`fallback_selection`), which keeps the prompt, the positions and the engine
    consistent. Out-of-memory errors are not caught (the engine cannot go on after them)."""
    try:
        results = list(_flashvid.compress_batch(videos, scores, config, num_tokens=counts))
        for i, (result, count) in enumerate(zip(results, counts)):
            if result.tokens.shape[0] != count:
                raise RuntimeError(f"FlashVID returned {result.tokens.shape[0]} rows for video "
                                   f"{i}, the prompt holds {count} placeholders")
        return results
    except torch.OutOfMemoryError:
        raise
    except Exception as err:  # noqa: BLE001 - see the docstring: the engine must survive
        logger.error("FlashVID: compression failed for %d video(s) of shapes %s (%s: %s); they "
                     "keep an evenly spaced selection of the announced %s tokens instead, and "
                     "the engine goes on serving", len(videos),
                     [tuple(v.shape) for v in videos], type(err).__name__, err, counts,
                     exc_info=True)
        return [fallback_selection(v, k) for v, k in zip(videos, counts)]


def startup_check(config: FlashVIDConfig, device: Any, dtype: torch.dtype) -> None:
    """Compress a tiny random video with ``config`` on ``device`` in ``dtype`` (what every
    request will do), so that settings that cannot run there (``backend="triton"`` without
    CUDA, ...) stop the engine at start, not at the first video request."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, generator=generator).to(device=device, dtype=dtype)
    s = torch.rand(2, 4, generator=generator).to(device=device)
    count = _settings.output_length(config, 2, 4)
    try:
        result = _flashvid.compress_batch([x], [s], config, num_tokens=[count])[0]
    except Exception as err:
        raise ValueError(f"additional_config['flashvid'] cannot run on this engine's device "
                         f"({device}, {dtype}): {type(err).__name__}: {err}") from err
    if result.tokens.shape[0] != count:
        raise RuntimeError(f"FlashVID start-up check: {result.tokens.shape[0]} rows, expected "
                           f"{count}")


def guarded_importance(compute: Any) -> Any:
    """``compute()`` (a request's importance scores), or None after logging the error when it
    raises anything but out-of-memory: a fault in one request must not stop the engine, and
    its videos are then compressed with uniform importance."""
    try:
        return compute()
    except torch.OutOfMemoryError:
        raise
    except Exception as err:  # noqa: BLE001 - a request's fault must not stop the engine
        logger.error("FlashVID: importance scores failed (%s: %s); these videos are "
                     "compressed with uniform importance", type(err).__name__, err,
                     exc_info=True)
        return None


class FlashVIDModelMixin:
    """Mixed into a vLLM Qwen-VL model class, before it in the bases.

    A family class provides ``_flashvid_media_span(feature, offset, length)`` (a
    :class:`.positions.Span` per media item of a prompt) and ``STOCK_COLUMNS`` (the position
    columns vLLM's own pruning path appends to image and EVS rows: 4 or 5).
    """

    flashvid_config: FlashVIDConfig | None = None
    STOCK_COLUMNS = 4

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
        if self.flashvid_config is not None:
            device = next(self.parameters()).device
            startup_check(self.flashvid_config, device, vllm_config.model_config.dtype)

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
        self._flashvid_scores = guarded_importance(lambda: video_scores(
            captured, grids, merge=int(self.visual.spatial_merge_size),
            scale=getattr(attention.attn, "scale", None), total_heads=local_heads * tp,
            window_index=self._flashvid_window_index(), all_reduce=all_reduce))
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
        """FlashVID in exact-count mode on each video [t, n, D]; one result each with exactly
        ``counts[i]`` rows (``tokens`` [K, D], ``indices`` [K] ascending t*n + j); a fault
        gives the fallback selection (:func:`robust_compress`)."""
        return robust_compress(videos, scores, self.flashvid_config, counts)

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
    def _flashvid_image_span(self, feature: Any) -> _positions.Span:
        """An image (not pruned): one (1, h, w) grid; the text after it moves on by max(h, w)
        (the stock rule, as without pruning)."""
        t, h, w = (int(v) for v in feature.data["image_grid_thw"].data)
        merge = int(self.config.vision_config.spatial_merge_size)
        rows, cols = h // merge, w // merge
        grid = torch.stack(torch.meshgrid(torch.zeros(1, dtype=torch.long), torch.arange(rows),
                                          torch.arange(cols), indexing="ij")).reshape(3, -1)
        return _positions.Span(int(feature.mm_position.offset), int(feature.mm_position.length),
                               max(rows, cols), grid)

    def _flashvid_prompt_positions(self, input_tokens: Sequence[int],
                                   mm_features: Any) -> tuple[torch.Tensor, int]:
        """The prompt's final positions with pruning on (FlashVID or vLLM's EVS), computed
        from the request alone (:func:`.positions.prompt_positions`): text and images final;
        each pruned video's rows marked (written by :meth:`_flashvid_recompute_positions` in
        the step that computes them) and the text after it at the position it has in the
        uncompressed prompt. So a prefix-cache hit that skips the video (and its encoder) still
        gives every later token its right position."""
        spans = []
        for feature in mm_features:
            if feature.modality == "image":
                spans.append(self._flashvid_image_span(feature))
            elif feature.modality == "video":
                spans.append(self._flashvid_video_span(feature))
            else:
                raise ValueError(f"FlashVID positions: unsupported modality {feature.modality!r}")
        return _positions.prompt_positions(len(input_tokens), spans)

    def get_mrope_input_positions(self, input_tokens: list[int],
                                  mm_features: list[Any]) -> tuple[torch.Tensor, int]:
        """vLLM's M-RoPE positions of a prompt: with pruning on, those of
        :meth:`_flashvid_prompt_positions`; otherwise (or for vLLM's own internal calls,
        :meth:`_flashvid_stock_call`) the stock ones."""
        if not self.is_multimodal_pruning_enabled or self._flashvid_stock_call(mm_features):
            return super().get_mrope_input_positions(input_tokens, mm_features)
        return self._flashvid_prompt_positions(input_tokens, mm_features)

    def _flashvid_stock_call(self, mm_features: list[Any]) -> bool:
        """Whether vLLM itself asks for the stock positions of these features (a family with
        such internal calls overrides this)."""
        return False

    def recompute_mrope_positions(self, input_ids: Any, multimodal_embeddings: Any,
                                  mrope_positions: torch.Tensor,
                                  num_computed_tokens: int) -> tuple[Any, torch.Tensor, int]:
        """Rows of pruned media written at their marked placeholders
        (:meth:`_flashvid_recompute_positions`)."""
        return self._flashvid_recompute_positions(input_ids, multimodal_embeddings,
                                                  mrope_positions, num_computed_tokens)

    def _flashvid_split(self, rows: torch.Tensor,
                        pruned: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(embeddings, relative positions [3, n] of a pruned item's rows, or None)."""
        if pruned and self.flashvid_config is not None:  # FlashVID's rows: exact digits
            return rows[:, :-_positions.COLUMNS], _positions.decode(rows[:, -_positions.COLUMNS:])
        c = self.STOCK_COLUMNS  # vLLM's columns (images; EVS videos)
        rel = rows[:, -c:-c + 3].T.long() if pruned else None
        return rows[:, :-c], rel

    def _flashvid_recompute_positions(self, input_ids: Any, multimodal_embeddings: Any,
                                      mrope_positions: torch.Tensor,
                                      num_computed_tokens: int) -> tuple[list, torch.Tensor, int]:
        """vLLM's ``recompute_mrope_positions`` over the positions of
        :meth:`_flashvid_prompt_positions`: each pruned item's rows of this step go to their
        marked placeholder rows (:func:`.positions.recompute`); nothing else moves."""
        image_token = int(self.config.image_token_id)
        return _positions.recompute(input_ids, list(multimodal_embeddings), mrope_positions,
                                    num_computed_tokens, split=self._flashvid_split,
                                    unpruned_token_ids=[image_token])
