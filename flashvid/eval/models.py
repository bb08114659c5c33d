"""FlashVID variants of lmms-eval's transformers models (built on demand, one per base class).

``flashvid.eval.models.FlashVID_qwen2_5_vl_chat`` is ``class(FlashVIDModel, <lmms-eval's
chat Qwen2_5_VL>)``: lmms-eval's class loads the checkpoint, the processor and runs the task
exactly as it does for ``--model qwen2_5_vl``; :class:`FlashVIDModel` takes the FlashVID
model_args out before that (:mod:`flashvid.eval.args`), calls :func:`flashvid.apply` on the
loaded model (unless ``flashvid=off``) and measures every ``generate()``
(:class:`~flashvid.eval.meter.GenerateMeter`). Classes are created when first looked up, so only
the lmms-eval module of the model in use is imported. The table of models is
:data:`flashvid.eval.plugin.FAMILIES`.
"""

from __future__ import annotations

import importlib
import inspect
import os
from typing import Any

from .args import FlashVIDSettings, parse_settings, split_model_args
from .meter import GenerateMeter
from .plugin import BY_CLASS, Family, family_preset

_PARAM_KINDS = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def accepted_parameters(cls: type) -> frozenset[str]:
    """Keyword arguments an lmms-eval model class takes: the named ``__init__`` parameters
    along its MRO, as far as each ``__init__`` forwards ``**kwargs`` to the next."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        params = list(inspect.signature(init).parameters.values())[1:]  # drop self
        names |= {p.name for p in params if p.kind in _PARAM_KINDS}
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            break
    return frozenset(names)


class FlashVIDModel:
    """The FlashVID part of a plugin model (mixed in before lmms-eval's class).

    Attributes:
        flashvid_family: the :class:`~flashvid.eval.plugin.Family` (set per class).
        flashvid_settings: the parsed FlashVID model_args.
        flashvid_handle: the :class:`~flashvid.integrations.Adapter`, None with ``flashvid=off``
            (until :meth:`flashvid_configure` switches FlashVID on).
        flashvid_meter: the :class:`~flashvid.eval.meter.GenerateMeter` on the model.
        flashvid_keep_loaded: True makes ``clean()`` (called by lmms-eval at the end of every
            evaluation) keep the model, so that one loaded model serves several evaluations.
    """

    flashvid_family: Family
    # True keeps the model loaded when lmms-eval's evaluate() ends (it calls lm.clean(), which
    # deletes the model to free memory for a local judge); the sweep reuses one model
    flashvid_keep_loaded: bool = False

    def __init__(self, **kwargs: Any) -> None:
        family = self.flashvid_family
        base = self._flashvid_base()
        ours, rest = split_model_args(kwargs, accepted_parameters(base), model=family.name)
        settings = parse_settings(ours)
        settings.config(family_preset(family))  # bad values fail before the weights load
        super().__init__(**_workarounds(family, rest))
        self.flashvid_settings: FlashVIDSettings = settings
        self.flashvid_handle: Any = None
        self.flashvid_meter = GenerateMeter(self.model)
        if not hasattr(self, family.frames_arg):
            raise TypeError(f"{type(self).__name__}: lmms-eval's {base.__name__} has no "
                            f"{family.frames_arg!r} attribute (the frames per video); this "
                            "lmms-eval version is not supported")
        if settings.enabled:
            self._flashvid_apply()
        self.flashvid_meter.install()

    # ------------------------------------------------------------------ FlashVID
    @classmethod
    def _flashvid_base(cls) -> type:
        return next(c for c in cls.__mro__ if not issubclass(c, FlashVIDModel))

    def _flashvid_apply(self) -> None:
        import flashvid

        settings = self.flashvid_settings
        model = self.model
        try:
            handle = flashvid.apply(model, record=True, **settings.apply_kwargs())
        except (TypeError, ValueError) as err:
            where = getattr(model.config, "_name_or_path", "") or type(model).__name__
            hint = (" (--model_args pruning_layer=K with K a layer of this model, or "
                    "pruning_layer=none to switch the inner-LLM stage off)"
                    if "pruning_layer" in str(err) else "")
            raise type(err)(f"{self.flashvid_family.name} on {where}, model_args "
                            f"{settings.describe()}: {err}{hint}") from None
        self.flashvid_handle = handle
        self.flashvid_meter.handle = handle

    def flashvid_configure(self, *, enabled: bool, retention: float | None = None) -> None:
        """Switch FlashVID on or off for the next requests (the sweep reuses one loaded model);
        ``retention`` sets the retention ratio when on."""
        if not enabled:
            if self.flashvid_handle is not None:
                self.flashvid_handle.enabled = False
            return
        if self.flashvid_handle is None:
            self.flashvid_meter.uninstall()  # the meter stays outermost
            self._flashvid_apply()
            self.flashvid_meter.install()
        handle = self.flashvid_handle
        handle.enabled = True
        if retention is not None:
            handle.config = handle.config.replace(retention_ratio=float(retention))

    def flashvid_state(self) -> dict[str, Any]:
        """The settings in force, as result-row fields."""
        handle = self.flashvid_handle
        if handle is None or not handle.enabled:
            return {"mode": "vanilla", "retention": 1.0, "preset": None, "variant": None,
                    "pruning_layer": None, "llm_retention": None, "exact_count": None,
                    "backend": None}
        cfg = handle.config
        variant = getattr(handle, "variant", None)
        return {"mode": "flashvid", "retention": cfg.retention_ratio,
                "preset": self.flashvid_settings.preset or variant or handle.family,
                "variant": variant,
                "pruning_layer": cfg.pruning_layer if handle.llm_stage else None,
                "llm_retention": cfg.llm_retention_ratio if handle.llm_stage else None,
                "exact_count": cfg.exact_count, "backend": cfg.backend}

    @property
    def flashvid_frames(self) -> int:
        """Frames per video the base class samples (its ``frames_arg``)."""
        return int(getattr(self, self.flashvid_family.frames_arg))

    @flashvid_frames.setter
    def flashvid_frames(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"frames must be a positive int, got {value!r}")
        setattr(self, self.flashvid_family.frames_arg, value)

    # ------------------------------------------------------------------ lmms-eval
    def clean(self) -> None:
        if not self.flashvid_keep_loaded:
            super().clean()

    def generate_until(self, requests: list) -> list:
        meter = self.flashvid_meter
        meter.errors = []
        before = len(meter.records)
        out = super().generate_until(requests)
        if meter.errors:
            err = meter.errors[0]
            raise RuntimeError(
                f"{self.flashvid_family.name}: {len(meter.errors)} generate() call(s) failed "
                f"(lmms-eval's model caught the error and would have scored an empty answer); "
                f"first: {type(err).__name__}: {err}") from err
        _log_summary(self.flashvid_family.name, meter.records[before:])
        return out


def _workarounds(family: Family, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Arguments that lmms-eval's base class needs to run as asked, guarded and minimal.

    * lmms-eval 0.7's llava_hf defaults to ``device_map=""``, which transformers >= 5 refuses
      ("When passing device_map as a string, the value needs to be a device name"): in a single
      process (its multi-process path sets its own) the model's device is used instead.
    * Its Qwen models default to ``device_map="auto"`` and then move every input to CUDA: with
      ``device=cpu`` and no ``device_map``, the map is ``cpu`` too.
    """
    if kwargs.get("device_map") or int(os.environ.get("WORLD_SIZE", "1")) != 1:
        return kwargs
    device = str(kwargs.get("device", "cuda"))
    if family.base == "llava_hf" or device.startswith("cpu"):
        return {**kwargs, "device_map": device}
    return kwargs


def _log_summary(name: str, records: list) -> None:
    if not records:
        return
    from loguru import logger

    s = GenerateMeter.summarize(records)
    logger.info(f"{name}: {s['samples']} samples, visual tokens per sample "
                f"{s['visual_tokens']:.1f} (stock {s['visual_tokens_full']:.1f}, measured "
                f"retention {s['measured_retention'] or 0:.4f}), prefill {s['prefill_s']:.3f} s")


def _build(name: str) -> type:
    family, kind = BY_CLASS[name]
    path = family.base_path(kind)
    module, cls_name = path.rsplit(".", 1)
    base = getattr(importlib.import_module(module), cls_name)
    doc = (f"FlashVID on lmms-eval's {kind} ``{family.base}`` model ({path}); FlashVID "
           "settings in --model_args (see flashvid.eval.args).")
    return type(name, (FlashVIDModel, base), {"__module__": __name__, "__qualname__": name,
                                              "__doc__": doc, "flashvid_family": family})


def __getattr__(name: str) -> type:
    if name in BY_CLASS:
        cls = _build(name)
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["FlashVIDModel", "accepted_parameters"]
