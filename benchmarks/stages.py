"""The timed units: each stage of each provider on shared inputs, and its reference answer.

Every provider gets the same stage inputs (prepared once with the torch backend), so a stage's
time and its correctness check cover that stage alone. The stages are those of the pipeline,
called by their names (``flashvid.stages`` for the fast backends, ``flashvid.reference`` for
the oracle):

* ``dyseg``: frame means, transition similarities, cuts -> segment lengths;
* ``adts``: the backend's frame statistics and the selection of every frame -> [F, k] picks;
* ``tstm``: the backend's adjacent-frame similarities, edges, threshold and soft threshold ->
  merge decisions and parents;
* ``trees``: roots and tree aggregation -> values of the spatial-merge candidates;
* ``dpc``: the DPC-kNN spatial merge -> per-frame centres and assignments;
* ``compress``: the whole call.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from flashvid import reference
from flashvid.backends import get_backend, work_dtype
from flashvid.compress import compress
from flashvid.config import Budget, FlashVIDConfig
from flashvid.stages import adts as adts_stage
from flashvid.stages import dpc as dpc_stage
from flashvid.stages import dyseg as dyseg_stage
from flashvid.stages import tstm as tstm_stage
from flashvid.stages.dpc import Clusters
from flashvid.stages.dyseg import Segments
from flashvid.stages.trees import trees
from flashvid.stages.tstm import Forest
from flashvid.workspace import Workspace

STAGES = ("dyseg", "adts", "tstm", "trees", "dpc", "compress")
# |got - want| <= TOLERANCE[dtype] * max(1, max |want|) for values (indices are compared exactly)
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 2e-2, torch.bfloat16: 4e-2}


@dataclass
class Prepared:
    """Shared stage inputs for one video (the torch pipeline's intermediate results)."""

    x: torch.Tensor
    a: torch.Tensor
    cfg: FlashVIDConfig
    budget: Budget
    seg: Segments
    event_mean: torch.Tensor | None
    picks: torch.Tensor
    eligible: torch.Tensor
    forest: Forest
    candidates: torch.Tensor
    counts: list[int]
    targets: torch.Tensor
    values: torch.Tensor
    clusters: list[int]
    keep: list[bool]


def prepare(x: torch.Tensor, a: torch.Tensor, cfg: FlashVIDConfig) -> Prepared:
    """Run the torch stages once (in a workspace of fresh tensors, so the results stay
    valid)."""
    backend = get_backend("torch")
    frames, n, _ = x.shape
    budget = cfg.budget(n)
    seg = dyseg_stage.from_lengths(_dyseg(x, cfg), x.device)
    means = dyseg_stage.frame_means(x, work_dtype(x.dtype))
    event_mean = adts_stage.event_mean(means, seg) if cfg.selection == "adts" else None
    with Workspace(x.device, pooled=False) as ws:
        picks = _fast_adts(x, a, cfg, budget, event_mean, backend, ws)
    eligible = torch.ones(frames, n, dtype=torch.bool, device=x.device)
    eligible.scatter_(1, picks, False)
    with Workspace(x.device, pooled=False) as ws:
        forest = _fast_tstm(x, cfg, budget, seg, eligible, backend, ws)
    candidates = tstm_stage.candidates(forest, eligible, seg, cfg.dedupe)
    counts = candidates.sum(dim=1).tolist()
    with Workspace(x.device, pooled=False) as ws:
        tree = trees(x, forest, candidates, sum(counts), seg, cfg.aggregation, ws)
    clusters, keep = dpc_stage.published_counts(counts, seg, (budget.total,) * frames,
                                                budget.adts, cfg.spatial_merge)
    return Prepared(x, a, cfg, budget, seg, event_mean, picks, eligible, forest, candidates,
                    counts, tree.targets, tree.values, clusters, keep)


# --------------------------------------------------------------------------- fast providers
def fast_stage(p: Prepared, stage: str, backend_name: str) -> Callable[[], object]:
    """A zero-argument callable running ``stage`` of the ``backend_name`` backend (in a
    workspace of its own, as the pipeline runs it)."""
    cfg = p.cfg.replace(backend=backend_name)
    backend = get_backend(backend_name)
    device = p.x.device

    def in_workspace(fn):
        def call():
            with Workspace(device) as ws:
                out = fn(ws)
                return out.clone() if isinstance(out, torch.Tensor) else out
        return call

    if stage == "dyseg":
        return lambda: _dyseg(p.x, cfg)
    if stage == "adts":
        return in_workspace(lambda ws: _fast_adts(p.x, p.a, cfg, p.budget, p.event_mean,
                                                  backend, ws))
    if stage == "tstm":
        return in_workspace(lambda ws: _fast_tstm(p.x, cfg, p.budget, p.seg, p.eligible,
                                                  backend, ws))
    if stage == "trees":
        return in_workspace(lambda ws: trees(p.x, p.forest, p.candidates, sum(p.counts), p.seg,
                                             cfg.aggregation, ws).values)
    if stage == "dpc":
        return in_workspace(lambda ws: dpc_stage.dpc(p.values, p.targets, p.counts, p.clusters,
                                                     p.keep, cfg.dpc_knn, ws))
    return lambda: compress(p.x, p.a, cfg)


def _dyseg(x: torch.Tensor, cfg: FlashVIDConfig) -> list[int]:
    if not (cfg.segment and x.shape[0] > 1):
        return [x.shape[0]]
    means = dyseg_stage.frame_means(x, work_dtype(x.dtype))
    sim = dyseg_stage.transition_similarity(means).tolist()
    return dyseg_stage.published_lengths(sim, (x.shape[0],), cfg.segment_threshold,
                                         cfg.min_segments, cfg.complementary_segments)


def _fast_adts(x, a, cfg, budget, event_mean, backend, ws) -> torch.Tensor:
    gram = budget.adts > 0 and cfg.selection != "attention"
    stats = None
    if gram:
        stats = backend.token_norms(x, ws, unit=True)
        stats = backend.frame_stats(x, stats, ws, event_mean=event_mean, gram=True)
    return adts_stage.adts(x, a, stats, cfg.selection, budget.adts, cfg.dedupe, backend, ws)


def _fast_tstm(x, cfg, budget, seg, eligible, backend, ws) -> Forest:
    pairs = (budget.merge > 0 and tstm_stage.runs(cfg.temporal_threshold, seg)
             and cfg.temporal_merge == "tstm")
    stats = None
    if pairs:
        stats = backend.token_norms(x, ws, unit=True)
    budgets = torch.full((x.shape[0],), budget.total, dtype=torch.long, device=x.device)
    return tstm_stage.tstm(x, stats, eligible, seg, cfg.temporal_threshold, cfg.temporal_merge,
                           budgets, backend, ws)


# --------------------------------------------------------------------------- reference provider
def reference_stage(p: Prepared, stage: str, x: torch.Tensor | None = None) -> Callable[[], object]:
    """The oracle's version of ``stage`` on the same inputs (on ``x`` if given: the float32
    copy of half-precision tokens, for checking)."""
    x = p.x if x is None else x
    a = p.a.to(x.dtype) if x.dtype != p.a.dtype else p.a
    cfg = p.cfg
    lengths = p.seg.lengths
    if stage == "dyseg":
        return lambda: reference.dyseg(x, cfg)
    if stage == "adts":
        return lambda: reference.adts(x, a, lengths, cfg, p.budget.adts)
    if stage == "tstm":
        return lambda: reference.tstm(x, p.eligible, lengths, cfg,
                                      [p.budget.total] * x.shape[0])
    if stage == "trees":
        return lambda: _reference_trees(p, x)
    if stage == "dpc":
        return lambda: _reference_dpc(p)
    return lambda: reference.compress(x, a, cfg.replace(backend="reference"))


def _reference_trees(p: Prepared, x: torch.Tensor) -> torch.Tensor:
    values = reference.trees(x, p.forest.parent, p.forest.merged, p.cfg.aggregation)
    return values.reshape(-1, x.shape[2])[p.candidates.reshape(-1)]


def _reference_dpc(p: Prepared) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per clustered frame (assign, centres) in local indices, segment by segment."""
    out: list[tuple[torch.Tensor, torch.Tensor]] = []
    frame_values = list(p.values.split(p.counts))
    for start, end in reference.spans(p.seg.lengths):
        if any(p.clusters[start:end]) and not p.keep[start]:
            results = reference.dpc(frame_values[start:end], p.clusters[start:end],
                                    p.cfg.dpc_knn)
            out += [r for r in results if r is not None]
    return out


# --------------------------------------------------------------------------- checks
def check(stage: str, got: object, want: object, p: Prepared) -> tuple[bool, str]:
    """(agrees, detail): indices exactly, values within the tolerance table."""
    if stage == "dyseg":
        return got == want, f"segments {'equal' if got == want else 'differ'}"
    if stage == "adts":
        bad = int((got != want).sum())
        return bad == 0, f"{bad} picks differ"
    if stage == "tstm":
        merged_ok = torch.equal(got.merged, want[1])
        parents_ok = torch.equal(got.parent[got.merged], want[0][want[1]]) if merged_ok else False
        return merged_ok and parents_ok, "merge decisions/parents " + (
            "equal" if merged_ok and parents_ok else "differ")
    if stage == "trees":
        err = (got.double() - want.double()).abs().max().item() if want.numel() else 0.0
        scale = max(1.0, want.double().abs().max().item()) if want.numel() else 1.0
        return err <= TOLERANCE[p.x.dtype] * scale, f"max abs err {err:.2e}"
    if stage == "dpc":
        bad = _dpc_mismatches(p, got, want)
        return bad == 0, f"{bad} frames differ"
    ok = torch.equal(got.indices, want.indices) and torch.equal(got.kinds, want.kinds)
    err = (got.tokens.double() - want.tokens.double()).abs().max().item() if ok else math.inf
    scale = max(1.0, want.tokens.double().abs().max().item()) if ok else 1.0
    ok = ok and err <= TOLERANCE[p.x.dtype] * scale
    return ok, f"indices {'equal' if ok else 'differ'}, max abs err {err:.2e}"


def _dpc_mismatches(p: Prepared, got: Clusters, want) -> int:
    """Frames whose centres or assignments differ (clusters numbered frame after frame)."""
    row, cluster, frame_results, bad = 0, 0, iter(want), 0
    for c, k, kept in zip(p.counts, p.clusters, p.keep):
        if k > 0 and not kept:
            w_assign, w_centres = next(frame_results)
            g_centres = got.centres[cluster : cluster + k]
            g_assign = got.row[row : row + c] - cluster
            bad += int(not (torch.equal(g_centres, p.targets[row + w_centres])
                            and torch.equal(g_assign, w_assign)))
            cluster += k
        elif kept:
            cluster += c
        row += c
    return bad
