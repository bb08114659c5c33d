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
from .config import FlashVIDConfig
from .stages import adts as adts_stage
from .stages import dpc as dpc_stage
from .stages import dyseg as dyseg_stage
from .stages import tstm as tstm_stage
from .stages.adts import adts
from .stages.assemble import Merge, assemble
from .stages.dpc import dpc
from .stages.trees import trees
from .stages.tstm import tstm
from .types import CompressedVideo
from .validation import check_values, overflow_error, value_bounds


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
