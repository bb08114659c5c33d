"""Machinery shared by the transformers adapters: the handle, per-instance patching, and the
rebuild of a prompt whose video placeholder runs change length.

Vocabulary used throughout:
* a *column* is a position of the caller's (uncompressed, possibly padded) prompt;
* a *slot* is a video placeholder column; each video owns ``count`` slots in masked_scatter order
  (batch row by batch row, left to right), exactly as the model fills them;
* the rebuilt row of a sample is a list of *entries*: an original column (text, or a kept video
  slot) or -1 (a new video placeholder without an original column, e.g. LLaVA's newline).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from ..compress import compress, compress_batch
from ..config import FlashVIDConfig

MIN_TRANSFORMERS = "5.23.0"
IGNORE_INDEX = -100


class Selection(NamedTuple):
    """The minimal result a compressor must return for one video.

    Attributes:
        tokens: [V, D] the kept / merged tokens, ordered by ``indices``.
        indices: [V] int64 global position t*N + n of each row's representative, ascending
            (repeats allowed).
    """

    tokens: torch.Tensor
    indices: torch.Tensor


Compressor = Callable[[torch.Tensor, torch.Tensor, FlashVIDConfig], Any]


def keep_all(tokens: torch.Tensor, cls_attn: torch.Tensor, config: FlashVIDConfig) -> Selection:
    """A compressor that keeps every token: ``tokens`` [F, N, D] -> Selection([F*N, D], [F*N]).

    Pass ``compressor=flashvid.integrations.keep_all`` to :func:`flashvid.apply` to run the
    adapter's whole path (own encoding, prompt rebuild, positions) without dropping anything: the
    uncompressed baseline (e.g. LLaVA-Video's per-frame layout) and a check of the adapter.
    """
    frames, per_frame, dim = tokens.shape
    return Selection(tokens.reshape(frames * per_frame, dim),
                     torch.arange(frames * per_frame, device=tokens.device))


@dataclass
class VideoRecord:
    """What the adapter did to one video in the last prepared call.

    Attributes:
        sample: batch row that holds the video.
        frames: F, the FlashVID frames (LLaVA: video frames; Qwen: temporal patches).
        tokens_per_frame: N.
        importance: [F, N] float32 importance scores given to the compressor (SPEC §3).
        result: what the compressor returned (a CompressedVideo by default); ``.indices`` [V].
        slots_before: video placeholder tokens of this video in the caller's prompt.
        slots_after: video placeholder tokens after the rebuild (LLaVA: kept tokens plus
            newline tokens; Qwen: kept tokens).
    """

    sample: int
    frames: int
    tokens_per_frame: int
    importance: torch.Tensor
    result: Any
    slots_before: int
    slots_after: int


@dataclass
class Prepared:
    """The last call the adapter rebuilt.

    Attributes:
        inputs: the keyword arguments given to the stock ``forward``/``generate``.
        videos: one :class:`VideoRecord` per video, in placeholder order.
        entries: per sample, [L'_b] int64: the original column of every column of the rebuilt
            (unpadded) row, -1 for a new placeholder without an original column.
        lengths_before: per sample, non-padding tokens of the caller's prompt.
        lengths_after: per sample, tokens of the rebuilt prompt.
    """

    inputs: dict[str, Any]
    videos: list[VideoRecord] = field(default_factory=list)
    entries: list[torch.Tensor] = field(default_factory=list)
    lengths_before: list[int] = field(default_factory=list)
    lengths_after: list[int] = field(default_factory=list)


# --------------------------------------------------------------------------- version / classes
def check_transformers_version() -> str:
    """The installed transformers version; ImportError if missing or older than the minimum."""
    try:
        import transformers
    except ImportError as err:  # pragma: no cover - the test environment has transformers
        raise ImportError(
            "flashvid.apply needs Hugging Face transformers >= "
            f"{MIN_TRANSFORMERS}; install it with `pip install 'transformers>={MIN_TRANSFORMERS}'`"
        ) from err
    version = transformers.__version__
    if _version_tuple(version) < _version_tuple(MIN_TRANSFORMERS):
        raise ImportError(
            f"flashvid.apply needs transformers >= {MIN_TRANSFORMERS} (its generate() encodes "
            f"videos before prefill via mm_encoder_outputs); found {version}. Upgrade with "
            f"`pip install -U 'transformers>={MIN_TRANSFORMERS}'`")
    return version


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit()) if not piece.isdigit() else piece
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


# --------------------------------------------------------------------------- the handle
class Adapter:
    """A FlashVID patch on one model instance (returned by :func:`flashvid.apply`).

    Use ``handle.remove()`` or a ``with`` block to restore the stock model. Attributes:

    * ``model``: the patched model; ``family``: "llava_onevision", "qwen2_5_vl" or "qwen3_vl";
      ``variant``: for LLaVA-OneVision, "llava_onevision" or "llava_video";
    * ``config``: the :class:`FlashVIDConfig` used (assignable);
    * ``enabled``: False makes ``generate``/``forward`` behave exactly as stock (assignable);
    * ``compressor``: the function applied to each video (default :func:`flashvid.compress`);
    * ``last``: a :class:`Prepared` record of the last rebuilt call (None before the first).
    """

    family = ""
    marker_attr = "_flashvid_handle"

    def __init__(self, model: Any, config: FlashVIDConfig, *, enabled: bool,
                 compressor: Compressor | None, variant: str) -> None:
        if not isinstance(enabled, bool):
            raise TypeError(f"enabled must be a bool, got {enabled!r}")
        if compressor is not None and not callable(compressor):
            raise TypeError(f"compressor must be callable, got {type(compressor).__name__}")
        self.model = model
        self.base = model.model
        self._config = config
        self.enabled = enabled
        self.compressor: Compressor = compressor if compressor is not None else compress
        self.variant = variant
        self.last: Prepared | None = None
        self._patches: list[tuple[Any, str, bool, Any, Any]] = []
        self._removed = False

    # ------------------------------------------------------------------ public
    @property
    def config(self) -> FlashVIDConfig:
        return self._config

    @config.setter
    def config(self, value: FlashVIDConfig) -> None:
        if not isinstance(value, FlashVIDConfig):
            raise TypeError(f"config must be a FlashVIDConfig, got {type(value).__name__}")
        self._config = value

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
        compressed features instead of the pixels. Records the call in ``self.last``.
        """
        self._check_active()
        return self._prepare(dict(inputs)).inputs

    def remove(self) -> None:
        """Restore the stock model (idempotent)."""
        if self._removed:
            return
        for obj, name, _, _, wrapper in self._patches:
            if obj.__dict__.get(name) is not wrapper:
                raise RuntimeError(
                    f"{type(obj).__name__}.{name} was replaced after flashvid.apply(); remove "
                    "that later patch first, then call handle.remove()")
        for obj, name, had_own, original, _ in reversed(self._patches):
            if had_own:
                obj.__dict__[name] = original
            else:
                del obj.__dict__[name]
        self._patches.clear()
        self.model.__dict__.pop(self.marker_attr, None)
        self._removed = True

    def __enter__(self) -> Adapter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def __repr__(self) -> str:
        state = "removed" if self._removed else ("enabled" if self.enabled else "disabled")
        return (f"<flashvid adapter {self.family} variant={self.variant} {state} "
                f"retention_ratio={self._config.retention_ratio}>")

    # ------------------------------------------------------------------ installation
    def install(self) -> Adapter:
        existing = self.model.__dict__.get(self.marker_attr)
        if existing is not None:
            raise RuntimeError(
                "flashvid.apply() was already called on this model instance; call .remove() on "
                "the first handle (or leave its `with` block) before applying again")
        self._wrap(self.model, "generate", self._make_generate)
        self._wrap(self.model, "forward", self._make_forward)
        self.model.__dict__[self.marker_attr] = self
        return self

    def _wrap(self, obj: Any, name: str, factory: Callable[[Callable], Callable]) -> None:
        had_own = name in obj.__dict__
        original = obj.__dict__.get(name)
        bound = getattr(obj, name)
        wrapper = functools.wraps(bound)(factory(bound))
        obj.__dict__[name] = wrapper
        self._patches.append((obj, name, had_own, original, wrapper))

    def _check_active(self) -> None:
        if self._removed:
            raise RuntimeError("this flashvid adapter was removed; call flashvid.apply() again")

    def _make_generate(self, original: Callable) -> Callable:
        signature = inspect.signature(original)

        def generate(*args: Any, **kwargs: Any) -> Any:
            if not self.enabled:
                return original(*args, **kwargs)
            call = _bind(signature, args, kwargs)
            if call.get("pixel_values_videos") is None:
                return original(*args, **kwargs)
            prompt = call.pop("inputs", None)
            if prompt is not None:
                if call.get("input_ids") is not None:
                    raise ValueError(
                        "pass the prompt either as `inputs` or as `input_ids`, not both")
                call["input_ids"] = prompt
            with torch.no_grad():  # generate() is inference: no graph for the encoder
                prepared = self._prepare(call)
            original_ids = call["input_ids"]
            output = original(**prepared.inputs)
            return _restore_prompt(output, original_ids, prepared.inputs["input_ids"].shape[1])

        return generate

    def _make_forward(self, original: Callable) -> Callable:
        signature = inspect.signature(original)

        def forward(*args: Any, **kwargs: Any) -> Any:
            if self.enabled:
                call = _bind(signature, args, kwargs)
                if call.get("pixel_values_videos") is not None:
                    return original(**self._forward_inputs(self._prepare(call).inputs))
            return original(*args, **self._forward_inputs(kwargs))

        return forward

    def _forward_inputs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Hook to adapt prepared inputs right before the stock forward (LLaVA lists)."""
        return kwargs

    # ------------------------------------------------------------------ per family
    def _prepare(self, inputs: dict[str, Any]) -> Prepared:  # pragma: no cover - abstract
        raise NotImplementedError

    # ------------------------------------------------------------------ shared steps
    def _run_compressor(self, videos: list[tuple[torch.Tensor, torch.Tensor]]) -> list[Any]:
        """Compress every video ([F, N, D], [F, N]) of a call and check what came back. The
        default compressor takes them all in one ``compress_batch`` (one launch per kernel);
        a custom one is called per video."""
        if self.compressor is compress:
            results = compress_batch([x for x, _ in videos],
                                     [a.to(x.dtype) for x, a in videos], self._config)
        else:
            results = [self.compressor(x, a.to(x.dtype), self._config) for x, a in videos]
        return [self._check_result(x, r) for (x, _), r in zip(videos, results)]

    @staticmethod
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

    def _pad_id(self) -> int:
        for cfg in (getattr(self.model, "generation_config", None), self.model.config,
                    getattr(self.model.config, "text_config", None)):
            pad = getattr(cfg, "pad_token_id", None) if cfg is not None else None
            if isinstance(pad, int):
                return pad
        return 0


def _bind(signature: inspect.Signature, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The call's arguments by name (``**kwargs`` flattened in)."""
    if not args:
        return dict(kwargs)
    call = dict(signature.bind(*args, **kwargs).arguments)
    for name, param in signature.parameters.items():
        if param.kind is inspect.Parameter.VAR_KEYWORD and name in call:
            call.update(call.pop(name))
    return call


def _restore_prompt(output: Any, original_ids: torch.Tensor, compressed_len: int) -> Any:
    """generate() output with the caller's prompt in front of the new tokens (as stock)."""
    def fix(seqs: torch.Tensor) -> torch.Tensor:
        new = seqs[:, compressed_len:]
        prompt = original_ids.to(seqs.device)
        if prompt.shape[0] != seqs.shape[0]:  # num_return_sequences / beams expand the batch
            prompt = prompt.repeat_interleave(seqs.shape[0] // prompt.shape[0], dim=0)
        return torch.cat([prompt, new], dim=1)

    if isinstance(output, torch.Tensor):
        return fix(output)
    sequences = getattr(output, "sequences", None)
    if isinstance(sequences, torch.Tensor):
        output.sequences = fix(sequences)
    return output


# --------------------------------------------------------------------------- prompt rebuild
def as_mask(attention_mask: torch.Tensor | None, input_ids: torch.Tensor) -> torch.Tensor:
    """[B, L] bool mask of real tokens; checks the shape of a given mask."""
    if attention_mask is None:
        return torch.ones_like(input_ids, dtype=torch.bool)
    if attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask has shape {tuple(attention_mask.shape)}; expected the shape of "
            f"input_ids {tuple(input_ids.shape)} (a 2-D padding mask)")
    return attention_mask.bool()


def assign_slots(input_ids: torch.Tensor, mask: torch.Tensor, token_id: int,
                 counts: Sequence[int], what: str) -> list[tuple[int, torch.Tensor]]:
    """Give each video its placeholder columns, in the order the model fills them.

    Args:
        input_ids: [B, L] int64 prompt; ``mask`` [B, L] bool real tokens.
        token_id: the video placeholder id.
        counts: placeholders each video occupies in the stock prompt, in video order.
        what: a description of the expected counts for error messages.

    Returns:
        per video: (batch row, [count] int64 columns, ascending).
    """
    is_slot = (input_ids == token_id) & mask
    rows = [is_slot[b].nonzero().flatten() for b in range(input_ids.shape[0])]
    per_row = [int(r.numel()) for r in rows]
    if sum(per_row) != sum(counts):
        raise ValueError(
            f"the prompt holds {sum(per_row)} video placeholder tokens (per sample {per_row}) "
            f"but the videos need {sum(counts)} ({list(counts)}, {what}); build the prompt with "
            "the model's processor for exactly these videos")
    out: list[tuple[int, torch.Tensor]] = []
    row, offset = 0, 0
    for count in counts:
        while row < len(rows) and offset == per_row[row]:
            row, offset = row + 1, 0
        if row >= len(rows) or offset + count > per_row[row]:
            raise ValueError(
                f"a video's {count} placeholder tokens straddle two samples (per-sample counts "
                f"{per_row}, per-video counts {list(counts)}); each video must lie in one sample")
        out.append((row, rows[row][offset:offset + count]))
        offset += count
    return out


def assemble_rows(mask: torch.Tensor, dropped: torch.Tensor,
                  videos: list[tuple[int, torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
    """The entries of every rebuilt row.

    Args:
        mask: [B, L] bool real tokens of the caller's prompt.
        dropped: [B, L] bool columns to remove: every video slot, plus e.g. Qwen3-VL markers.
        videos: per video (row, keys [V'], values [V']): the entries that represent the video
            (an original column or -1) and the original column each is placed at. Entries with
            equal keys keep their order.

    Returns:
        per sample, [L'_b] int64 entries in sequence order.
    """
    rows = []
    for b in range(mask.shape[0]):
        text = (mask[b] & ~dropped[b]).nonzero().flatten()
        keys = [text]
        values = [text]
        for row, vkeys, vvalues in videos:
            if row == b:
                keys.append(vkeys)
                values.append(vvalues)
        key = torch.cat(keys)
        order = torch.sort(key, stable=True).indices
        rows.append(torch.cat(values)[order])
    return rows


def pad_side(mask: torch.Tensor) -> str:
    """"right" if any row ends in padding while starting with a token, else "left"."""
    if mask.shape[1] and bool((~mask[:, -1] & mask[:, 0]).any()):
        return "right"
    return "left"


def gather_rows(x: torch.Tensor, entries: list[torch.Tensor], *, new_value: int, pad_value: int,
                side: str, batch_dim: int = 0) -> torch.Tensor:
    """Rebuild a per-column tensor: x [..., B, L] (batch at ``batch_dim``, columns last) ->
    [..., B, L'] with ``x[b, e]`` for entries e >= 0, ``new_value`` for -1 and ``pad_value`` in
    the padding (on ``side``)."""
    length = max((int(e.numel()) for e in entries), default=0)
    shape = list(x.shape)
    shape[-1] = length
    out = torch.full(shape, pad_value, dtype=x.dtype, device=x.device)
    for b, e in enumerate(entries):
        e = e.to(x.device)
        src = x.select(batch_dim, b)
        vals = src[..., e.clamp_min(0)]
        vals = torch.where(e >= 0, vals, torch.full_like(vals, new_value))
        n = int(e.numel())
        dst = out.select(batch_dim, b)
        if side == "left":
            dst[..., length - n:] = vals
        else:
            dst[..., :n] = vals
    return out


def rebuild_text_inputs(inputs: dict[str, Any], entries: list[torch.Tensor], token_id: int,
                        pad_id: int, side: str, token_type: int = 2) -> dict[str, Any]:
    """input_ids, attention_mask, mm_token_type_ids, token_type_ids and labels of the rebuilt
    prompt (whichever the caller gave); -1 entries become video placeholders."""
    ids = inputs["input_ids"]
    out = dict(inputs)
    out["input_ids"] = gather_rows(ids, entries, new_value=token_id, pad_value=pad_id, side=side)
    ones = torch.ones_like(ids)
    mask_dtype = inputs["attention_mask"].dtype if inputs.get("attention_mask") is not None \
        else torch.long
    out["attention_mask"] = gather_rows(ones, entries, new_value=1, pad_value=0,
                                        side=side).to(mask_dtype)
    if inputs.get("mm_token_type_ids") is not None:
        out["mm_token_type_ids"] = gather_rows(inputs["mm_token_type_ids"], entries,
                                               new_value=token_type, pad_value=0, side=side)
    if inputs.get("token_type_ids") is not None:
        out["token_type_ids"] = gather_rows(inputs["token_type_ids"], entries, new_value=0,
                                            pad_value=0, side=side)
    if inputs.get("labels") is not None:
        out["labels"] = gather_rows(inputs["labels"], entries, new_value=IGNORE_INDEX,
                                    pad_value=IGNORE_INDEX, side=side)
    return out


def reject(inputs: dict[str, Any], names: Sequence[str], why: str) -> None:
    """ValueError if any of ``names`` is given (not None) in ``inputs``."""
    for name in names:
        if inputs.get(name) is not None:
            raise ValueError(
                f"`{name}` cannot be combined with a FlashVID-patched video call: {why}")
