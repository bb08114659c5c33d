"""The timed units: each stage of each provider on shared inputs, and its reference answer.

Every stage is fed the same inputs for every provider (prepared once with the torch pipeline),
so a stage's time and its correctness check cover that stage alone:

* ``adts``: the selection of every frame -> [F, k] local indices;
* ``tstm``: edges + threshold + soft threshold -> merged mask and parents;
* ``trees``: roots and tree aggregation -> values of the spatial-merge candidates;
* ``dpc``: the DPC-kNN spatial merge -> per-frame centres and assignments;
* ``compress``: the whole call.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .. import pipeline, reference
from ..compress import compress, stage_ops
from ..config import FlashVIDConfig
from ..reference import work_dtype

STAGES = ("adts", "tstm", "trees", "dpc", "compress")


@dataclass
class Prepared:
    """Shared stage inputs for one video."""

    x: torch.Tensor
    a: torch.Tensor
    cfg: FlashVIDConfig
    frame_means: torch.Tensor
    seg: pipeline.Segments
    budget: object
    eligible: torch.Tensor
    forest: pipeline.Forest
    targets: torch.Tensor
    values: torch.Tensor
    plan: pipeline.SpatialPlan

    @property
    def spans(self) -> list[tuple[int, int]]:
        return [(s, s + length) for s, length in zip(self.seg.starts, self.seg.lengths)]


def prepare(x: torch.Tensor, a: torch.Tensor, cfg: FlashVIDConfig) -> Prepared:
    """Run the torch pipeline once to get every stage's inputs."""
    ops = pipeline.TorchOps()
    frame_means = x.mean(dim=1, dtype=work_dtype(x.dtype))
    seg = pipeline.make_segments(pipeline.segment_lengths(x, [x.shape[0]], cfg, None,
                                                          frame_means), x.device)
    budget = cfg.budget(x.shape[1])
    picked = pipeline.adts(x, a, cfg, ops, seg, budget.adts, frame_means)
    eligible = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    eligible.scatter_(1, picked, False)
    forest = pipeline.tstm(x, cfg, ops, seg, eligible, budget)
    _, _, targets, values = pipeline.trees(x, cfg, seg, forest)
    values = values.clone()  # the stage's result lives in a reused workspace
    plan = pipeline.spatial_plan(forest.counts, seg, budget, cfg)
    return Prepared(x, a, cfg, frame_means, seg, budget, eligible, forest, targets, values, plan)


# --------------------------------------------------------------------------- fast providers
def fast_stage(p: Prepared, stage: str, backend: str) -> Callable[[], object]:
    """A zero-argument callable running ``stage`` of the ``backend`` ("torch" | "triton")."""
    cfg = p.cfg.replace(backend=backend)
    if stage == "adts":
        return lambda: pipeline.adts(p.x, p.a, cfg, stage_ops(backend), p.seg, p.budget.adts,
                                     p.frame_means)
    if stage == "tstm":
        return lambda: pipeline.tstm(p.x, cfg, stage_ops(backend), p.seg, p.eligible, p.budget)
    if stage == "trees":
        return lambda: pipeline.trees(p.x, cfg, p.seg, p.forest)[3]
    if stage == "dpc":
        return lambda: pipeline.dpc(p.values, p.forest.counts, p.plan, cfg)
    return lambda: compress(p.x, p.a, cfg)


# --------------------------------------------------------------------------- reference provider
def reference_stage(p: Prepared, stage: str, x: torch.Tensor | None = None) -> Callable[[], object]:
    """The oracle's loop-level version of ``stage`` on the same inputs (on ``x`` if given: the
    float32 copy of half-precision tokens, for checking)."""
    x = p.x if x is None else x
    a = p.a.to(x.dtype) if x.dtype != p.a.dtype else p.a
    cfg = p.cfg
    if stage == "adts":
        return lambda: torch.cat([reference.select(x[s:e], a[s:e], p.budget.adts, cfg.selection,
                                                   cfg.dedupe) for s, e in p.spans])
    if stage == "tstm":
        return lambda: _reference_tstm(p, x)
    if stage == "trees":
        return lambda: _reference_trees(p, x)
    if stage == "dpc":
        return lambda: _reference_dpc(p)
    return lambda: reference.compress(x, a, cfg.replace(backend="reference"))


