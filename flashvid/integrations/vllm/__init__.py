"""FlashVID in vLLM: an out-of-tree plugin for Qwen2.5-VL, Qwen3-VL and LLaVA-OneVision
(LLaVA-Video weights included).

Installed with ``pip install "flashvid[vllm]"``; vLLM loads it in every process through the
``vllm.general_plugins`` entry point ``flashvid = flashvid.integrations.vllm:register``. It is
off until asked for:

    vllm serve Qwen/Qwen2.5-VL-7B-Instruct --additional-config '{"flashvid": {}}'
    LLM(model=..., additional_config={"flashvid": {"retention_ratio": 0.15}})

The object under ``"flashvid"`` takes ``preset`` (default: the model family's published
preset) and the vision-side fields of :class:`flashvid.FlashVIDConfig` (``retention_ratio``,
``expansion``, ``alpha``, ``selection``, ...); see :mod:`.settings`.

What :func:`register` does:

* registers FlashVID subclasses of vLLM's ``Qwen2_5_VLForConditionalGeneration``,
  ``Qwen3VLForConditionalGeneration`` and ``LlavaOnevisionForConditionalGeneration`` under
  those architecture names (lazily, by name); with FlashVID off they are the stock models;
* adds a per-architecture config hook (vLLM's ``MODELS_CONFIG_MAP``) that, when the engine
  configuration is made, validates the ``flashvid`` settings, turns on vLLM's video-pruning
  path (``video_pruning_rate``) so that positions travel with the embeddings (Qwen; LLaVA's
  1-D positions need no such path, :mod:`.llava_onevision`), and stores the settings where the
  processor and the model read them;
* on vLLM's CPU platform, applies the CPU-runner workaround of :mod:`.workarounds`.

Importing this package imports neither vLLM nor transformers; :func:`register` imports vLLM.
"""

from __future__ import annotations

from typing import Any

from .settings import KEY, allowed_fields, nominal_pruning_rate, output_length, parse, to_config

ARCHITECTURES = {
    "Qwen2_5_VLForConditionalGeneration": (
        "flashvid.integrations.vllm.qwen2_5_vl:FlashVIDQwen2_5_VLForConditionalGeneration",
        "qwen2_5_vl"),
    "Qwen3VLForConditionalGeneration": (
        "flashvid.integrations.vllm.qwen3_vl:FlashVIDQwen3VLForConditionalGeneration",
        "qwen3_vl"),
    # LLaVA-OneVision and LLaVA-Video weights (vLLM serves both with this class)
    "LlavaOnevisionForConditionalGeneration": (
        "flashvid.integrations.vllm.llava_onevision:"
        "FlashVIDLlavaOnevisionForConditionalGeneration",
        "llava_onevision"),
}

__all__ = ["ARCHITECTURES", "KEY", "allowed_fields", "nominal_pruning_rate", "output_length",
           "parse", "register", "to_config"]


def register() -> None:
    """vLLM plugin entry point (``vllm.general_plugins``); safe to call more than once."""
    from vllm import ModelRegistry
    from vllm.model_executor.models.config import MODELS_CONFIG_MAP

    from .workarounds import patch_cpu_runner

    for arch, (target, family) in ARCHITECTURES.items():
        ModelRegistry.register_model(arch, target)
        previous = MODELS_CONFIG_MAP.get(arch)
        if not getattr(previous, "flashvid_hook", False):
            MODELS_CONFIG_MAP[arch] = _config_hook(family, previous)
    patch_cpu_runner()


def _config_hook(family: str, previous: Any) -> type:
    """A ``VerifyAndUpdateConfig`` class for one architecture (chains to ``previous``)."""
    from vllm.model_executor.models.config import VerifyAndUpdateConfig

    from .model import SETTINGS_ATTR

    class FlashVIDConfigHook(VerifyAndUpdateConfig):
        flashvid_hook = True

        @staticmethod
        def verify_and_update_model_config(model_config: Any) -> None:
            if previous is not None:
                previous.verify_and_update_model_config(model_config)

        @staticmethod
        def verify_and_update_config(vllm_config: Any) -> None:
            if previous is not None:
                previous.verify_and_update_config(vllm_config)
            if family == "llava_onevision":  # no vLLM pruning path: its own settings step
                from .llava_onevision import apply_settings as apply_llava_settings

                apply_llava_settings(vllm_config, SETTINGS_ATTR)
            else:
                apply_settings(vllm_config, family, SETTINGS_ATTR)

    FlashVIDConfigHook.__name__ = FlashVIDConfigHook.__qualname__ = f"FlashVIDConfigHook_{family}"
    return FlashVIDConfigHook


def apply_settings(vllm_config: Any, family: str, attr: str) -> None:
    """Validate ``additional_config["flashvid"]`` and switch vLLM's pruning path on for it."""
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
