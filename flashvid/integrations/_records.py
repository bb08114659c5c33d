"""What the adapters return and record: the compressor contract and the per-call records.

Vocabulary used throughout the integrations:
* a *column* is a position of the caller's (uncompressed, possibly padded) prompt;
* a *slot* is a video placeholder column; each video owns ``count`` slots in masked_scatter order
  (batch row by batch row, left to right), exactly as the model fills them;
* the rebuilt row of a sample is a list of *entries*: an original column (text, or a kept video
  slot) or -1 (a new video placeholder without an original column, e.g. LLaVA's newline).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from ..config import FlashVIDConfig


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
        importance: [F, N] float32 importance scores given to the compressor (§3).
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
    """One rebuilt call.

    Attributes:
        inputs: the keyword arguments given to the stock ``forward``/``generate``.
        videos: one :class:`VideoRecord` per video, in placeholder order.
        entries: per sample, [L'_b] int64: the original column of every column of the rebuilt
            (unpadded) row, -1 for a new placeholder without an original column.
        lengths_before: per sample, non-padding tokens of the caller's prompt.
        lengths_after: per sample, tokens of the rebuilt prompt.
        candidates: [B, L'] bool, the rebuilt prompt's video tokens that the inner-LLM stage
            may prune (§10).
        llm: what the inner-LLM stage did in ``generate()`` (a ``PruneRecord``: candidates,
            kept columns and lengths per row), None when it did not run.
    """

    inputs: dict[str, Any]
    videos: list[VideoRecord] = field(default_factory=list)
    entries: list[torch.Tensor] = field(default_factory=list)
    lengths_before: list[int] = field(default_factory=list)
    lengths_after: list[int] = field(default_factory=list)
    candidates: torch.Tensor | None = None
    llm: Any = None