def _reference_tstm(p: Prepared, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    merged = torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)
    parent = torch.full(x.shape[:2], -1, dtype=torch.long, device=x.device)
    for s, e in p.spans:
        if e - s > 1 and p.cfg.temporal_threshold < 1.0:
            maxsim, par = reference.tstm_edges(x[s:e], p.eligible[s:e],
                                               p.cfg.temporal_merge == "ttm")
            merged[s:e], _ = reference.tstm_merged(maxsim, p.cfg.temporal_threshold,
                                                   p.budget.total * (e - s))
            parent[s:e] = par
    return merged, parent


def _reference_trees(p: Prepared, x: torch.Tensor) -> torch.Tensor:
    dim = x.shape[2]
    values = x.clone()
    for s, e in p.spans:
        if e - s > 1:
            values[s:e] = reference.tstm_aggregate(x[s:e], p.forest.merged[s:e],
                                                   p.forest.parent[s:e], p.cfg.aggregation)
    return values.reshape(-1, dim)[p.targets]


def _reference_dpc(p: Prepared) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per frame (assign, centres) in local indices, segment by segment as published."""
    out: list[tuple[torch.Tensor, torch.Tensor]] = []
    counts, clusters = p.forest.counts, p.plan.clusters
    starts = [0]
    for c in counts:
        starts.append(starts[-1] + c)
    for s, e in p.spans:
        frames = [t for t in range(s, e) if clusters[t] > 0]
        if not frames:
            continue
        dist = reference.segment_distances([p.values[starts[t] : starts[t + 1]]
                                            for t in range(s, e)])
        knn = [min(clusters[t], p.cfg.dpc_knn) for t in range(s, e)]
        nearest = torch.topk(dist, max(knn), dim=-1, largest=False).values
        for t in frames:
            c, i = counts[t], t - s
            out.append(reference.dpc_knn(dist[i, :c, :c], nearest[i, :c, : knn[i]], clusters[t]))
    return out


# --------------------------------------------------------------------------- checks
def check(stage: str, got: object, want: object, p: Prepared) -> tuple[bool, str]:
    """(agrees, detail): indices exactly, values within a per-dtype tolerance."""
    if stage == "adts":
        bad = int((got != want).sum())
        return bad == 0, f"{bad} picks differ"
    if stage == "tstm":
        merged_ok = torch.equal(got.merged, want[0])
        parents_ok = torch.equal(got.parent[got.merged], want[1][want[0]]) if merged_ok else False
        return merged_ok and parents_ok, "merge decisions/parents " + (
            "equal" if merged_ok and parents_ok else "differ")
    if stage == "trees":
        err = (got.double() - want.double()).abs().max().item() if want.numel() else 0.0
        scale = max(1.0, want.double().abs().max().item()) if want.numel() else 1.0
        return err <= _tolerance(p.x.dtype) * scale, f"max abs err {err:.2e}"
    if stage == "dpc":
        assign, centres = got
        bad = _dpc_mismatches(p, assign, centres, want)
        return bad == 0, f"{bad} frames differ"
    ok = torch.equal(got.indices, want.indices) and torch.equal(got.kinds, want.kinds)
    err = (got.tokens.double() - want.tokens.double()).abs().max().item() if ok else math.inf
    scale = max(1.0, want.tokens.double().abs().max().item()) if ok else 1.0
    ok = ok and err <= _tolerance(p.x.dtype) * scale
    return ok, f"indices {'equal' if ok else 'differ'}, max abs err {err:.2e}"


def _dpc_mismatches(p, assign, centres, want) -> int:
    counts, clusters = p.forest.counts, p.plan.clusters
    row, cluster, frame_results, bad = 0, 0, iter(want), 0
    for c, k in zip(counts, clusters):
        if k > 0:
            w_assign, w_centres = next(frame_results)
            g_centres = centres[cluster : cluster + k] - row
            g_assign = assign[row : row + c] - cluster
            bad += int(not (torch.equal(g_centres, w_centres) and torch.equal(g_assign, w_assign)))
        row += c
        cluster += k
    return bad


def _tolerance(dtype: torch.dtype) -> float:
    return {torch.float32: 1e-5, torch.float64: 1e-10}.get(dtype, 4e-2)
