"""FlashVID version of vLLM's ``Qwen3VLMoeForConditionalGeneration`` (Qwen3-VL-MoE, e.g.
Qwen3-VL-30B-A3B; registered in its place): the Qwen3-VL vision side of :mod:`.qwen3_family`
with vLLM's MoE LLM, untouched."""

from __future__ import annotations

from vllm.model_executor.models.qwen3_vl import Qwen3VLDummyInputsBuilder
from vllm.model_executor.models.qwen3_vl_moe import (
    Qwen3VLMoeForConditionalGeneration,
    Qwen3VLMoeProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY

from .qwen3_family import FlashVIDQwen3FamilyMixin, FlashVIDQwen3VLMultiModalProcessor


@MULTIMODAL_REGISTRY.register_processor(FlashVIDQwen3VLMultiModalProcessor,
                                        info=Qwen3VLMoeProcessingInfo,
                                        dummy_inputs=Qwen3VLDummyInputsBuilder)
class FlashVIDQwen3VLMoeForConditionalGeneration(FlashVIDQwen3FamilyMixin,
                                                 Qwen3VLMoeForConditionalGeneration):
    """Stock Qwen3-VL-MoE, plus FlashVID on the video path when ``additional_config`` asks."""
