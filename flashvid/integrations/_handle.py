"""The patch handle: per-instance, reversible patching of ``generate``/``forward`` and the call
path they share (prompt rebuild, the inner-LLM stage, the serving guards).

The patched methods are :class:`PatchedMethod` objects, not closures: a ``copy.deepcopy`` of a
patched model is a patched copy that runs the copy, and ``torch.save`` pickles it.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import torch

from ..compress import compress, compress_batch
from ..config import FlashVIDConfig
from ._llm_stage import LLMStage
from ._prompt import bind_call, restore_prompt
from ._records import Compressor, Prepared

MIN_TRANSFORMERS = "5.18.0"
CACHE_TAG = "_flashvid_compressed_prompt"
CACHE_NAMES = ("cache", "past_key_values")  # transformers >= 5.24 / older name
ASSISTED = ("assistant_model", "assistant_early_exit")  # prompt lookup works (no second model)


def check_transformers_version() -> str:
    """The installed transformers version; ImportError if missing or older than the minimum."""
    from packaging.version import Version

    try:
        import transformers
    except ImportError as err:  # pragma: no cover - the test environment has transformers
        raise ImportError(
            "flashvid.apply needs Hugging Face transformers >= "
            f"{MIN_TRANSFORMERS}; install it with `pip install 'transformers>={MIN_TRANSFORMERS}'`"
        ) from err
    version = transformers.__version__
    if Version(version) < Version(MIN_TRANSFORMERS):
        raise ImportError(
            f"flashvid.apply needs transformers >= {MIN_TRANSFORMERS} (its generate() encodes "
            f"videos before prefill via mm_encoder_outputs); found {version}. Upgrade with "
            f"`pip install -U 'transformers>={MIN_TRANSFORMERS}'`")
    return version


class PatchedMethod:
    """``model.<name>`` while patched: calls ``handle._<name>(stock bound method, ...)``.

    It holds the handle, never a bound method, so copies and pickles of the model stay bound to
    themselves; ``__wrapped__`` (the stock method) keeps ``inspect.signature`` exact.
    """

    def __init__(self, handle: Adapter, name: str) -> None:
        self.handle = handle
        self.name = name

    @property
    def __wrapped__(self) -> Any:
        return self.handle._original(self.name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.handle, "_" + self.name)(*args, **kwargs)


class Adapter:
    """A FlashVID patch on one model instance (returned by :func:`flashvid.apply`).

    Use ``handle.remove()`` or a ``with`` block to restore the stock model. Attributes:

    * ``model``: the patched model; ``family``: "llava_onevision", "qwen2_5_vl", "qwen3_vl",
      "qwen3_vl_moe", "qwen3_5" or "qwen3_5_moe";
      ``variant``: for LLaVA-OneVision, "llava_onevision" or "llava_video";
    * ``config``: the :class:`FlashVIDConfig` used (assignable);
    * ``llm_stage``: True when ``generate()`` runs the inner-LLM stage (``config.pruning_layer``,
      ``config.llm_retention_ratio``); ``attention_layer``: the layer whose attention ranks the
      tokens for it;
    * ``enabled``: False makes ``generate``/``forward`` behave exactly as stock (assignable);
    * ``compressor``: the function applied to each video (default :func:`flashvid.compress`);
    * ``record``: True keeps the last call's :class:`Prepared` record (tensors included) in
      ``last``; False (default) keeps nothing.
    """

    family = ""
    marker_attr = "_flashvid_handle"

    def __init__(self, model: Any, config: FlashVIDConfig, *, enabled: bool,
                 compressor: Compressor | None, variant: str, llm_stage: bool = True,
                 record: bool = False) -> None:
        for name, value in (("enabled", enabled), ("llm_stage", llm_stage), ("record", record)):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool, got {value!r}")
        if compressor is not None and not callable(compressor):
            raise TypeError(f"compressor must be callable, got {type(compressor).__name__}")
        self.model = model
        self.base = model.model
        self.enabled = enabled
        self.record = record
        self.compressor: Compressor = compressor if compressor is not None else compress
        self.variant = variant
        self.last: Prepared | None = None
        self._llm_wanted = llm_stage
        self._patches: list[tuple[str, bool, Any]] = []
        self._removed = False
        self._warned_forward = False
        self.config = config

    # ------------------------------------------------------------------ public
    @property
    def config(self) -> FlashVIDConfig:
        return self._config

    @config.setter
    def config(self, value: FlashVIDConfig) -> None:
        if not isinstance(value, FlashVIDConfig):
            raise TypeError(f"config must be a FlashVIDConfig, got {type(value).__name__}")
        stage = None
        if self._llm_wanted and value.llm_retention_ratio < 1.0:
            stage = LLMStage(self._language_model(), value.pruning_layer,
                             value.llm_retention_ratio)
            self._check_llm_stage(value)
        self._config, self._stage = value, stage

    @property
    def llm_stage(self) -> bool:
        return self._stage is not None

    @property
    def attention_layer(self) -> int | None:
        """The decoder layer whose last-query attention ranks the video tokens for the inner-LLM
        stage: ``pruning_layer - 1``, or in models that mix linear-attention and full-attention
        layers (Qwen3.5) the nearest full-attention layer at or before it; None when the stage
        is off."""
        return None if self._stage is None else self._stage.attention_layer

    @property
    def active(self) -> bool:
        """True while the patch is installed (before ``remove``)."""
        return not self._removed

    def prepare_inputs(self, **inputs: Any) -> dict[str, Any]:
        """Encode and compress the videos of a stock (uncompressed) prompt and rebuild it.

        Takes what the processor returns (``input_ids`` [B, L], ``attention_mask`` [B, L], the
        video pixels and grids, optional ``labels``, ...) and returns the keyword arguments for
        the patched model's ``forward`` or ``generate``: ``input_ids`` [B, L'] with one
        placeholder per kept token, the matching ``attention_mask`` (and ``mm_token_type_ids``,
        ``labels``, Qwen ``position_ids`` [4, B, L']), and ``mm_encoder_outputs`` holding the
        compressed features instead of the pixels. (The inner-LLM stage runs in ``generate``.)
        """
        self._check_active()
        return self._prepare_call(dict(inputs)).inputs

    def remove(self) -> None:
        """Restore the stock model (idempotent)."""
        if self._removed:
            return
        for name, _, _ in self._patches:
            current = self.model.__dict__.get(name)
            if not (isinstance(current, PatchedMethod) and current.handle is self):
                raise RuntimeError(
                    f"{type(self.model).__name__}.{name} was replaced after flashvid.apply(); "
                    "remove that later patch first, then call handle.remove()")
        for name, had_own, original in reversed(self._patches):
            if had_own:
                self.model.__dict__[name] = original
            else:
                del self.model.__dict__[name]
        self._patches.clear()
        self.model.__dict__.pop(self.marker_attr, None)
        self._removed = True

    def __enter__(self) -> Adapter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def __repr__(self) -> str:
        state = "removed" if self._removed else ("enabled" if self.enabled else "disabled")
        llm = " llm_stage=off"
        if self._stage is not None:
            llm = (f" pruning_layer={self._config.pruning_layer} llm_retention_ratio="
                   f"{self._config.llm_retention_ratio}")
            if self._stage.attention_layer != self._config.pruning_layer - 1:
                llm += f" attention_layer={self._stage.attention_layer}"
        return (f"<flashvid adapter {self.family} variant={self.variant} {state} "
                f"retention_ratio={self._config.retention_ratio}{llm}>")

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["last"] = None  # a record of a past call is not part of the patch
        return state

    # ------------------------------------------------------------------ installation
    def install(self) -> Adapter:
        if self.model.__dict__.get(self.marker_attr) is not None:
            raise RuntimeError(
                "flashvid.apply() was already called on this model instance; call .remove() on "
                "the first handle (or leave its `with` block) before applying again")
        for name in ("generate", "forward"):
            had_own = name in self.model.__dict__
            self._patches.append((name, had_own, self.model.__dict__.get(name)))
            self.model.__dict__[name] = PatchedMethod(self, name)
        self.model.__dict__[self.marker_attr] = self
        return self

    def _original(self, name: str) -> Any:
        for patched, had_own, original in self._patches:
            if patched == name and had_own:
                return original
        return getattr(type(self.model), name).__get__(self.model)

    def _check_active(self) -> None:
        if self._removed:
            raise RuntimeError("this flashvid adapter was removed; call flashvid.apply() again")

    # ------------------------------------------------------------------ patched methods
    def _generate(self, *args: Any, **kwargs: Any) -> Any:
        original = self._original("generate")
        if not self.enabled:
            return original(*args, **kwargs)
        call = bind_call(inspect.signature(original), args, kwargs)
        _refuse_compressed_cache(call)
        if call.get("pixel_values_videos") is None:
            return original(*args, **kwargs)
        prompt = call.pop("inputs", None)
        if prompt is not None:
            if call.get("input_ids") is not None:
                raise ValueError("pass the prompt either as `inputs` or as `input_ids`, not both")
            call["input_ids"] = prompt
        with torch.no_grad():  # generate() is inference: no graph for the encoder
            prepared = self._prepare_call(call)
        inputs = dict(prepared.inputs)
        caller_len = int(call["input_ids"].shape[1])
        self._new_token_limits(inputs, caller_len)
        if self._stage is None:
            output = original(**inputs)
        else:
            for name in ASSISTED:
                if inputs.get(name) is not None:
                    raise ValueError(
                        f"`{name}` (assisted decoding with a second model) is not supported with "
                        "the inner-LLM stage (untested: the assistant sees the compressed prompt); "
                        "prompt_lookup_num_tokens works, or pass llm_retention_ratio=1.0 to "
                        "flashvid.apply to switch the stage off")
            gc = inputs.get("generation_config")
            if inputs.get("prefill_chunk_size") or getattr(gc, "prefill_chunk_size", None):
                raise ValueError("prefill_chunk_size cannot be combined with the inner-LLM stage")
            with self._stage.session(prepared.candidates,
                                     inputs["attention_mask"].bool()) as session:
                output = original(**inputs)
            prepared.llm = session.record
        for name in CACHE_NAMES:  # the caller's own cache object now holds a compressed prompt
            _tag_cache(inputs.get(name))
        for name in CACHE_NAMES:  # the first name only: 5.24 warns on the deprecated one
            if getattr(output, name, None) is not None:
                _tag_cache(getattr(output, name))
                break
        return restore_prompt(output, call["input_ids"], inputs["input_ids"].shape[1])

    def _forward(self, *args: Any, **kwargs: Any) -> Any:
        original = self._original("forward")
        if self.enabled:
            call = bind_call(inspect.signature(original), args, kwargs)
            _refuse_compressed_cache(call)
            if call.get("pixel_values_videos") is not None:
                if self._stage is not None and not self._warned_forward:
                    self._warned_forward = True
                    warnings.warn(
                        "flashvid: forward() with a video runs the vision-side compression "
                        "only; the inner-LLM stage (pruning_layer, llm_retention_ratio) runs in "
                        "generate()", stacklevel=2)
                return original(**self._forward_inputs(self._prepare_call(call).inputs))
        return original(*args, **self._forward_inputs(kwargs))

    def _forward_inputs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Hook to adapt prepared inputs right before the stock forward (LLaVA lists)."""
        return kwargs

    # ------------------------------------------------------------------ shared steps
    def _prepare_call(self, inputs: dict[str, Any]) -> Prepared:
        self._check_active()
        for name in CACHE_NAMES:
            cache = inputs.get(name)
            if cache is not None and _cached_length(cache) > 0:
                raise ValueError(
                    f"`{name}` holds {_cached_length(cache)} cached tokens: a FlashVID video "
                    "prompt must be prefilled from scratch (pass an empty cache or none)")
        prepared = self._prepare(inputs)
        self.last = prepared if self.record else None
        return prepared

    def _new_token_limits(self, inputs: dict[str, Any], caller_len: int) -> None:
        """``max_length``/``min_length`` count the caller's prompt, as in stock generate():
        turn them into new-token counts, which do not depend on the compressed length."""
        from transformers import GenerationConfig

        given = inputs.get("generation_config")
        default = GenerationConfig()
        for total, new in (("max_length", "max_new_tokens"), ("min_length", "min_new_tokens")):
            configs = [c for c in (given, self.model.generation_config) if c is not None]
            if inputs.get(new) is not None or any(getattr(c, new, None) is not None
                                                  for c in configs):
                continue
            value = inputs.pop(total, None)
            if value is None:
                for c in configs:
                    v = getattr(c, total, None)
                    if v is not None and v != getattr(default, total, None):
                        value = v
                        break
            if value is not None:
                if new == "max_new_tokens" and int(value) <= caller_len:
                    raise ValueError(
                        f"max_length={value} leaves no room for new tokens after the "
                        f"{caller_len}-token prompt; use max_new_tokens")
                inputs[new] = max(int(value) - caller_len, 0)

    def _prepare(self, inputs: dict[str, Any]) -> Prepared:  # pragma: no cover - abstract
        raise NotImplementedError

    def _language_model(self) -> Any:
        return self.base.language_model

    def _check_llm_stage(self, config: FlashVIDConfig) -> None:
        """Family-specific refusals of stage settings (Qwen3-VL deepstack)."""

    def _run_compressor(self, videos: list[tuple[torch.Tensor, torch.Tensor]]) -> list[Any]:
        """Compress every video ([F, N, D], [F, N]) of a call and check what came back. The
        default compressor takes them all in one ``compress_batch`` (one launch per kernel);
        a custom one is called per video."""
        if self.compressor is compress:
            results = list(compress_batch([x for x, _ in videos],
                                          [a.to(x.dtype) for x, a in videos], self._config))
        else:
            results = [self.compressor(x, a.to(x.dtype), self._config) for x, a in videos]
        return [_check_result(x, r) for (x, _), r in zip(videos, results)]

    def _pad_id(self) -> int:
        for cfg in (getattr(self.model, "generation_config", None), self.model.config,
                    getattr(self.model.config, "text_config", None)):
            pad = getattr(cfg, "pad_token_id", None) if cfg is not None else None
            if isinstance(pad, int):
                return pad
        return 0


def _check_result(tokens: torch.Tensor, result: Any) -> Any:
    out_tokens = getattr(result, "tokens", None)
    indices = getattr(result, "indices", None)
    frames, per_frame, dim = tokens.shape
    if not isinstance(out_tokens, torch.Tensor) or not isinstance(indices, torch.Tensor):
        raise TypeError(
            "the compressor must return an object with tensors .tokens [V, D] and .indices "
            f"[V]; got {type(result).__name__}")
    if out_tokens.dim() != 2 or out_tokens.shape[1] != dim or indices.dim() != 1 \
            or indices.shape[0] != out_tokens.shape[0]:
        raise ValueError(
            f"the compressor returned tokens {tuple(out_tokens.shape)} and indices "
            f"{tuple(indices.shape)}; expected [V, {dim}] and [V]")
    if indices.numel():
        if int(indices.min()) < 0 or int(indices.max()) >= frames * per_frame:
            raise ValueError(
                f"the compressor returned indices outside [0, {frames * per_frame}) "
                "(global positions t*N + n)")
        if bool((indices[1:] < indices[:-1]).any()):
            raise ValueError("the compressor must return indices in ascending order")
    return result


def _cached_length(cache: Any) -> int:
    length = getattr(cache, "get_seq_length", None)
    return int(length()) if callable(length) else 1


def _tag_cache(cache: Any) -> None:
    if cache is not None and hasattr(cache, "get_seq_length"):
        try:
            setattr(cache, CACHE_TAG, True)
        except AttributeError:  # pragma: no cover - a cache type with __slots__
            pass


def _refuse_compressed_cache(call: dict[str, Any]) -> None:
    for name in CACHE_NAMES:
        if getattr(call.get(name), CACHE_TAG, False):
            raise ValueError(
                f"this `{name}` was filled by a FlashVID-compressed video prompt: it holds the "
                "compressed prompt (and fewer tokens in the layers after the inner-LLM stage), "
                "while the sequences generate() returned start with your uncompressed prompt, "
                "so continuing from it would silently give wrong answers. For a follow-up turn, "
                "call generate() again with the whole conversation and the video, without a cache")


__all__ = ["MIN_TRANSFORMERS", "Adapter", "PatchedMethod", "check_transformers_version"]
