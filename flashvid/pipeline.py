"""The fast FlashVID pipeline: plan -> decide (dyseg, adts, tstm, trees, dpc) -> apply
(assemble).

One flow for every mode. The :class:`~flashvid.plan.Plan` fixes before any value is read what
runs, every frame's budget, and where data-dependent sizes live:

* host-sized plans (the default mode; exact-count mode on the CPU, where a fetch is free) fetch
  the two things output sizes depend on, at the two marked points: the segment cuts (with the
  input checks) and the spatial-merge sizes. float16 input with the published "official" tree
  arithmetic fetches once more, to check that no merged token overflows float16;
* static plans (exact-count mode on CUDA and while compiling) keep every size on the device,
  check values with device-side assertions, and never synchronise.

Everything is batched over frames, and over videos: a batch is a flat frame list whose segments
never cross a video boundary. The stages (``flashvid.stages``) take the scalars they need and
return decisions; the heavy per-frame work comes from a backend (``flashvid.backends``); the
call's scratch memory is one :class:`~flashvid.workspace.Workspace`. There are no per-token or
per-frame Python loops.

Arithmetic: decisions are made in float32 (float64 for float64 input) whatever the input dtype;
merged tokens are cast back to the input dtype; ADTS tokens are copied bit for bit.
"""

from __future__ import annotations

import torch

from .backends import Backend
from .plan import Plan
from .stages import dpc as dpc_stage
from .stages import dyseg
from .stages import tstm as tstm_stage
from .stages.adts import adts, event_mean
from .stages.assemble import Assembled, assemble
from .stages.trees import trees
from .stages.util import fetch
from .validation import MAX_ABS_TOKEN, MAX_IMPORTANCE, check_values, overflow_error, value_bounds
from .workspace import Workspace


def run(x: torch.Tensor, cls_attn: torch.Tensor, plan: Plan, backend: Backend) -> Assembled:
    """Compress the videos of a flat frame list x [F, N, D], cls_attn [F, N] (shapes checked;
    values are checked here) as ``plan`` says."""
    with Workspace(x.device) as ws:
        return _run(x, cls_attn, plan, backend, ws)


def _run(x: torch.Tensor, cls_attn: torch.Tensor, plan: Plan, backend: Backend,
         ws: Workspace) -> Assembled:
    cfg = plan.config
    frames, n, _ = x.shape
    means = dyseg.frame_means(x, plan.work_dtype) if plan.means else None
    sim = dyseg.transition_similarity(means) if plan.segment else None
    stats = None
    if plan.gram or plan.pairs or not plan.static:
        stats = backend.token_norms(x, ws, unit=plan.gram or plan.pairs)

    # ---- the segments, and the input checks
    if plan.static:
        _assert_values(x, cls_attn)
        start = dyseg.stable_starts(sim, plan.video_frames, cfg.segment_threshold,
                                    cfg.min_segments, cfg.complementary_segments, x.device)
        seg = dyseg.segments(start, None, max(plan.video_frames))
    else:
        a_lo, a_hi = cls_attn.aminmax()
        checks = torch.stack([stats.norms.amax().double(), a_lo.double(), a_hi.double()])
        start = cuts = None
        if sim is not None and plan.exact:
            start = dyseg.stable_starts(sim, plan.video_frames, cfg.segment_threshold,
                                        cfg.min_segments, cfg.complementary_segments, x.device)
            cuts = start
        elif sim is not None:
            cuts = sim
        host = fetch(checks=checks, **({"cuts": cuts} if cuts is not None else {}))
        # host sync 1: the input checks and the cuts
        _check_values(host["checks"], x, cls_attn)
        lengths = _lengths(host.get("cuts", []), plan)
        if start is None:
            start = dyseg.starts_of(lengths, x.device)
        seg = dyseg.segments(start, lengths, max(lengths))

    # ---- ADTS
    if plan.gram:
        stats = backend.frame_stats(
            x, stats, ws, event_mean=event_mean(means, seg) if plan.event else None, gram=True)
    picks = adts(x, cls_attn, stats, cfg.selection, plan.adts, plan.dedupe, backend, ws)
    eligible = torch.ones(frames, n, dtype=torch.bool, device=x.device)
    eligible.scatter_(1, picks, False)

    # ---- TSTM, trees and the spatial merge
    tree = clusters = None
    frame_rows = [plan.adts] * frames  # rows per frame, where known on the host
    if plan.merge:
        budgets = plan.frame_budget_tensor(x.device)
        forest = tstm_stage.tstm(x, stats, eligible, seg, cfg.temporal_threshold,
                                 cfg.temporal_merge, budgets, backend, ws)
        candidates = tstm_stage.candidates(forest, eligible, seg, plan.dedupe)
        counts = candidates.sum(dim=1)
        if plan.static:
            clusters_t, keep = dpc_stage.exact_counts(counts, budgets - plan.adts, seg)
            tree = trees(x, forest, candidates, None, seg, cfg.aggregation, ws)
            merged = sum(plan.video_rows) - frames * plan.adts
            width = n - plan.adts if plan.dedupe else n
            clusters = dpc_stage.dpc_static(tree.values, candidates, clusters_t, keep, merged,
                                            width, cfg.dpc_knn, ws)
        else:
            if plan.exact:
                clusters_t, keep = dpc_stage.exact_counts(counts, budgets - plan.adts, seg)
                host = fetch(counts=counts, clusters=clusters_t, keep=keep)  # host sync 2
                counts_h = [int(c) for c in host["counts"]]
                clusters_h = [int(k) for k in host["clusters"]]
                keep_h = [bool(k) for k in host["keep"]]
            else:
                counts_h = counts.tolist()  # host sync 2: the spatial-merge sizes
                clusters_h, keep_h = dpc_stage.published_counts(
                    counts_h, seg, plan.frame_budgets, plan.adts, cfg.spatial_merge)
            tree = trees(x, forest, candidates, sum(counts_h), seg, cfg.aggregation, ws)
            clusters = dpc_stage.dpc(tree.values, tree.targets, counts_h, clusters_h, keep_h,
                                     cfg.dpc_knn, ws)
            frame_rows = [r + (c if kp else k)
                          for r, c, k, kp in zip(frame_rows, counts_h, clusters_h, keep_h)]

    # ---- the rows
    if plan.video_rows is not None:
        video_rows = list(plan.video_rows)
    else:
        video_rows, first = [], 0
        for count in plan.video_frames:
            video_rows.append(sum(frame_rows[first : first + count]))
            first += count
    out = assemble(x, picks, eligible, tree, clusters, seg, plan, video_rows, ws)
    if out.overflow is not None:
        _check_overflow(out.overflow, out.merged_peak, cfg.aggregation, plan.static)
    return out


