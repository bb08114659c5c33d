"""FlashVID for ``Qwen3_5ForConditionalGeneration`` and ``Qwen3_5MoeForConditionalGeneration``
(shared logic in ``_qwen.py``).

Qwen3.5 takes videos as Qwen3-VL does (a Qwen3-VL vision tower without deepstack, one
``<t seconds><|vision_start|> tokens <|vision_end|>`` run per temporal patch, M-RoPE from the
uncompressed prompt): the adapter drops the <|vision_start|>/<|vision_end|> tokens around video
runs as for Qwen3-VL (pass ``drop_vision_markers=False`` to keep them) and keeps the timestamps.

Its language model mixes gated-DeltaNet (linear-attention) layers with full-attention layers
(one in four in the released checkpoints). The inner-LLM stage ranks the video tokens with the
last prompt token's attention in the nearest full-attention layer at or before K-1 and prunes
before layer K as usual; the linear-attention layers >= K build their recurrent state from the
kept tokens (``_llm_stage.py``). The presets :meth:`FlashVIDConfig.qwen3_5` and
:meth:`FlashVIDConfig.qwen3_5_moe` carry the published Qwen3-VL settings (K = 28: layer 27 is a
full-attention layer in every released layout).
"""

from __future__ import annotations

from ._qwen import QwenVLAdapter


class Qwen3_5Adapter(QwenVLAdapter):
    """FlashVID on a ``Qwen3_5ForConditionalGeneration`` instance."""

    family = "qwen3_5"
    window_order = False
    default_drop_markers = True


class Qwen3_5MoeAdapter(Qwen3_5Adapter):
    """FlashVID on a ``Qwen3_5MoeForConditionalGeneration`` instance (MoE decoder layers)."""

    family = "qwen3_5_moe"
