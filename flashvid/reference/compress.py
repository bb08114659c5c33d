"""The reference pipeline: dyseg -> adts -> tstm -> trees -> dpc -> assemble, loop by loop."""

from __future__ import annotations

import math

import torch

from ..config import FlashVIDConfig
from ..plan import resolve
from ..types import KIND_ADTS, KIND_CLUSTER, KIND_ROOT, CompressedVideo
from ..validation import check_representable
from .adts import adts
from .dpc import dpc, exact_cluster_counts
from .dyseg import dyseg, frame_means
from .trees import trees
from .tstm import tstm
from .util import spans


def compress(tokens: torch.Tensor, cls_attn: torch.Tensor, config: FlashVIDConfig,
             num_tokens: int | None = None) -> CompressedVideo:
    """The whole vision-side pipeline on one video (inputs already validated).

    Decisions and merged values are computed in float32 for half-precision input (float64 for
    float64); merged rows are cast back to the input dtype, ADTS rows are copied. In exact-count
    mode (``config.exact_count`` or ``num_tokens``) the output has exactly K rows
    (``config.exact_budget``), at unique positions.
    """
    frames, n, dim = tokens.shape
    device = tokens.device
    plan = resolve(config, [frames], n, dim, tokens.dtype, device, [num_tokens])
    exact, budget = plan.exact, plan.budget
    frame_budgets = list(plan.frame_budgets)
    merge = [b - budget.adts for b in frame_budgets]
    user_config = config
    if plan.dedupe != config.dedupe:
        config = config.replace(dedupe=True)  # exact-count mode: no position twice (Q2, Q3 off)
    lengths = dyseg(tokens, config, exact)
    means = frame_means(tokens) if config.selection == "adts" else None
    picks = adts(tokens, cls_attn, lengths, config, budget.adts, means)  # [F, k]
    eligible = torch.ones(frames, n, dtype=torch.bool, device=device)
    eligible.scatter_(1, picks, False)

    out = _Rows()
    row_of = torch.full((frames * n,), -1, dtype=torch.long, device=device)  # pre-sort row ids
    for t in range(frames):
        for i in picks[t].tolist():
            row = out.add(t * n + i, KIND_ADTS, tokens[t, i])
            if row_of[t * n + i] < 0:  # a duplicate pick (Q2) represents nothing
                row_of[t * n + i] = row
    parents = torch.full((frames, n), -1, dtype=torch.long, device=device)
    if sum(merge) > 0:
        parent, merged = tstm(tokens, eligible, lengths, config, frame_budgets)
        values = trees(tokens, parent, merged, config.aggregation)
        root_of = torch.arange(frames * n, device=device).view(frames, n)
        for t in range(1, frames):
            parents[t][merged[t]] = (t - 1) * n + parent[t][merged[t]]
            root_of[t] = torch.where(merged[t], root_of[t - 1][parent[t].clamp_min(0)],
                                     root_of[t])
        for start, end in spans(lengths):
            _spatial_merge(start, end, values, merged, eligible, sum(merge[start:end]), exact,
                           config, out, row_of)
        # every merged token is represented where its tree root went
        members = eligible & (root_of != torch.arange(frames * n, device=device).view(frames, n))
        row_of.view(frames, n)[members] = row_of[root_of[members]]

    order = sorted(range(len(out.index)), key=out.index.__getitem__)  # stable: ADTS rows first
    rank = torch.empty(len(order), dtype=torch.long, device=device)
    rank[order] = torch.arange(len(order), device=device)
    source = torch.where(row_of >= 0, rank[row_of.clamp_min(0)] if order else row_of, row_of)
    rows = [out.value[r] for r in order]
    merged_rows = [out.value[r] for r in order if out.kind[r] != KIND_ADTS]
    if merged_rows:
        check_representable(torch.stack(merged_rows), tokens.dtype, config.aggregation)
    return CompressedVideo(
        tokens=torch.stack([v.to(tokens.dtype) for v in rows]) if order
        else tokens.new_zeros(0, dim),
        indices=torch.tensor([out.index[r] for r in order], dtype=torch.long, device=device),
        kinds=torch.tensor([out.kind[r] for r in order], dtype=torch.int8, device=device),
        source=source.view(frames, n),
        segment_starts=_starts(lengths, device),
        parents=parents,
        budget=budget,
        config=user_config,
    )


class _Rows:
    """Output rows in the published concatenation order, before the sort by position."""

    def __init__(self) -> None:
        self.index: list[int] = []
        self.kind: list[int] = []
        self.value: list[torch.Tensor] = []

    def add(self, index: int, kind: int, value: torch.Tensor) -> int:
        self.index.append(index)
        self.kind.append(kind)
        self.value.append(value)
        return len(self.index) - 1


def _spatial_merge(start: int, end: int, values: torch.Tensor, merged: torch.Tensor,
                   eligible: torch.Tensor, target: int, exact: bool, config: FlashVIDConfig,
                   out: _Rows, row_of: torch.Tensor) -> None:
    """The spatial merge (§8) of the segment [start, end) down to ``target`` rows: adds its
    rows to ``out`` and sets ``row_of`` for its candidates (ADTS candidates stay represented by
    their ADTS row). Frame t gets ceil(c_t * target / C) clusters (``exact``: the exact split
    of ``dpc.exact_cluster_counts``)."""
    length, n = end - start, values.shape[1]
    if length == 1:
        # Quirk Q3: one frame has no temporal merging, and all N tokens (ADTS ones included) go
        # to the spatial merge; dedupe keeps only the non-ADTS ones there.
        candidates = eligible[start:end] if config.dedupe else torch.ones_like(eligible[start:end])
    else:
        candidates = ~merged[start:end] & eligible[start:end]
    frame_roots = [candidates[t].nonzero().flatten() for t in range(length)]
    counts = [int(r.numel()) for r in frame_roots]
    total = sum(counts)
    ratio = target / total if total else math.inf
    if not config.spatial_merge or ratio >= 1.0:
        for t, roots in enumerate(frame_roots):
            for i in roots.tolist():
                g = (start + t) * n + i
                row = out.add(g, KIND_ROOT, values[start + t, i])
                if eligible[start + t, i]:
                    row_of[g] = row
        return
    frame_values = [values[start + t][frame_roots[t]] for t in range(length)]
    clusters = exact_cluster_counts(counts, target) if exact else \
        [math.ceil(c * ratio) for c in counts]
    for t, result in enumerate(dpc(frame_values, clusters, config.dpc_knn)):
        if result is None:
            continue
        assign, centres = result
        k = clusters[t]
        sums = torch.zeros(k, values.shape[-1], dtype=values.dtype, device=values.device)
        sums.index_add_(0, assign, frame_values[t])
        means = sums / torch.bincount(assign, minlength=k).unsqueeze(-1).to(values.dtype)
        roots = frame_roots[t]
        gids = (start + t) * n + roots
        rows = torch.tensor([out.add(int(gids[centre]), KIND_CLUSTER, means[j])
                             for j, centre in enumerate(centres.tolist())],
                            dtype=torch.long, device=values.device)
        is_adts = ~eligible[start + t][roots]
        row_of[gids[~is_adts]] = rows[assign[~is_adts]]


def _starts(lengths: list[int], device: torch.device) -> torch.Tensor:
    """[F] bool: True for the first frame of each segment."""
    starts = torch.zeros(sum(lengths), dtype=torch.bool, device=device)
    starts[[start for start, _ in spans(lengths)]] = True
    return starts
