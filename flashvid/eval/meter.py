"""What a video LLM really got: visual tokens per sample and prefill time, measured in generate().

:class:`GenerateMeter` wraps one transformers model instance's ``generate`` (outermost, above a
FlashVID patch if there is one) and puts a forward pre-hook and a forward hook on the model
module. The same code measures the vanilla model and the FlashVID one:

* ``visual_tokens_full``: video placeholder tokens (``config.video_token_id`` /
  ``video_token_index``) in each row of the ``input_ids`` the caller gave ``generate()``: the
  stock, uncompressed count (LLaVA-OneVision: ``F * 196 + 1``, the newline included).
* ``visual_tokens_input``: video placeholder tokens in each row of the ``input_ids`` of the first
  forward call inside that ``generate()`` (the prefill): what the language model's first layer
  really receives. Vanilla: the stock count; FlashVID: the rebuilt prompt's.
* ``visual_tokens_after_k``: video tokens that go on past FlashVID's inner-LLM stage (decoder
  layer K and later), from the adapter's own record of what the stage kept
  (``Prepared.llm``: rows' lengths before and after layer K; only video tokens are dropped).
  Equal to ``visual_tokens_input`` when the stage does not run (vanilla, ``pruning_layer=none``).
* ``visual_tokens``: the layer-averaged count ``(K * input + (L - K) * after_k) / L`` over the
  L decoder layers, the quantity FlashVID's retention ratio r is defined over
  (``FlashVIDConfig.retention_ratio``); equal to ``visual_tokens_input`` without the stage.
* ``frames``: frames the vision tower encoded for the row (LLaVA: the video's frames; Qwen:
  ``temporal_patch_size`` times the temporal patches of ``video_grid_thw``).
* ``prefill_s``: wall time from entering ``generate()`` to the end of its first forward call
  (video encoding, FlashVID's compression and prompt rebuild, the language-model prefill),
  with ``torch.cuda.synchronize`` on both ends on CUDA; a batched call's time is divided
  evenly over its rows.

Exceptions raised inside ``generate()`` are kept in :attr:`GenerateMeter.errors` before they
propagate, because some lmms-eval models catch them and score an empty answer.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

FIELDS = ("frames", "visual_tokens_full", "visual_tokens_input", "visual_tokens_after_k",
          "visual_tokens", "prefill_s")


@dataclass(frozen=True)
class SampleRecord:
    """Measurements of one sample (one row of one ``generate()`` call); see the module doc."""

    frames: int
    visual_tokens_full: int
    visual_tokens_input: int
    visual_tokens_after_k: int
    visual_tokens: float
    prefill_s: float


@dataclass
class _Call:
    start: float
    input_counts: list[int] | None = None
    prefill_end: float | None = None


class _MeteredGenerate:
    """``model.generate`` while metered; ``__wrapped__`` keeps ``inspect.signature`` exact."""

    def __init__(self, meter: GenerateMeter, inner: Any) -> None:
        self.meter = meter
        self.inner = inner

    @property
    def __wrapped__(self) -> Any:
        return getattr(self.inner, "__wrapped__", self.inner)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.meter._generate(self.inner, args, kwargs)


class GenerateMeter:
    """Measures every ``generate()`` call of one model instance (see the module doc).

    Args:
        model: a transformers video LLM (``...ForConditionalGeneration``).
        handle: optional FlashVID :class:`~flashvid.integrations.Adapter` on ``model``, created
            with ``record=True`` (the inner-LLM stage's record is read from ``handle.last``);
            assign :attr:`handle` later when the patch is applied later.

    Attributes:
        records: one :class:`SampleRecord` per measured sample, in call order.
        errors: exceptions raised inside metered ``generate()`` calls.
    """

    def __init__(self, model: Any, handle: Any = None) -> None:
        self.model = model
        self.handle = handle
        self.records: list[SampleRecord] = []
        self.errors: list[BaseException] = []
        config = model.config
        self.video_token_id = _first_int(config, ("video_token_id", "video_token_index"))
        if self.video_token_id is None:
            raise TypeError(f"{type(model).__name__}.config has no video_token_id or "
                            "video_token_index: not a video LLM this meter knows")
        text = getattr(config, "text_config", None) or config
        self.num_layers = int(text.num_hidden_layers)
        vision = getattr(config, "vision_config", None)
        self.temporal_patch = int(getattr(vision, "temporal_patch_size", 1) or 1)
        self.merge = int(getattr(vision, "spatial_merge_size", 1) or 1)
        self._call: _Call | None = None
        self._hooks: list[Any] = []
        self._installed: tuple[bool, Any] | None = None

    # ------------------------------------------------------------------ installation
    def install(self) -> GenerateMeter:
        """Wrap ``model.generate`` (whatever it is now) and add the hooks; idempotent."""
        if self._installed is not None:
            return self
        d = self.model.__dict__
        self._installed = ("generate" in d, d.get("generate"))
        d["generate"] = _MeteredGenerate(self, self.model.generate)
        self._hooks = [
            self.model.register_forward_pre_hook(self._pre_forward, with_kwargs=True),
            self.model.register_forward_hook(self._post_forward, with_kwargs=True),
        ]
        return self

    def uninstall(self) -> None:
        """Restore ``model.generate`` as it was before :meth:`install`; idempotent."""
        if self._installed is None:
            return
        had_own, previous = self._installed
        if had_own:
            self.model.__dict__["generate"] = previous
        else:
            self.model.__dict__.pop("generate", None)
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        self._installed = None

    @property
    def installed(self) -> bool:
        return self._installed is not None

    # ------------------------------------------------------------------ results
    def take(self) -> list[SampleRecord]:
        """The records so far, clearing them (and the errors)."""
        records, self.records = self.records, []
        self.errors = []
        return records

    @staticmethod
    def summarize(records: list[SampleRecord]) -> dict[str, float | int | None]:
        """Per-sample means of every field, plus ``samples`` and ``measured_retention``
        (mean ``visual_tokens`` / mean ``visual_tokens_full``); None where nothing was measured."""
        out: dict[str, float | int | None] = {"samples": len(records)}
        for name in FIELDS:
            values = [getattr(r, name) for r in records]
            out[name] = statistics.fmean(values) if values else None
        full, kept = out["visual_tokens_full"], out["visual_tokens"]
        out["measured_retention"] = (kept / full if full else None) if kept is not None else None
        return out

    # ------------------------------------------------------------------ the measurement
    def _generate(self, inner: Any, args: tuple, kwargs: dict[str, Any]) -> Any:
        ids = kwargs.get("input_ids", kwargs.get("inputs"))
        if ids is None and args and isinstance(args[0], torch.Tensor):
            ids = args[0]
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or self._call is not None:
            return inner(*args, **kwargs)  # no prompt ids (or a nested call): nothing to count
        full = self._counts(ids)
        frames = self._frames(kwargs, full)
        if self.handle is not None:
            self.handle.last = None  # so that a call FlashVID passes through leaves no record
        _sync(ids.device)
        self._call = call = _Call(start=time.perf_counter())
        try:
            output = inner(*args, **kwargs)
        except BaseException as err:
            self.errors.append(err)
            raise
        finally:
            self._call = None
        end = call.prefill_end if call.prefill_end is not None else time.perf_counter()
        prefill = (end - call.start) / max(len(full), 1)
        inputs = _per_row(call.input_counts, len(full)) or full
        after = self._after_k(inputs)
        layer_k = self._stage_layer()
        for b in range(len(full)):
            if layer_k is None:
                averaged = float(inputs[b])
            else:
                averaged = (layer_k * inputs[b] + (self.num_layers - layer_k) * after[b]) \
                    / self.num_layers
            self.records.append(SampleRecord(frames=frames[b], visual_tokens_full=full[b],
                                             visual_tokens_input=inputs[b],
                                             visual_tokens_after_k=after[b],
                                             visual_tokens=averaged, prefill_s=prefill))
        return output

    def _pre_forward(self, module: Any, args: tuple, kwargs: dict[str, Any]) -> None:
        call = self._call
        if call is None or call.input_counts is not None:
            return
        ids = kwargs.get("input_ids")
        if ids is None and args and isinstance(args[0], torch.Tensor):
            ids = args[0]
        call.input_counts = self._counts(ids) if isinstance(ids, torch.Tensor) else []

    def _post_forward(self, module: Any, args: tuple, kwargs: dict[str, Any],
                      output: Any) -> None:
        call = self._call
        if call is not None and call.prefill_end is None:
            logits = getattr(output, "logits", None)
            _sync(logits.device if isinstance(logits, torch.Tensor) else None)
            call.prefill_end = time.perf_counter()

    def _counts(self, ids: torch.Tensor) -> list[int]:
        return (ids == self.video_token_id).sum(dim=-1).tolist() if ids.dim() == 2 else []

    def _stage_layer(self) -> int | None:
        """K when the FlashVID inner-LLM stage ran in the last call, else None."""
        handle = self.handle
        last = getattr(handle, "last", None) if handle is not None else None
        if handle is None or not handle.enabled or getattr(last, "llm", None) is None:
            return None
        return int(handle.config.pruning_layer)

    def _after_k(self, inputs: list[int]) -> list[int]:
        if self._stage_layer() is None:
            return list(inputs)
        record = self.handle.last.llm
        dropped = [int(a) - int(b) for a, b in zip(record.lengths_before, record.lengths_after)]
        dropped = _per_row(dropped, len(inputs)) or [0] * len(inputs)
        return [max(v - d, 0) for v, d in zip(inputs, dropped)]

    def _frames(self, kwargs: dict[str, Any], full: list[int]) -> list[int]:
        """Frames per row encoded by the vision tower (0 for rows without a video)."""
        rows = len(full)
        grid = kwargs.get("video_grid_thw")
        if isinstance(grid, torch.Tensor) and grid.numel() and rows:
            # videos fill the rows' placeholders in order (masked_scatter order)
            frames = [0] * rows
            row, left = 0, full[0]
            for t, h, w in grid.tolist():
                while left <= 0 and row + 1 < rows:
                    row += 1
                    left = full[row]
                frames[row] += int(t) * self.temporal_patch
                left -= int(t) * int(h) * int(w) // (self.merge * self.merge)
            return frames
        pixels = kwargs.get("pixel_values_videos")
        if isinstance(pixels, torch.Tensor) and pixels.dim() == 5:
            return [int(pixels.shape[1]) if full[b] else 0 for b in range(rows)]
        if isinstance(pixels, (list, tuple)):
            counts = [int(v.shape[0]) for v in pixels if isinstance(v, torch.Tensor)]
            with_video = [b for b in range(rows) if full[b]]
            frames = [0] * rows
            for b, f in zip(with_video, counts):
                frames[b] = f
            return frames
        return [0] * rows


def _per_row(values: list[int] | None, rows: int) -> list[int] | None:
    """``values`` for ``rows`` rows: as is, or every k-th when generate() expanded each row k
    times (beams, num_return_sequences); None when there is nothing usable."""
    if not values:
        return None
    if len(values) == rows:
        return list(values)
    if rows and len(values) % rows == 0:
        return list(values[::len(values) // rows])
    return None


def _first_int(config: Any, names: tuple[str, ...]) -> int | None:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def record_dict(record: SampleRecord) -> dict[str, Any]:
    """A record as a plain dict (for JSON)."""
    return asdict(record)


__all__ = ["FIELDS", "GenerateMeter", "SampleRecord", "record_dict"]
