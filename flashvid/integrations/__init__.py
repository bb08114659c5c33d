"""FlashVID for Hugging Face transformers models: ``flashvid.apply(model)``.

>>> handle = flashvid.apply(model, retention_ratio=0.15)    # patch this instance
>>> out = model.generate(**inputs, max_new_tokens=64)       # the stock, uncompressed prompt
>>> handle.remove()                                         # or: with flashvid.apply(model): ...

Supported: ``LlavaOnevisionForConditionalGeneration`` (variants "llava_onevision" and
"llava_video"), ``Qwen2_5_VLForConditionalGeneration``, ``Qwen3VLForConditionalGeneration``.
transformers is imported only when :func:`apply` is called.
"""

from __future__ import annotations

from typing import Any

from ..config import FlashVIDConfig
from ._base import (
    MIN_TRANSFORMERS,
    Adapter,
    Compressor,
    Prepared,
    Selection,
    VideoRecord,
    check_transformers_version,
    keep_all,
)
from .importance import attention_column_mean, merge_unit_mean

SUPPORTED = ("LlavaOnevisionForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration",
             "Qwen3VLForConditionalGeneration")

__all__ = [
    "MIN_TRANSFORMERS", "SUPPORTED", "Adapter", "Compressor", "Prepared", "Selection",
    "VideoRecord", "apply", "attention_column_mean", "keep_all", "merge_unit_mean",
]


def apply(model: Any, config: FlashVIDConfig | None = None, *, variant: str | None = None,
          enabled: bool = True, compressor: Compressor | None = None,
          drop_vision_markers: bool | None = None, **overrides: Any) -> Adapter:
    """Patch one loaded transformers video LLM so that ``generate()`` / ``forward()`` run FlashVID.

    The caller keeps using the stock processor output (``input_ids`` with the full video
    placeholder count, ``attention_mask``, pixel values, grids); the adapter encodes the videos,
    compresses each one, and rebuilds the prompt (placeholders, mask, token types, positions).
    Only this instance is patched (its ``generate`` and ``forward`` are wrapped); other instances
    and the classes are untouched.

    Args:
        model: a ``LlavaOnevisionForConditionalGeneration``,
            ``Qwen2_5_VLForConditionalGeneration`` or ``Qwen3VLForConditionalGeneration``.
        config: a :class:`FlashVIDConfig`; default: the published preset of the model family
            (``llava_onevision()``, ``llava_video()``, ``qwen2_5_vl()``, ``qwen3_vl()``).
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
            video runs. Default: True for Qwen3-VL, False for Qwen2.5-VL (as published).
        **overrides: :class:`FlashVIDConfig` fields, e.g. ``retention_ratio=0.15``.

    Returns:
        The :class:`Adapter` handle: ``.remove()``, context manager, ``.enabled``,
        ``.config``, ``.prepare_inputs(**inputs)``, ``.last``.

    Raises:
        ImportError: transformers missing or older than ``MIN_TRANSFORMERS``.
        TypeError: an unsupported model, or bad argument types.
        ValueError: bad argument values.
        RuntimeError: the instance is already patched.
    """
    check_transformers_version()
    from transformers import (
        LlavaOnevisionForConditionalGeneration,
        Qwen2_5_VLForConditionalGeneration,
        Qwen3VLForConditionalGeneration,
    )

    if isinstance(model, LlavaOnevisionForConditionalGeneration):
        from .llava_onevision import LlavaOnevisionAdapter, resolve_variant

        if drop_vision_markers is not None:
            raise ValueError("drop_vision_markers applies to Qwen models only")
        chosen = resolve_variant(model, variant)
        cfg = _config(config, getattr(FlashVIDConfig, chosen)(), overrides)
        adapter: Adapter = LlavaOnevisionAdapter(model, cfg, enabled=enabled,
                                                 compressor=compressor, variant=chosen)
    elif isinstance(model, (Qwen2_5_VLForConditionalGeneration, Qwen3VLForConditionalGeneration)):
        if isinstance(model, Qwen3VLForConditionalGeneration):
            from .qwen3_vl import Qwen3VLAdapter as cls
        else:
            from .qwen2_5_vl import Qwen2_5_VLAdapter as cls
        if variant is not None and variant != cls.family:
            raise ValueError(f"variant applies to LLaVA-OneVision models only, got {variant!r}")
        cfg = _config(config, getattr(FlashVIDConfig, cls.family)(), overrides)
        adapter = cls(model, cfg, enabled=enabled, compressor=compressor,
                      drop_vision_markers=drop_vision_markers)
    else:
        raise TypeError(_unsupported(model))
    return adapter.install()


def _config(config: FlashVIDConfig | None, preset: FlashVIDConfig,
            overrides: dict[str, Any]) -> FlashVIDConfig:
    if config is None:
        config = preset
    elif not isinstance(config, FlashVIDConfig):
        raise TypeError(f"config must be a FlashVIDConfig or None, got {type(config).__name__}")
    return config.replace(**overrides) if overrides else config


def _unsupported(model: Any) -> str:
    name = type(model).__name__
    hint = ""
    if name == "LlavaNextVideoForConditionalGeneration":
        hint = (" LLaVA-NeXT-Video (CLIP + Vicuna/Mistral) is a different model from LLaVA-Video "
                "(SigLIP + Qwen2), which loads as LlavaOnevisionForConditionalGeneration; "
                "FlashVID has no published setting for it.")
    elif name in ("LlavaOnevisionModel", "Qwen2_5_VLModel", "Qwen3VLModel"):
        hint = " Pass the ...ForConditionalGeneration model (with the LM head), not its base model."
    return (f"flashvid.apply does not support {name}; supported model classes: "
            f"{', '.join(SUPPORTED)}.{hint}")
