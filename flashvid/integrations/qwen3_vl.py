"""FlashVID for ``Qwen3VLForConditionalGeneration`` and ``Qwen3VLMoeForConditionalGeneration``
(shared logic in ``_qwen.py``).

Qwen3-VL specifics (§11): every temporal patch is its own placeholder run
``<t seconds><|vision_start|> tokens <|vision_end|>``; the adapter drops the
<|vision_start|>/<|vision_end|> tokens around video runs, as published (pass
``drop_vision_markers=False`` to keep them) and keeps the timestamp text; the deepstack features
of every level are gathered at the kept representatives (a merged token gets its
representative's unmerged deepstack features). No window reordering. The config presets are
:meth:`FlashVIDConfig.qwen3_vl` and, for Qwen3-VL-MoE (the same vision side and prompt format,
MoE decoder layers), :meth:`FlashVIDConfig.qwen3_vl_moe`.
"""

from __future__ import annotations

from ..config import FlashVIDConfig
from ._qwen import QwenVLAdapter


class Qwen3VLAdapter(QwenVLAdapter):
    """FlashVID on a ``Qwen3VLForConditionalGeneration`` instance."""

    family = "qwen3_vl"
    window_order = False
    default_drop_markers = True

    def _check_llm_stage(self, config: FlashVIDConfig) -> None:
        levels = len(getattr(self.model.config.vision_config, "deepstack_visual_indexes", None)
                     or ())
        if config.pruning_layer < levels:
            raise ValueError(
                f"pruning_layer={config.pruning_layer}: Qwen3-VL adds deepstack features to the "
                f"video tokens after each of its first {levels} decoder layers, so the inner-LLM "
                f"stage must start at layer {levels} or later (published: 28)")


class Qwen3VLMoeAdapter(Qwen3VLAdapter):
    """FlashVID on a ``Qwen3VLMoeForConditionalGeneration`` instance (MoE decoder layers)."""

    family = "qwen3_vl_moe"
