"""FlashVID settings given through lmms-eval's ``--model_args``: names, parsing, validation.

Pure Python (no lmms-eval, no model): the plugin models split their keyword arguments into
lmms-eval's own and these, and everything here is checked before any weight is loaded.

Names (``--model_args pretrained=...,retention=0.15,pruning_layer=none``):

* ``flashvid``: ``on`` (default) or ``off``; ``off`` is the uncompressed baseline in the same
  wrapper (lmms-eval's model exactly as it is, with the same measurements).
* ``retention``: the retention ratio r in (0, 1] (``FlashVIDConfig.retention_ratio``).
* ``preset``: a config preset (``llava_onevision``, ``llava_video``, ``qwen2_5_vl``,
  ``qwen3_vl``, ...); default: the loaded model family's.
* ``variant``: LLaVA-OneVision checkpoints only: ``llava_onevision`` or ``llava_video`` (token
  layout; default from the checkpoint name, as :func:`flashvid.apply` does).
* ``pruning_layer``: decoder layer K of the inner-LLM stage, or ``none`` to switch it off.
* ``llm_retention``: share of the video tokens kept from layer K on
  (``FlashVIDConfig.llm_retention_ratio``).
* ``exact_count``: ``true`` for the exact-count mode.
* ``backend``: ``auto``, ``torch``, ``triton`` or ``reference``.
* every other :class:`FlashVIDConfig` field by its own name (``alpha=0.7``,
  ``selection=adts_v1``, ``dedupe=true``, ...); ``retention_ratio`` and ``llm_retention_ratio``
  are accepted as the long names of ``retention`` and ``llm_retention``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from ..config import FlashVIDConfig

SWITCH = "flashvid"
# short name -> FlashVIDConfig field
ALIASES = {"retention": "retention_ratio", "llm_retention": "llm_retention_ratio"}
EXTRA = ("preset", "variant")
VARIANTS = ("llava_onevision", "llava_video")
CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(FlashVIDConfig))
NAMES = (SWITCH, *ALIASES, *EXTRA, *CONFIG_FIELDS)
_TRUE = ("true", "on", "yes", "1")
_FALSE = ("false", "off", "no", "0")
_NONE = ("none", "off", "null", "false")


@dataclass(frozen=True)
class FlashVIDSettings:
    """What the FlashVID model_args asked for.

    Attributes:
        enabled: False for ``flashvid=off`` (the uncompressed baseline).
        preset: the preset name given, or None (the model family's).
        variant: the LLaVA-OneVision variant given, or None (from the checkpoint name).
        overrides: ``FlashVIDConfig`` fields given (long names), ``pruning_layer`` excluded.
        llm_stage: False when ``pruning_layer=none`` switched the inner-LLM stage off.
        given: the model_args as written, name -> value, for messages and result rows.
    """

    enabled: bool = True
    preset: str | None = None
    variant: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    llm_stage: bool = True
    given: dict[str, Any] = field(default_factory=dict)

    def config(self, family_preset: str) -> FlashVIDConfig:
        """The :class:`FlashVIDConfig` these settings give for a model whose family preset is
        ``family_preset`` (a ``FlashVIDConfig`` classmethod name). ValueError naming the
        model_arg when a value is out of range."""
        name = self.preset or family_preset
        try:
            base = FlashVIDConfig.preset(name) if self.preset else getattr(FlashVIDConfig, name)()
            return base.replace(**self.overrides)
        except (TypeError, ValueError) as err:
            raise ValueError(f"model_args {self.describe()}: {err}") from None

    def apply_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :func:`flashvid.apply` (besides the model and ``record``)."""
        kwargs: dict[str, Any] = dict(self.overrides)
        if self.preset:
            kwargs = {"config": FlashVIDConfig.preset(self.preset), **kwargs}
        if self.variant:
            kwargs["variant"] = self.variant
        if not self.llm_stage:
            kwargs["pruning_layer"] = None
        return kwargs

    def describe(self) -> str:
        """The FlashVID model_args as ``name=value,...`` (as given)."""
        return ",".join(f"{k}={v}" for k, v in self.given.items()) or "(FlashVID defaults)"


def split_model_args(kwargs: dict[str, Any], accepted: set[str] | frozenset[str], *,
                     model: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a plugin model's keyword arguments into FlashVID's and the base model's.

    Args:
        kwargs: everything the model was given (parsed ``--model_args`` plus lmms-eval's
            ``batch_size``/``device``).
        accepted: the parameter names the lmms-eval base class takes.
        model: the plugin model's name, for messages.

    Returns:
        (FlashVID arguments, base-class arguments).

    Raises:
        ValueError: a name that neither takes, naming it and listing both sets.
    """
    ours = {k: v for k, v in kwargs.items() if k in NAMES}
    rest = {k: v for k, v in kwargs.items() if k not in NAMES}
    unknown = sorted(k for k in rest if k not in accepted)
    if unknown:
        listed = ", ".join(repr(k) for k in unknown)
        raise ValueError(
            f"{model}: unknown model_args {listed}; expected the lmms-eval model's arguments "
            f"({', '.join(sorted(accepted))}) or FlashVID's ({', '.join(NAMES)})")
    return ours, rest


def parse_settings(args: dict[str, Any]) -> FlashVIDSettings:
    """Parse and check FlashVID model_args (values as lmms-eval parses them: bool, int, float
    or str). ValueError naming the argument for a bad value or a name given twice."""
    for short, long in ALIASES.items():
        if short in args and long in args:
            raise ValueError(f"model_args {short} and {long} name the same setting; give one")
    enabled = True
    preset = variant = None
    llm_stage = True
    overrides: dict[str, Any] = {}
    types = {f.name: f.type if isinstance(f.type, str) else f.type.__name__
             for f in dataclasses.fields(FlashVIDConfig)}
    for name, value in args.items():
        if name == SWITCH:
            enabled = _bool(name, value)
        elif name == "preset":
            preset = _preset(value)
        elif name == "variant":
            if str(value) not in VARIANTS:
                raise ValueError(f"model_args variant={value!r}: expected one of {list(VARIANTS)}")
            variant = str(value)
        elif name == "pruning_layer" and _is_none(value):
            llm_stage = False
        else:
            key = ALIASES.get(name, name)
            overrides[key] = _coerce(name, value, types[key])
    settings = FlashVIDSettings(enabled=enabled, preset=preset, variant=variant,
                                overrides=overrides, llm_stage=llm_stage, given=dict(args))
    settings.config(preset or "llava_onevision")  # value checks now, before any weight loads
    return settings


def _preset(value: Any) -> str:
    from ..config import preset_name

    try:
        return preset_name(str(value))
    except ValueError as err:
        raise ValueError(f"model_args preset={value!r}: {err}") from None


def _is_none(value: Any) -> bool:
    return value is None or value is False or (isinstance(value, str)
                                               and value.strip().lower() in _NONE)


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"model_args {name}={value!r}: expected on/off (true/false)")


def _coerce(name: str, value: Any, kind: str) -> Any:
    """``value`` as the FlashVIDConfig field type ``kind`` ("float", "int", "bool", "str")."""
    if kind == "bool":
        return _bool(name, value)
    if kind == "str":
        return str(value).strip()
    if isinstance(value, bool):
        raise ValueError(f"model_args {name}={value!r}: expected a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"model_args {name}={value!r}: expected a number") from None
    if kind == "int":
        if not math.isfinite(number) or number != int(number):
            raise ValueError(f"model_args {name}={value!r}: expected an integer")
        return int(number)
    return number


__all__ = ["ALIASES", "NAMES", "FlashVIDSettings", "parse_settings", "split_model_args"]
