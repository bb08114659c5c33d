"""The FlashVID oracle: loop-level PyTorch written from SPEC.md §4-§9 for clarity, not speed.

Every test compares the fast backends to this module, and the parity fixtures compare this module
to the published code. It is never changed to make a kernel pass.

Precision follows the published code (SPEC Q5): segmentation and TSTM run in the input dtype,
ADTS and DPC distances in float32 (float64 stays float64, so the oracle can run in double).
Where bit-level parity with the published float32 results depends on the order of operations
(the column weights, the event term, the padded batch given to ``torch.cdist``), this module
follows that order and says so.
"""

from __future__ import annotations

import math

import torch

from ..config import FlashVIDConfig
from ..types import KIND_ADTS, KIND_CLUSTER, KIND_ROOT, CompressedVideo


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half inputs; float32 and float64 stay as they are."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """x / ||x||_2 along the last dim (a zero row stays zero instead of becoming NaN)."""
    return x / x.norm(p=2, dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)


# --------------------------------------------------------------------------- §5 DySeg
def dyseg(tokens: torch.Tensor, threshold: float, min_segments: int,
          complementary: bool) -> list[int]:
    """Segment lengths of a [F, N, D] video (SPEC §5), in the input dtype.

    Cuts where the cosine similarity of adjacent frame-mean features is < threshold; then, if
    fewer than ``min_segments`` segments result, the smallest remaining similarities become cuts
    as well (ties to the lowest index). A cut is never taken twice, so no segment is empty and a
    video shorter than ``min_segments`` frames gets one segment per frame.
    """
    frames = tokens.shape[0]
    g = unit_rows(tokens.mean(dim=1))  # [F, D] frame means
    sim = torch.sum(g[:-1] * g[1:], dim=-1)  # [F-1] transition similarities
    cuts = set((sim < threshold).nonzero().flatten().tolist())
    missing = min_segments - (len(cuts) + 1)
    if complementary and missing > 0 and frames > 1:
        candidates = sim.clone()
        candidates[sim < threshold] = 1.0  # the published code's marker for existing cuts
        order = torch.sort(candidates, stable=True).indices.tolist()
        for t in order[: min(missing, frames - 1)]:
            cuts.add(t)
    bounds = [-1, *sorted(cuts), frames - 1]
    return [b - a for a, b in zip(bounds, bounds[1:]) if b - a > 0]


# --------------------------------------------------------------------------- §6 ADTS
def column_weights(x: torch.Tensor, a: torch.Tensor, method: str) -> list[torch.Tensor]:
    """The per-column factors of the calibrated distance, applied left to right (SPEC §6).

    ``adts_v1``: [1e6 * a]; ``adts``: [1e6 * a, e] with e_j = mean_c <x_j, mean_n x_c> over the
    frames c of the segment (the published einsum-then-mean order); others: [].
    """
    if method not in ("adts", "adts_v1"):
        return []
    w = x.to(work_dtype(x.dtype))
    weights = [a.to(w.dtype) * 1e6]
    if method == "adts":
        frame_means = w.mean(dim=1)  # [F_s, D]
        weights.append(torch.einsum("bnd,cd->bcn", w, frame_means).mean(dim=1))  # [F_s, N]
    return weights


def select(x: torch.Tensor, a: torch.Tensor, k: int, method: str,
           dedupe: bool = False) -> torch.Tensor:
    """[F_s, k] sorted local indices picked in each frame of a segment (SPEC §6).

    ``attention``: top-k importance (ties to the lowest index). The other methods run the greedy
    max-min selection on the cosine distance D'(i, j) = (1 - <x^_i, x^_j>) * w_j: first pick =
    argmax over columns of the column's second-smallest value, then k-1 steps of argmax of the
    running minimum. ``adts_v1`` and ``diversity`` exclude picked tokens (score -1, as published);
    ``adts`` does not (quirk Q2) unless ``dedupe``, which excludes with -inf for every method.
    """
    frames, n, _ = x.shape
    if k == 0:
        return torch.zeros(frames, 0, dtype=torch.long, device=x.device)
    if method == "attention":
        order = torch.sort(a, dim=-1, descending=True, stable=True).indices
        return order[:, :k].sort(dim=-1).values
    w = x.to(work_dtype(x.dtype))
    xh = unit_rows(w)
    dist = 1.0 - torch.bmm(xh, xh.transpose(1, 2))  # [F_s, N, N]: row = picked, column = candidate
    for factor in column_weights(x, a, method):
        dist = dist * factor[:, None, :]
    exclude = dedupe or method in ("adts_v1", "diversity")
    fill = -math.inf if dedupe else -1.0
    picks = []
    for f in range(frames):
        d = dist[f]
        if n >= 2:
            first = int(torch.argmax(torch.topk(d, 2, dim=0, largest=False).values[1]))
        else:
            first = 0
        chosen = [first]
        running = d[first].clone()  # min over picked rows, per column
        for _ in range(k - 1):
            score = running.clone()
            if exclude:
                score[chosen] = fill
            j = int(torch.argmax(score))
            chosen.append(j)
            running = torch.minimum(running, d[j])
        picks.append(sorted(chosen))
    return torch.tensor(picks, dtype=torch.long, device=x.device)


# --------------------------------------------------------------------------- §7 TSTM
def tstm_edges(x: torch.Tensor, eligible: torch.Tensor,
               same_position: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """maxsim [F_s, N] and parent [F_s, N] (SPEC §7), in the input dtype.

    For t >= 1, token n's most cosine-similar eligible token of frame t-1 (first index on ties),
    with similarity -1 for ineligible tokens; frame 0 has maxsim -1 and parent -1.
    ``same_position`` (the TTM baseline) only considers token n of frame t-1.
    """
    frames, n, _ = x.shape
    xh = unit_rows(x)
    maxsim = torch.full((frames, n), -1.0, dtype=x.dtype, device=x.device)
    parent = torch.full((frames, n), -1, dtype=torch.long, device=x.device)
    if frames > 1 and same_position:
        sim = torch.sum(xh[1:] * xh[:-1], dim=-1)  # [F_s-1, N]
        maxsim[1:] = torch.where(eligible[1:] & eligible[:-1], sim, -1.0)
        parent[1:] = torch.arange(n, device=x.device)
    elif frames > 1:
        sim = torch.bmm(xh[1:], xh[:-1].transpose(1, 2))  # [F_s-1, N(current), N(previous)]
        sim[~eligible[1:]] = -1.0
        sim.transpose(1, 2)[~eligible[:-1]] = -1.0
        best, arg = sim.max(dim=-1)
        maxsim[1:], parent[1:] = best, arg
    return maxsim, parent


def tstm_merged(maxsim: torch.Tensor, threshold: float, lower: int) -> tuple[torch.Tensor, bool]:
    """Which tokens merge into their parent, and whether the soft threshold was needed (SPEC §7).

    merged = maxsim > threshold (strict). If fewer than ``lower`` tokens would remain, the
    threshold becomes the k-th largest maxsim with k = F_s*N - lower (at least -1 + 1e-6).
    """
    merged = maxsim > threshold
    if int((~merged).sum()) >= lower:
        return merged, False
    k = maxsim.numel() - lower
    if k <= 0:
        return torch.zeros_like(merged), True
    soft = float(torch.topk(maxsim.flatten(), k).values[-1])
    return maxsim > max(soft, -1.0 + 1e-6), True


def tstm_aggregate(x: torch.Tensor, merged: torch.Tensor, parent: torch.Tensor,
                   aggregation: str) -> torch.Tensor:
    """[F_s, N, D] tree values, valid at the roots (SPEC §7), in the input dtype.

    Frames run from last to first: each root is finalised as acc / cnt, each merged token's
    accumulated sum is added to its parent. ``official`` counts +1 per direct child (quirk Q1:
    subtree sum / (1 + direct children)); ``mean`` propagates subtree sizes (the true tree mean).
    """
    frames, n, _ = x.shape
    acc = x.clone()
    cnt = torch.ones(frames, n, dtype=x.dtype, device=x.device)
    for t in range(frames - 1, -1, -1):
        roots = ~merged[t]
        acc[t][roots] = acc[t][roots] / cnt[t][roots].unsqueeze(-1)
        kids = merged[t].nonzero().flatten()
        if t == 0 or kids.numel() == 0:
            continue
        targets = parent[t][kids]
        acc[t - 1] += torch.zeros_like(acc[t - 1]).index_add_(0, targets, acc[t][kids])
        if aggregation == "official":
            cnt[t - 1] += torch.bincount(targets, minlength=n).to(x.dtype)
        else:
            cnt[t - 1] += torch.zeros_like(cnt[t - 1]).index_add_(0, targets, cnt[t][kids])
    return acc


# --------------------------------------------------------------------------- §8 DPC-kNN
def density_ramp(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The deterministic density tie-break 1e-6 * (n-1-i)/n (replaces the published noise)."""
    i = torch.arange(n, dtype=torch.float64, device=device)
    return (1e-6 * (n - 1 - i) / n).to(dtype)


