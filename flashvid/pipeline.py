"""The fast FlashVID pipeline: dyseg -> adts -> tstm -> trees -> dpc -> assemble.

Everything is batched over frames, and over videos: a batch is a flat frame list whose segments
never cross a video boundary. The stages (``flashvid.stages``) return decisions; the heavy
per-frame work comes from a backend (``flashvid.backends``). There are no per-token or per-frame
Python loops. The host synchronises twice, at the two places where output sizes depend on the
data, both marked below: the segment cuts (fetched together with the input checks) and the
per-frame spatial-merge sizes. float16 input with the published "official" tree arithmetic
takes a third, to check that no merged token overflows float16.

Arithmetic: decisions are made in float32 (float64 for float64 input) whatever the input dtype;
merged tokens are cast back to the input dtype; ADTS tokens are copied bit for bit.
"""

from __future__ import annotations

import torch

from .backends import Backend, work_dtype
from .config import Budget, FlashVIDConfig
from .stages import adts as adts_stage
from .stages import dpc as dpc_stage
from .stages import dyseg as dyseg_stage
from .stages import tstm as tstm_stage
from .stages.adts import adts
from .stages.assemble import Merge, assemble, assemble_exact
from .stages.dpc import dpc
from .stages.trees import static_trees, trees
from .stages.tstm import tstm
from .types import CompressedVideo
from .validation import (
    MAX_ABS_TOKEN,
    MAX_IMPORTANCE,
    check_values,
    overflow_error,
    value_bounds,
)


def run(x: torch.Tensor, a: torch.Tensor, cfg: FlashVIDConfig, backend: Backend,
        video_frames: list[int] | None = None) -> list[CompressedVideo]:
    """Compress the videos of a flat frame list x [F, N, D], a [F, N] (shapes already checked;
    values are checked here). ``video_frames`` splits the F frames into videos (default: one)."""
    frames, n, _ = x.shape
    video_frames = video_frames or [frames]
    budget = cfg.budget(n)
    wd = work_dtype(x.dtype)
    segmenting = cfg.segment and frames > 1
    means = None
    if segmenting or (cfg.selection == "adts" and budget.adts > 0):
        means = dyseg_stage.frame_means(x, wd)
    fetch = [value_bounds(x, a)]
    if segmenting:
        fetch.append(dyseg_stage.transition_similarity(means).double())

    host = torch.cat(fetch).tolist()  # host sync 1: input checks and DySeg similarities
    check_values(host[:4])
    lengths = dyseg_stage.segment_lengths(host[4:], video_frames, cfg)
    seg = dyseg_stage.make_segments(lengths, x.device)

    event_mean = None
    if cfg.selection == "adts" and budget.adts > 0:
        event_mean = adts_stage.event_mean(means, seg)
    gram = adts_stage.needs_gram(cfg, budget.adts)
    pairs = tstm_stage.needs_pairs(cfg, seg, budget.merge)
    stats = None
    if gram or pairs:
        stats = backend.frame_stats(x, event_mean=event_mean if gram else None, gram=gram,
                                    segments=seg if pairs else None)
    picks = adts(x, a, stats, cfg, budget.adts, backend)
    eligible = torch.ones(frames, n, dtype=torch.bool, device=x.device)
    eligible.scatter_(1, picks, False)
    merge = None
    if budget.merge > 0:
        forest = tstm(x, stats, eligible, seg, cfg, budget.total, backend)
        candidates = tstm_stage.candidates(forest, eligible, seg, cfg)

        counts = candidates.sum(dim=1).tolist()  # host sync 2: the spatial-merge sizes
        tree = trees(x, forest, candidates, sum(counts), seg, cfg, backend)
        plan = dpc_stage.plan(counts, seg, budget, cfg)
        clusters = dpc(tree.values, counts, plan, cfg, backend) if any(plan.clusters) else None
        merge = Merge(tree, counts, plan, clusters)
    out = assemble(x, picks, eligible, seg, video_frames, budget, cfg, merge)
    if out.overflow is not None:
        overflow, peak = torch.stack([out.overflow.double(), out.merged_peak.double()]).tolist()
        # host sync 3 (float16, official aggregation): merged tokens representable
        if overflow:
            raise overflow_error(peak, cfg.aggregation)
    return out.videos


