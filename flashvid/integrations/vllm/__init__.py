"""FlashVID in vLLM: an out-of-tree plugin for Qwen2.5-VL, Qwen3-VL, Qwen3-VL-MoE, Qwen3.5,
Qwen3.5-MoE and LLaVA-OneVision (LLaVA-Video weights included).

Installed with ``pip install "flashvid[vllm]"``; vLLM loads it in every process through the
``vllm.general_plugins`` entry point ``flashvid = flashvid.integrations.vllm:register``. It is
off until asked for:

    vllm serve Qwen/Qwen2.5-VL-7B-Instruct --additional-config '{"flashvid": {}}'
    LLM(model=..., additional_config={"flashvid": {"retention_ratio": 0.15}})

The object under ``"flashvid"`` takes ``preset`` (default: the model family's published
preset) and the vision-side fields of :class:`flashvid.FlashVIDConfig` (``retention_ratio``,
``expansion``, ``alpha``, ``selection``, ...); see :mod:`.settings`.

What :func:`register` does:

* registers FlashVID subclasses of vLLM's model classes (:data:`ARCHITECTURES`) under those
  architecture names (lazily, by name); with FlashVID off they are the stock models;
* wraps vLLM's engine configuration step (``VllmConfig.try_verify_and_update_config``) with
  :func:`check_engine_config`, which, for every model: warns about misspelt ``"flashvid"``
  keys, refuses settings for an architecture the plugin does not serve, validates the settings
  (against the engine's device too), turns on vLLM's video-pruning path
  (``video_pruning_rate``) so that positions travel with the embeddings (Qwen; LLaVA's 1-D
  positions need no such path, :mod:`.llava_onevision`), stores the settings where the
  processor and the model read them, and logs one line saying whether FlashVID is on;
* on vLLM's CPU platform, applies the CPU-runner workaround of :mod:`.workarounds`.

Importing this package imports neither vLLM nor transformers; :func:`register` imports vLLM.
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Any

from .settings import (
    KEY,
    allowed_fields,
    lookalike_keys,
    nominal_pruning_rate,
    output_length,
    parse,
    to_config,
)

ARCHITECTURES = {
    "Qwen2_5_VLForConditionalGeneration": (
        "flashvid.integrations.vllm.qwen2_5_vl:FlashVIDQwen2_5_VLForConditionalGeneration",
        "qwen2_5_vl"),
    "Qwen3VLForConditionalGeneration": (
        "flashvid.integrations.vllm.qwen3_vl:FlashVIDQwen3VLForConditionalGeneration",
        "qwen3_vl"),
    "Qwen3VLMoeForConditionalGeneration": (
        "flashvid.integrations.vllm.qwen3_vl_moe:FlashVIDQwen3VLMoeForConditionalGeneration",
        "qwen3_vl_moe"),
    "Qwen3_5ForConditionalGeneration": (
        "flashvid.integrations.vllm.qwen3_5:FlashVIDQwen3_5ForConditionalGeneration",
        "qwen3_5"),
    "Qwen3_5MoeForConditionalGeneration": (
        "flashvid.integrations.vllm.qwen3_5:FlashVIDQwen3_5MoeForConditionalGeneration",
        "qwen3_5_moe"),
    # LLaVA-OneVision and LLaVA-Video weights (vLLM serves both with this class)
    "LlavaOnevisionForConditionalGeneration": (
        "flashvid.integrations.vllm.llava_onevision:"
        "FlashVIDLlavaOnevisionForConditionalGeneration",
        "llava_onevision"),
}

__all__ = ["ARCHITECTURES", "KEY", "allowed_fields", "check_engine_config",
           "nominal_pruning_rate", "output_length", "parse", "register", "to_config"]

logger = logging.getLogger("vllm.flashvid")  # shown by vLLM's log handler


def register() -> None:
    """vLLM plugin entry point (``vllm.general_plugins``); safe to call more than once."""
    from vllm import ModelRegistry
    from vllm.config import VllmConfig

    from .workarounds import patch_cpu_runner

    for arch, (target, _) in ARCHITECTURES.items():
        ModelRegistry.register_model(arch, target)
    verify = VllmConfig.try_verify_and_update_config
    if not getattr(verify, "_flashvid_patched", False):
        @functools.wraps(verify)
        def try_verify_and_update_config(self: Any) -> None:
            first = self.model_config is not None and not getattr(
                self.model_config, "config_updated", False)
            verify(self)
            if first:
                check_engine_config(self)

        try_verify_and_update_config._flashvid_patched = True
        VllmConfig.try_verify_and_update_config = try_verify_and_update_config
    patch_cpu_runner()


def check_engine_config(vllm_config: Any) -> None:
    """FlashVID's part of vLLM's engine configuration step (run once per engine configuration,
    for every model): warns about keys that look like ``"flashvid"`` under another spelling,
    refuses ``"flashvid"`` settings for an architecture the plugin does not serve, validates
    the settings against the engine (device included) and stores them where the processor and
    the model read them; logs one line saying whether FlashVID is on, for which architecture,
    with which settings."""
    from .model import SETTINGS_ATTR

    model_config = vllm_config.model_config
    arch = model_config.architecture
    additional = vllm_config.additional_config
    additional = additional if isinstance(additional, dict) else {}
    for key in lookalike_keys(additional):
        logger.warning(
            "additional_config has the key %r, which looks like FlashVID's but is not it: "
            "FlashVID reads only the key %r (lower case), so %r is ignored and FlashVID is "
            "off unless %r is set", key, KEY, key, KEY)
    if KEY not in additional:
        logger.info("FlashVID: off for %s (no %r in additional_config)", arch, KEY)
        return
    if arch not in ARCHITECTURES:
        raise ValueError(
            f"additional_config['{KEY}'] is set, but the FlashVID vLLM plugin does not serve "
            f"the architecture {arch}; it serves {', '.join(ARCHITECTURES)}. Remove "
            f"'{KEY}' from additional_config to serve this model without FlashVID")
    family = ARCHITECTURES[arch][1]
    if family == "llava_onevision":  # no vLLM pruning path: its own settings step
        from .llava_onevision import apply_settings as apply_llava_settings

        apply_llava_settings(vllm_config, SETTINGS_ATTR)
    else:
        apply_settings(vllm_config, family, SETTINGS_ATTR)
    settings = getattr(model_config.multimodal_config, SETTINGS_ATTR)
    check_device(settings)
    logger.info("FlashVID: on for %s with settings %s (exact-count mode, vision side)", arch,
                json.dumps(settings, sort_keys=True))


def check_device(settings: dict[str, Any]) -> None:
    """Settings against the engine's platform, before any worker starts: ``backend="triton"``
    needs CUDA; on a CPU engine the settings compress a tiny video once here. (Each worker
    compresses one again on its own device when it loads the model.)"""
    from vllm.platforms import current_platform

    backend = settings.get("backend", "auto")
    if backend == "triton" and not current_platform.is_cuda_alike():
        raise ValueError(
            f"additional_config['{KEY}']['backend'] = 'triton' needs a CUDA (or ROCm) engine; "
            f"this engine runs on {current_platform.device_type or 'the CPU'}: use 'auto' or "
            "'torch'")
    if current_platform.is_cpu():
        import torch

        from .model import startup_check

        startup_check(to_config(settings), "cpu", torch.float32)


def apply_settings(vllm_config: Any, family: str, attr: str) -> None:
    """Validate ``additional_config["flashvid"]`` for a Qwen family and switch vLLM's pruning
    path on for it (positions then travel with the embeddings)."""
    additional = vllm_config.additional_config
    if not isinstance(additional, dict) or KEY not in additional:
        return
    settings = parse(additional[KEY], family)
    model_config = vllm_config.model_config
    mm_config = model_config.multimodal_config
    if mm_config is None:
        raise ValueError("additional_config['flashvid'] needs the model's multimodal inputs "
                         "enabled (do not set language_model_only)")
    if mm_config.video_pruning_rate:
        raise ValueError(
            f"--video-pruning-rate {mm_config.video_pruning_rate} selects vLLM's own video "
            f"pruning ({mm_config.video_pruning_method}); FlashVID replaces it: remove one of "
            "--video-pruning-rate and additional_config['flashvid']")
    if mm_config.mm_encoder_tp_mode == "data":
        raise ValueError("FlashVID needs the vision encoder's attention on every rank "
                         "(mm_encoder_tp_mode='weights', the default), not 'data'")
    if getattr(vllm_config.compilation_config, "compile_mm_encoder", False):
        raise ValueError("FlashVID reads the last vision block's q and k with a hook, which "
                         "needs the eager vision encoder: turn compile_mm_encoder off")
    config = to_config(settings)
    mm_config.video_pruning_rate = nominal_pruning_rate(config)
    mm_config.video_pruning_method = "evs"
    setattr(mm_config, attr, settings)
