"""The plan of one pipeline call: everything decided from the configuration, the shapes and the
requested row counts before any value is read.

``resolve`` is the one place that decides whether a call runs in exact-count mode, which
duplicate positions it may produce (``dedupe``), each frame's budget, and whether sizes that
depend on the data are fetched to the host (``static=False``: two small fetches per call) or
stay on the device (``static=True``: exact-count mode on CUDA and while compiling, no host
synchronisation at all). On the CPU a fetch costs nothing, so exact-count mode there takes the
host-sized path and costs what the default mode costs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .config import Budget, FlashVIDConfig


@dataclass(frozen=True)
class Plan:
    """Attributes:
        config: the configuration of the call (reported with the results).
        video_frames: frames of each video of the flat frame list.
        tokens_per_frame, dim: N and D.
        work_dtype: the dtype decisions are computed in (float64 for float64 input, else
            float32).
        exact: exact-count mode (``config.exact_count`` or a requested row count).
        static: data-dependent sizes stay on the device (no host synchronisation).
        dedupe: no position occurs twice (``config.dedupe``, always in exact-count mode).
        adts: ADTS picks per frame (shared by every video of the call).
        frame_budgets: B_t of every frame of the flat list (rows it stands for; ``adts`` of them
            ADTS tokens, the rest its share of the segment's merge budget).
        video_rows: output rows of each video when known from the shapes (exact-count mode),
            else None.
        budget: the per-frame budget reported with each result.
        segment: DySeg runs (``config.segment`` and more than one frame in some video).
        means: the frame means are needed (DySeg, or the ``adts`` event term).
        event: the ``adts`` event term is computed.
        gram: the ADTS greedy loop runs on the frame Grams.
        merge: some frame has a merge budget (TSTM, trees and the spatial merge run).
        pairs: the adjacent-frame similarities may be needed (``tstm`` edges of a merge with a
            temporal threshold below 1; the segments decide whether any pair continues one).
    """

    config: FlashVIDConfig
    video_frames: tuple[int, ...]
    tokens_per_frame: int
    dim: int
    work_dtype: torch.dtype
    exact: bool
    static: bool
    dedupe: bool
    adts: int
    frame_budgets: tuple[int, ...]
    video_rows: tuple[int, ...] | None
    budget: Budget
    segment: bool
    means: bool
    event: bool
    gram: bool
    merge: bool
    pairs: bool

    @property
    def frames(self) -> int:
        return sum(self.video_frames)

    def frame_budget_tensor(self, device: torch.device) -> torch.Tensor:
        """[F] int64 ``frame_budgets`` built on the device from per-video scalars (plain
        arithmetic on device tensors, no host-to-device copy, so a call can be captured in a
        CUDA graph)."""
        frame = torch.arange(self.frames, device=device)
        budgets = torch.zeros(self.frames, dtype=torch.long, device=device)
        start = 0
        for count in self.video_frames:
            k = sum(self.frame_budgets[start : start + count])
            local = frame - start
            inside = (local >= 0) & (local < count)
            # floor((t+1) K / F) - floor(t K / F): the exact split; B for every frame otherwise
            budgets = torch.where(inside, (local + 1) * k // count - local * k // count, budgets)
            start += count
        return budgets


def exact_mode(config: FlashVIDConfig, num_tokens: Sequence[int | None] | None) -> bool:
    """Exact-count mode: ``config.exact_count``, or a row count requested for some video."""
    return config.exact_count or any(k is not None for k in (num_tokens or ()))


def resolve(config: FlashVIDConfig, video_frames: Sequence[int], tokens_per_frame: int,
            dim: int, dtype: torch.dtype, device: torch.device,
            num_tokens: Sequence[int | None] | None = None, *,
            static: bool | None = None) -> Plan:
    """The plan of compressing the videos of a flat frame list with ``config``.

    ``num_tokens``: one requested row count per video (None entries: ``output_length``); any
    given count, or ``config.exact_count``, selects exact-count mode, and then every video must
    keep the same number of ADTS tokens per frame (``compress_batch`` groups videos so).
    ``static`` overrides where data-dependent sizes live (tests run the static path on the CPU).
    """
    video_frames = tuple(int(f) for f in video_frames)
    n = int(tokens_per_frame)
    counts = list(num_tokens) if num_tokens is not None else [None] * len(video_frames)
    exact = exact_mode(config, counts)
    if exact:
        splits = [config.exact_budget(f, n, k) for f, k in zip(video_frames, counts)]
        adts = splits[0].adts
        if any(s.adts != adts for s in splits):
            raise ValueError("videos compressed together in exact-count mode must keep the same "
                             "number of ADTS tokens per frame; compress them separately")
        frame_budgets = tuple(b for s in splits for b in s.frame_budgets)
        video_rows: tuple[int, ...] | None = tuple(sum(s.frame_budgets) for s in splits)
        top = max(frame_budgets)
        budget = Budget(top, adts, top - adts)
    else:
        budget = config.budget(n)
        adts = budget.adts
        frame_budgets = (budget.total,) * sum(video_frames)
        video_rows = None
    if static is None:
        static = exact and (torch.device(device).type != "cpu" or torch.compiler.is_compiling())
    wd = torch.float64 if dtype == torch.float64 else torch.float32
    segment = config.segment and max(video_frames) > 1
    gram = adts > 0 and config.selection != "attention"
    event = gram and config.selection == "adts"
    merge = any(b > adts for b in frame_budgets)
    pairs = (merge and config.temporal_threshold < 1.0 and config.temporal_merge == "tstm"
             and max(video_frames) > 1)
    return Plan(config, video_frames, n, int(dim), wd, exact, bool(static),
                config.dedupe or exact, adts, frame_budgets, video_rows, budget, segment,
                segment or event, event, gram, merge, pairs)

