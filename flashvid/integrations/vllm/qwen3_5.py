"""FlashVID versions of vLLM's ``Qwen3_5ForConditionalGeneration`` and
``Qwen3_5MoeForConditionalGeneration`` (Qwen3.5 dense and MoE; registered in their place): the
Qwen3-VL vision side of :mod:`.qwen3_family` with vLLM's hybrid (linear + full attention) LLM,
untouched."""

from __future__ import annotations

from vllm.model_executor.models.qwen3_5 import (
    Qwen3_5ForConditionalGeneration,
    Qwen3_5MoeForConditionalGeneration,
    Qwen3_5MoeProcessingInfo,
    Qwen3_5ProcessingInfo,
)
from vllm.model_executor.models.qwen3_vl import Qwen3VLDummyInputsBuilder
from vllm.multimodal import MULTIMODAL_REGISTRY

from .qwen3_family import FlashVIDQwen3FamilyMixin, FlashVIDQwen3VLMultiModalProcessor


@MULTIMODAL_REGISTRY.register_processor(FlashVIDQwen3VLMultiModalProcessor,
                                        info=Qwen3_5ProcessingInfo,
                                        dummy_inputs=Qwen3VLDummyInputsBuilder)
class FlashVIDQwen3_5ForConditionalGeneration(FlashVIDQwen3FamilyMixin,
                                              Qwen3_5ForConditionalGeneration):
    """Stock Qwen3.5, plus FlashVID on the video path when ``additional_config`` asks."""


@MULTIMODAL_REGISTRY.register_processor(FlashVIDQwen3VLMultiModalProcessor,
                                        info=Qwen3_5MoeProcessingInfo,
                                        dummy_inputs=Qwen3VLDummyInputsBuilder)
class FlashVIDQwen3_5MoeForConditionalGeneration(FlashVIDQwen3FamilyMixin,
                                                 Qwen3_5MoeForConditionalGeneration):
    """Stock Qwen3.5-MoE, plus FlashVID on the video path when ``additional_config`` asks."""
