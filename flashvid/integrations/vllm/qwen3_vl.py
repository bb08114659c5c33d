"""FlashVID version of vLLM's ``Qwen3VLForConditionalGeneration`` (registered in its place);
see :mod:`.qwen3_family`."""

from __future__ import annotations

from vllm.model_executor.models.qwen3_vl import (
    Qwen3VLDummyInputsBuilder,
    Qwen3VLForConditionalGeneration,
    Qwen3VLProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY

from .qwen3_family import FlashVIDQwen3FamilyMixin, FlashVIDQwen3VLMultiModalProcessor


@MULTIMODAL_REGISTRY.register_processor(FlashVIDQwen3VLMultiModalProcessor,
                                        info=Qwen3VLProcessingInfo,
                                        dummy_inputs=Qwen3VLDummyInputsBuilder)
class FlashVIDQwen3VLForConditionalGeneration(FlashVIDQwen3FamilyMixin,
                                              Qwen3VLForConditionalGeneration):
    """Stock Qwen3-VL, plus FlashVID on the video path when ``additional_config`` asks."""
