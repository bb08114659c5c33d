"""The FlashVID switch of the vLLM plugin: ``additional_config={"flashvid": {...}}``.

No vLLM import here: this module only turns the user's JSON object into a
:class:`~flashvid.FlashVIDConfig` in exact-count mode and says how many rows a video gets.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ...config import FlashVIDConfig

KEY = "flashvid"  # the key inside vLLM's additional_config
# Fields that configure the inner-LLM stage, which cannot run inside vLLM's paged attention,
# and the exact-count switch, which the plugin always turns on.
UNSUPPORTED = {
    "pruning_layer": "the inner-LLM stage does not run inside vLLM (vision side only)",
    "llm_retention_ratio": "the inner-LLM stage does not run inside vLLM (vision side only)",
    "exact_count": "the plugin always runs exact-count mode (the prompt's placeholder count is "
                   "fixed before the vision encoder runs)",
}
PRESETS = ("qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe", "qwen3_5", "qwen3_5_moe", "llava_onevision",
           "llava_video")


def allowed_fields() -> list[str]:
    """The keys accepted inside ``{"flashvid": {...}}``: "preset" and the FlashVIDConfig fields
    that act on the vision side."""
    return ["preset"] + [f.name for f in dataclasses.fields(FlashVIDConfig)
                         if f.name not in UNSUPPORTED]


def parse(raw: Any, default_preset: str) -> dict[str, Any]:
    """Validate the user's ``flashvid`` object; returns it normalised (plain JSON values).

    Args:
        raw: the value of ``additional_config["flashvid"]``: a mapping such as
            ``{"retention_ratio": 0.15, "preset": "qwen2_5_vl", "alpha": 0.7}`` (``{}`` means the
            model family's published preset).
        default_preset: the preset used when ``raw`` names none (the served model's family).

    Raises:
        ValueError / TypeError naming the bad key or value and what is accepted.
    """
    if not isinstance(raw, Mapping):
        raise TypeError(
            f"additional_config['{KEY}'] must be a JSON object such as "
            f'{{"retention_ratio": 0.1}}, got {type(raw).__name__} {raw!r}')
    settings = dict(raw)
    for name, why in UNSUPPORTED.items():
        if name in settings:
            raise ValueError(f"additional_config['{KEY}']['{name}'] is not accepted: {why}")
    unknown = sorted(set(settings) - set(allowed_fields()))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in additional_config['{KEY}']; expected "
                         f"some of {allowed_fields()}")
    preset = settings.pop("preset", default_preset)
    if preset not in PRESETS:
        raise ValueError(f"additional_config['{KEY}']['preset'] must be one of {PRESETS}, "
                         f"got {preset!r}")
    to_config({"preset": preset, **settings})  # validates every value (FlashVIDConfig checks)
    return {"preset": preset, **settings}


def to_config(settings: Mapping[str, Any]) -> FlashVIDConfig:
    """The exact-count :class:`FlashVIDConfig` of normalised settings (see :func:`parse`)."""
    fields = dict(settings)
    preset = fields.pop("preset")
    try:
        return FlashVIDConfig.preset(preset, exact_count=True, **fields)
    except (TypeError, ValueError) as err:
        raise type(err)(f"additional_config['{KEY}']: {err}") from None


def lookalike_keys(additional: Mapping[str, Any]) -> list[str]:
    """Keys of ``additional_config`` that look like ``"flashvid"`` under another spelling
    ("FlashVID", "flash_vid", "flashvidd", "flashvid_settings", ...)."""
    import difflib

    found = []
    for key in additional:
        if not isinstance(key, str) or key == KEY:
            continue
        plain = "".join(ch for ch in key.lower() if ch.isalnum())
        if plain.startswith(KEY) or difflib.SequenceMatcher(None, plain, KEY).ratio() >= 0.8:
            found.append(key)
    return found


def output_length(config: FlashVIDConfig, frames: int, tokens_per_frame: int) -> int:
    """Rows FlashVID returns for a video of ``frames`` temporal patches with
    ``tokens_per_frame`` merged tokens each: what the processor announces."""
    return int(config.output_length(int(frames), int(tokens_per_frame)))


def nominal_pruning_rate(config: FlashVIDConfig) -> float:
    """The share of video tokens FlashVID removes, about ``1 - expansion * retention_ratio``,
    kept inside vLLM's accepted range (0, 1). vLLM turns its pruning path on (M-RoPE positions
    carried with the embeddings, per-video encoding) when this rate is positive; the counts come
    from :func:`output_length`, never from this number."""
    kept = min(1.0, config.retention_ratio * config.expansion)
    return min(max(1.0 - kept, 1e-3), 0.999)