def _lengths(host: list[float], plan: Plan) -> list[int]:
    """Segment lengths of every video from the fetched cuts (first-frame flags in exact-count
    mode, similarities otherwise)."""
    cfg = plan.config
    if not plan.segment:
        return list(plan.video_frames)
    if plan.exact:  # flags of the first frames
        firsts = [t for t, flag in enumerate(host) if flag] + [len(host)]
        return [b - a for a, b in zip(firsts, firsts[1:])]
    return dyseg.published_lengths(host, plan.video_frames, cfg.segment_threshold,
                                   cfg.min_segments, cfg.complementary_segments)


def _check_values(checks: list[float], x: torch.Tensor, cls_attn: torch.Tensor) -> None:
    """Raise for bad input values. The fetched largest token norm (finite and at most
    MAX_ABS_TOKEN means every entry is) and importance bounds decide the common case; anything
    else is diagnosed exactly from the entries (one more pass, only on that path)."""
    peak, a_lo, a_hi = checks
    if peak == peak and peak <= MAX_ABS_TOKEN and a_lo >= 0 and a_hi <= MAX_IMPORTANCE:
        return
    check_values(value_bounds(x, cls_attn).tolist())


def _assert_values(x: torch.Tensor, cls_attn: torch.Tensor) -> None:
    """The input value checks without a host synchronisation where one would cost: a ValueError
    on the CPU (eager), a device-side assertion on CUDA and while compiling."""
    bounds = value_bounds(x, cls_attn)
    if x.device.type == "cpu" and not torch.compiler.is_compiling():
        check_values(bounds.tolist())
        return
    lo, hi, a_lo, a_hi = bounds.unbind(0)
    torch._assert_async(torch.isfinite(bounds).all() & (a_lo >= 0) & (a_hi <= MAX_IMPORTANCE)
                        & (torch.maximum(lo.abs(), hi.abs()) <= MAX_ABS_TOKEN),
                        "flashvid.compress: invalid input (NaN/Inf, negative importance, or "
                        "out-of-range magnitudes); call flashvid.validate(tokens, cls_attn) "
                        "for the details")


def _check_overflow(overflow: torch.Tensor, peak: torch.Tensor, aggregation: str,
                    static: bool) -> None:
    if not static or (overflow.device.type == "cpu" and not torch.compiler.is_compiling()):
        host = fetch(overflow=overflow, peak=peak)
        # host sync 3 (float16, official aggregation): merged tokens representable
        if host["overflow"][0]:
            raise overflow_error(host["peak"][0], aggregation)
        return
    torch._assert_async(~overflow, "flashvid.compress: merged tokens overflow float16 "
                        "(aggregation='official' grows with chain length); use "
                        "aggregation='mean' or bfloat16/float32 tokens")