def segment_distances(values: list[torch.Tensor]) -> torch.Tensor:
    """[F_s, P, P] distances ||z_i - z_j|| / sqrt(D) between the tokens of each frame; +inf in
    the columns of padding.

    As in the published code, the frames of one segment are zero-padded to the largest count and
    given to ``torch.cdist`` in one batch: its matmul path (taken above 25 rows) depends on the
    padded shape, and bit-level parity depends on it.
    """
    width = max(v.shape[0] for v in values)
    dim = values[0].shape[1]
    dtype = work_dtype(values[0].dtype)
    batch = torch.zeros(len(values), width, dim, dtype=dtype, device=values[0].device)
    for f, v in enumerate(values):
        batch[f, : v.shape[0]] = v.to(dtype)
    dist = torch.cdist(batch, batch) / math.sqrt(dim)
    counts = torch.tensor([v.shape[0] for v in values], device=dist.device)
    padding = torch.arange(width, device=dist.device)[None, :] >= counts[:, None]  # [F_s, P]
    return dist.masked_fill(padding[:, None, :], math.inf)


def dpc_knn(dist: torch.Tensor, nearest: torch.Tensor,
            clusters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """DPC-kNN on one frame (SPEC §8): ``dist`` [c, c], ``nearest`` [c, knn] ascending distances.

    Returns (assign [c], centres [clusters]): centres in descending score order, each point
    assigned to its nearest centre (first on ties), each centre to itself.
    """
    c = dist.shape[0]
    density = torch.mean(-(nearest**2), dim=-1).exp()
    density = density + density_ramp(c, density.dtype, density.device)
    denser = density[None, :] > density[:, None]  # [i, j]: j is denser than i
    delta = torch.where(denser, dist, dist.max()).min(dim=-1).values
    score = delta * density
    centres = torch.sort(score, descending=True, stable=True).indices[:clusters]
    assign = dist[:, centres].argmin(dim=-1)
    assign[centres] = torch.arange(clusters, device=dist.device)
    return assign, centres


# --------------------------------------------------------------------------- §4-§9 pipeline
def compress(tokens: torch.Tensor, cls_attn: torch.Tensor,
             config: FlashVIDConfig) -> CompressedVideo:
    """The whole vision-side pipeline on one video (inputs already validated)."""
    frames, n, dim = tokens.shape
    device = tokens.device
    budget = config.budget(n)
    if config.segment:
        lengths = dyseg(tokens, config.segment_threshold, config.min_segments,
                        config.complementary_segments)
    else:
        lengths = [frames]

    out = _Rows()
    parents = torch.full((frames, n), -1, dtype=torch.long, device=device)
    row_of = torch.full((frames * n,), -1, dtype=torch.long, device=device)  # pre-sort row ids
    start = 0
    for length in lengths:
        x = tokens[start : start + length]
        picked = select(x, cls_attn[start : start + length], budget.adts, config.selection,
                        config.dedupe)
        eligible = torch.ones(length, n, dtype=torch.bool, device=device)
        eligible.scatter_(1, picked, False)
        for t in range(length):
            for i in picked[t].tolist():
                g = (start + t) * n + i
                row = out.add(g, KIND_ADTS, tokens[start + t, i])
                if row_of[g] < 0:  # a duplicate pick (Q2) represents nothing
                    row_of[g] = row
        if budget.merge > 0:
            _merge_segment(x, eligible, budget, config, start, out, row_of, parents)
        start += length

    order = sorted(range(len(out.index)), key=out.index.__getitem__)  # stable: ADTS rows first
    rank = torch.empty(len(order), dtype=torch.long, device=device)
    rank[order] = torch.arange(len(order), device=device)
    source = torch.where(row_of >= 0, rank[row_of.clamp_min(0)] if order else row_of, row_of)
    return CompressedVideo(
        tokens=torch.stack([out.value[r] for r in order]) if order else tokens.new_zeros(0, dim),
        indices=torch.tensor([out.index[r] for r in order], dtype=torch.long, device=device),
        kinds=torch.tensor([out.kind[r] for r in order], dtype=torch.int8, device=device),
        source=source.view(frames, n),
        segment_lengths=torch.tensor(lengths, dtype=torch.long, device=device),
        parents=parents,
        budget=budget,
        config=config,
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


def _merge_segment(x: torch.Tensor, eligible: torch.Tensor, budget, config: FlashVIDConfig,
                   start: int, out: _Rows, row_of: torch.Tensor, parents: torch.Tensor) -> None:
    """TSTM (SPEC §7) and the spatial merge (§8) of one segment starting at frame ``start``.

    Adds the merged rows to ``out``; sets ``row_of`` for the non-ADTS tokens and ``parents``.
    """
    length, n, _ = x.shape
    gids = start * n + torch.arange(length * n, device=x.device).view(length, n)
    if length == 1:
        # Quirk Q3: one frame has no temporal merging, and all N tokens (ADTS ones included) go to
        # the spatial merge; dedupe keeps only the non-ADTS ones there.
        candidates = eligible if config.dedupe else torch.ones_like(eligible)
        root_of = gids
        values = x
    else:
        if config.temporal_threshold < 1.0:
            maxsim, parent = tstm_edges(x, eligible, config.temporal_merge == "ttm")
            merged, _ = tstm_merged(maxsim, config.temporal_threshold,
                                    (budget.adts + budget.merge) * length)
        else:  # temporal merging disabled: every token is its own tree
            parent = torch.full((length, n), -1, dtype=torch.long, device=x.device)
            merged = torch.zeros(length, n, dtype=torch.bool, device=x.device)
        values = tstm_aggregate(x, merged, parent, config.aggregation)
        root_of = gids.clone()
        for t in range(1, length):
            parents[start + t][merged[t]] = gids[t - 1][parent[t][merged[t]]]
            root_of[t] = torch.where(merged[t], root_of[t - 1][parent[t].clamp_min(0)], gids[t])
        candidates = ~merged & eligible
    frame_roots = [candidates[t].nonzero().flatten() for t in range(length)]
    counts = [int(r.numel()) for r in frame_roots]

    total = sum(counts)
    ratio = budget.merge * length / total if total else math.inf
    if not config.spatial_merge or ratio >= 1.0:
        for t, roots in enumerate(frame_roots):
            for i in roots.tolist():
                row = out.add(int(gids[t, i]), KIND_ROOT, values[t, i])
                if eligible[t, i]:  # Q3: an ADTS token stays represented by its ADTS row
                    row_of[gids[t, i]] = row
    else:
        frame_values = [values[t][frame_roots[t]] for t in range(length)]
        dist = segment_distances(frame_values)
        k_per_frame = [math.ceil(c * ratio) for c in counts]
        knn = [min(k, config.dpc_knn) for k in k_per_frame]
        nearest = torch.topk(dist, max(knn), dim=-1, largest=False).values
        for t, (c, k) in enumerate(zip(counts, k_per_frame)):
            if k == 0:
                continue
            assign, centres = dpc_knn(dist[t, :c, :c], nearest[t, :c, : knn[t]], k)
            sums = torch.zeros(k, x.shape[-1], dtype=x.dtype, device=x.device)
            sums.index_add_(0, assign, frame_values[t])
            means = sums / torch.bincount(assign, minlength=k).unsqueeze(-1).to(x.dtype)
            roots = frame_roots[t]
            rows = [out.add(int(gids[t, roots[centre]]), KIND_CLUSTER, means[j])
                    for j, centre in enumerate(centres.tolist())]
            rows = torch.tensor(rows, dtype=torch.long, device=x.device)
            is_adts = ~eligible[t][roots]  # Q3 only: those stay represented by their ADTS row
            row_of[gids[t][roots[~is_adts]]] = rows[assign[~is_adts]]
    # every merged token is represented where its tree root went
    if length > 1:
        members = eligible & (root_of != gids)
        row_of[gids[members]] = row_of[root_of[members]]
