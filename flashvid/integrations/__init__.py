"""FlashVID for Hugging Face transformers models: ``flashvid.apply(model)``.

>>> handle = flashvid.apply(model, retention_ratio=0.15)    # patch this instance
>>> out = model.generate(**inputs, max_new_tokens=64)       # the stock, uncompressed prompt
>>> handle.remove()                                         # or: with flashvid.apply(model): ...

Supported: ``LlavaOnevisionForConditionalGeneration`` (variants "llava_onevision" and
"llava_video"), ``Qwen2_5_VLForConditionalGeneration``, ``Qwen3VLForConditionalGeneration``,
``Qwen3VLMoeForConditionalGeneration``, ``Qwen3_5ForConditionalGeneration`` and
``Qwen3_5MoeForConditionalGeneration``.
transformers is imported only when :func:`apply` is called.

Layout: ``_handle.py`` (the patch handle, the generate/forward path), ``_prompt.py`` (pure
prompt-rebuild functions), ``_records.py`` (records, the compressor contract),
``llm_prune.py`` + ``_llm_stage.py`` (the inner-LLM stage), ``importance.py`` (§3 scores),
one file per model family, and the registry below.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..config import FlashVIDConfig, with_overrides
from ._handle import MIN_TRANSFORMERS, Adapter, check_transformers_version
from ._llm_stage import PruneRecord
from ._records import Compressor, Prepared, Selection, VideoRecord, keep_all
from .importance import attention_column_mean, merge_unit_mean
from .llm_prune import last_query_attention, llm_prune_count, llm_prune_keep

# model class name -> (module, adapter class, family preset); subclasses match through the MRO
REGISTRY: dict[str, tuple[str, str, str]] = {
    "LlavaOnevisionForConditionalGeneration": ("llava_onevision", "LlavaOnevisionAdapter",
                                               "llava_onevision"),
    "Qwen2_5_VLForConditionalGeneration": ("qwen2_5_vl", "Qwen2_5_VLAdapter", "qwen2_5_vl"),
    "Qwen3VLForConditionalGeneration": ("qwen3_vl", "Qwen3VLAdapter", "qwen3_vl"),
    "Qwen3VLMoeForConditionalGeneration": ("qwen3_vl", "Qwen3VLMoeAdapter", "qwen3_vl_moe"),
    "Qwen3_5ForConditionalGeneration": ("qwen3_5", "Qwen3_5Adapter", "qwen3_5"),
    "Qwen3_5MoeForConditionalGeneration": ("qwen3_5", "Qwen3_5MoeAdapter", "qwen3_5_moe"),
}
SUPPORTED = tuple(REGISTRY)

__all__ = [
    "MIN_TRANSFORMERS", "REGISTRY", "SUPPORTED", "Adapter", "Compressor", "Prepared",
    "PruneRecord", "Selection", "VideoRecord", "apply", "attention_column_mean", "keep_all",
    "last_query_attention", "llm_prune_count", "llm_prune_keep", "merge_unit_mean",
]


def apply(model: Any, config: FlashVIDConfig | None = None, *, variant: str | None = None,
          enabled: bool = True, compressor: Compressor | None = None,
          drop_vision_markers: bool | None = None, record: bool = False,
          **overrides: Any) -> Adapter:
    """Patch one loaded transformers video LLM so that ``generate()`` / ``forward()`` run FlashVID.

    The caller keeps using the stock processor output (``input_ids`` with the full video
    placeholder count, ``attention_mask``, pixel values, grids); the adapter encodes the videos,
    compresses each one, rebuilds the prompt (placeholders, mask, token types, positions), and
    in ``generate()`` runs the inner-LLM stage: at decoder layer ``pruning_layer`` only
    ``llm_retention_ratio`` of the video tokens stay (§10). Only this instance is patched.

    Args:
        model: a ``LlavaOnevisionForConditionalGeneration``,
            ``Qwen2_5_VLForConditionalGeneration``, ``Qwen3VLForConditionalGeneration``,
            ``Qwen3VLMoeForConditionalGeneration``, ``Qwen3_5ForConditionalGeneration`` or
            ``Qwen3_5MoeForConditionalGeneration``.
        config: a :class:`FlashVIDConfig`; default: the preset of the model family
            (``llava_onevision()``, ``llava_video()``, ``qwen2_5_vl()``, ``qwen3_vl()``,
            ``qwen3_vl_moe()``, ``qwen3_5()``, ``qwen3_5_moe()``).
        variant: LLaVA-OneVision class only: "llava_onevision" (bilinear 14x14 pooling, one
            trailing newline) or "llava_video" (2x2 average pooling to 13x13, a newline after
            every frame). None: "llava_video" if the checkpoint name contains "LLaVA-Video",
            else "llava_onevision".
        enabled: False installs the patch switched off (the model behaves exactly as stock);
            toggle later with ``handle.enabled``.
        compressor: replaces :func:`flashvid.compress` per video: a callable
            ``(tokens [F, N, D], importance [F, N], config) -> obj`` with ``obj.tokens`` [V, D]
            and ascending ``obj.indices`` [V]; e.g. :func:`keep_all` for an uncompressed run of
            the same path.
        drop_vision_markers: Qwen only: drop the <|vision_start|>/<|vision_end|> tokens around
            video runs. Default: True for Qwen3-VL (as published) and the families that share
            its prompt format (Qwen3-VL-MoE, Qwen3.5, Qwen3.5-MoE), False for Qwen2.5-VL.
        record: keep the last call's :class:`Prepared` record (with its tensors) in
            ``handle.last``; off by default so that nothing outlives a call.
        **overrides: :class:`FlashVIDConfig` fields, e.g. ``retention_ratio=0.15``;
            ``pruning_layer=None`` (or ``llm_retention_ratio=1.0``) switches the inner-LLM stage
            off. In models that mix linear-attention and full-attention layers (Qwen3.5) the
            stage ranks tokens with the nearest full-attention layer at or before
            ``pruning_layer - 1`` (a ValueError if there is none).

    Returns:
        The :class:`Adapter` handle: ``.remove()``, context manager, ``.enabled``,
        ``.config``, ``.llm_stage``, ``.prepare_inputs(**inputs)``, ``.record``, ``.last``.

    Raises:
        ImportError: transformers missing or older than ``MIN_TRANSFORMERS``.
        TypeError: an unsupported model, or bad argument types.
        ValueError: bad argument values, or settings that would do nothing (a pruning layer
            past the last decoder layer, an attention implementation the stage cannot serve).
        RuntimeError: the instance is already patched.
    """
    check_transformers_version()
    entry = _lookup(model)
    if entry is None:
        raise TypeError(_unsupported(model))
    module_name, class_name, family = entry
    cls = getattr(importlib.import_module(f"{__name__}.{module_name}"), class_name)
    llm_stage = True
    if "pruning_layer" in overrides and overrides["pruning_layer"] is None:
        del overrides["pruning_layer"]
        llm_stage = False
    options: dict[str, Any] = dict(enabled=enabled, compressor=compressor, record=record,
                                   llm_stage=llm_stage)
    if family == "llava_onevision":
        from .llava_onevision import resolve_variant

        if drop_vision_markers is not None:
            raise ValueError("drop_vision_markers applies to Qwen models only")
        family = resolve_variant(model, variant)
        options["variant"] = family
    else:
        if variant is not None and variant != family:
            raise ValueError(f"variant applies to LLaVA-OneVision models only, got {variant!r}")
        options["drop_vision_markers"] = drop_vision_markers
    cfg = with_overrides(config, overrides, getattr(FlashVIDConfig, family)())
    return cls(model, cfg, **options).install()


def _lookup(model: Any) -> tuple[str, str, str] | None:
    for klass in type(model).__mro__:
        if klass.__name__ in REGISTRY and klass.__module__.startswith("transformers."):
            return REGISTRY[klass.__name__]
    return None


def _unsupported(model: Any) -> str:
    name = type(model).__name__
    hint = ""
    if name == "LlavaNextVideoForConditionalGeneration":
        hint = (" LLaVA-NeXT-Video (CLIP + Vicuna/Mistral) is a different model from LLaVA-Video "
                "(SigLIP + Qwen2), which loads as LlavaOnevisionForConditionalGeneration; "
                "FlashVID has no published setting for it.")
    elif name in ("LlavaOnevisionModel", "Qwen2_5_VLModel", "Qwen3VLModel", "Qwen3VLMoeModel",
                  "Qwen3_5Model", "Qwen3_5MoeModel"):
        hint = " Pass the ...ForConditionalGeneration model (with the LM head), not its base model."
    return (f"flashvid.apply does not support {name}; supported model classes: "
            f"{', '.join(SUPPORTED)}.{hint}")