def run_exact(x: torch.Tensor, a: torch.Tensor, cfg: FlashVIDConfig, backend: Backend,
              video_frames: list[int] | None = None,
              num_tokens: list[int | None] | None = None) -> tuple[list[CompressedVideo],
                                                                   torch.Tensor]:
    """Exact-count mode: every video of the flat frame list gets exactly its K rows
    (``cfg.exact_budget``), with no data-dependent shape and no host synchronisation.

    All videos must share the ADTS count of their exact budgets (``compress_batch`` groups them
    so). Value checks: on the CPU the usual ValueError; on CUDA and while being compiled a
    device-side assertion (``torch._assert_async``), which does not wait for the device.
    Returns the per-video results and the flat [sum K, D] rows they are views of.
    """
    frames, n, _ = x.shape
    video_frames = video_frames or [frames]
    num_tokens = num_tokens or [None] * len(video_frames)
    splits = [cfg.exact_budget(f, n, k) for f, k in zip(video_frames, num_tokens)]
    k_adts = splits[0].adts
    if any(s.adts != k_adts for s in splits):
        raise ValueError("run_exact: every video of one call must keep the same ADTS count")
    video_rows = [sum(s.frame_totals) for s in splits]
    merge_total = sum(video_rows) - frames * k_adts
    top = max(max(s.frame_totals) for s in splits)
    budget = Budget(top, k_adts, top - k_adts)
    unique = cfg.replace(dedupe=True)  # exact mode never repeats a position
    wd = work_dtype(x.dtype)
    check_values_async(x, a)

    means = dyseg_stage.frame_means(x, wd) if cfg.segment or cfg.selection == "adts" else None
    sim = dyseg_stage.transition_similarity(means) if cfg.segment and frames > 1 else None
    seg = dyseg_stage.static_segments(sim, video_frames, cfg, x.device)
    event_mean = None
    if cfg.selection == "adts" and k_adts > 0:
        event_mean = adts_stage.event_mean(means, seg)
    gram = adts_stage.needs_gram(cfg, k_adts)
    pairs = tstm_stage.needs_pairs(cfg, seg, merge_total)
    stats = None
    if gram or pairs:
        stats = backend.frame_stats(x, event_mean=event_mean if gram else None, gram=gram,
                                    segments=seg if pairs else None)
    picks = adts(x, a, stats, unique, k_adts, backend)
    eligible = torch.ones(frames, n, dtype=torch.bool, device=x.device)
    eligible.scatter_(1, picks, False)
    tree = row = centres = keep = None
    if merge_total > 0:
        totals = _per_frame(video_frames, splits, x.device)
        forest = tstm(x, stats, eligible, seg, cfg, totals, backend)
        candidates = tstm_stage.candidates(forest, eligible, seg, unique)
        tree = static_trees(x, forest, seg, cfg, backend)
        clusters, keep = dpc_stage.exact_counts(candidates.sum(dim=1), totals - k_adts, seg)
        row, centres = dpc_stage.static_dpc(tree.values, candidates, clusters, merge_total,
                                            cfg.dpc_knn, backend)
    out, flat = assemble_exact(x, picks, tree, row, centres, keep, seg, video_frames,
                               video_rows, budget, cfg)
    if out.overflow is not None:
        _check_overflow(out.overflow, out.merged_peak, cfg.aggregation)
    return out.videos, flat


def check_values_async(x: torch.Tensor, a: torch.Tensor) -> None:
    """The input value checks without a host synchronisation where one would cost: a ValueError
    on the CPU (eager), a device-side assertion on CUDA and while compiling."""
    bounds = value_bounds(x, a)
    if x.device.type == "cpu" and not torch.compiler.is_compiling():
        check_values(bounds.tolist())
        return
    lo, hi, a_lo, a_hi = bounds.unbind(0)
    torch._assert_async(torch.isfinite(bounds).all() & (a_lo >= 0) & (a_hi <= MAX_IMPORTANCE)
                        & (torch.maximum(lo.abs(), hi.abs()) <= MAX_ABS_TOKEN),
                        "flashvid.compress: invalid input (NaN/Inf, negative importance, or "
                        "out-of-range magnitudes); call flashvid.validate(tokens, cls_attn) "
                        "for the details")


def _check_overflow(overflow: torch.Tensor, peak: torch.Tensor, aggregation: str) -> None:
    if overflow.device.type == "cpu" and not torch.compiler.is_compiling():
        if bool(overflow):
            raise overflow_error(float(peak), aggregation)
        return
    torch._assert_async(~overflow, "flashvid.compress: merged tokens overflow float16 "
                        "(aggregation='official' grows with chain length); use "
                        "aggregation='mean' or bfloat16/float32 tokens")


def _per_frame(video_frames, splits, device) -> torch.Tensor:
    """[F] int64 row budget B_t of every frame, built on the device from per-video scalars."""
    frames = sum(video_frames)
    frame = torch.arange(frames, device=device)
    totals = torch.zeros(frames, dtype=torch.long, device=device)
    start = 0
    for count, split in zip(video_frames, splits):
        k = sum(split.frame_totals)
        local = frame - start
        inside = (local >= 0) & (local < count)
        totals = torch.where(inside, (local + 1) * k // count - local * k // count, totals)
        start += count
    return totals
