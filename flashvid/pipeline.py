"""The fast FlashVID pipeline: segment -> select -> edges -> trees -> spatial merge -> assemble.

Everything is batched over frames (and over videos: a batch is a flat frame list whose segments
never cross a video boundary). The two heavy stages, ADTS selection and TSTM edges, come from a
:class:`StageOps` implementation: :class:`TorchOps` (batched PyTorch, the CPU path) or the Triton
kernels (``flashvid.triton_ops``). There are no per-token or per-frame Python loops; the host
synchronises twice on the common path, where output sizes depend on the data: the segment cuts
(with the input checks) and the per-frame spatial-merge sizes (with the soft-threshold check).

Arithmetic: ADTS, TSTM and DPC run in float32 (float64 for float64 input), whatever the input
dtype; merged tokens are cast back to the input dtype; ADTS tokens are copied bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import workspace
from .config import FlashVIDConfig
from .reference import unit_rows, work_dtype
from .spatial import CDIST_MM_ROWS, dpc_knn_frames, to_device
from .trees import aggregate_trees, compact, count_into, tree_roots
from .types import KIND_ADTS, KIND_CLUSTER, KIND_ROOT, CompressedVideo
from .validation import check_values


# --------------------------------------------------------------------------- stage interface
class StageOps:
    """The two heavy stages. Implementations must agree with flashvid.reference on float32."""


    def prepare(self, starts: list[int], lengths: list[int]) -> None:
        """The segment layout of the frames about to be processed (lets ``select`` compute the
        adjacent-frame similarities in the same pass over the tokens). Optional."""

    def select(self, x: torch.Tensor, weights: torch.Tensor | None,
               event_mean: torch.Tensor | None, k: int, exclude: bool,
               fill: float) -> torch.Tensor:
        """[F, k] int64 sorted local indices: greedy max-min selection in every frame.

        D'(i, j) = ((1 - cos(x_i, x_j)) * weights[f, j]) * <x_j, event_mean[f]> (each factor
        only when given); first pick = argmax_j of column j's second-smallest value, then k-1
        steps of argmax of the running minimum (ties to the lowest index); ``exclude`` scores
        picked tokens ``fill``.
        """
        raise NotImplementedError

    def edges(self, x: torch.Tensor, eligible: torch.Tensor,
              starts: list[int], lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(maxsim [F, N] work dtype, parent [F, N] int64): for each eligible token of a frame
        that is not a segment start, the most cosine-similar eligible token of the previous frame
        (first index on ties); maxsim = -1 and parent = -1 elsewhere."""
        raise NotImplementedError


class TorchOps(StageOps):
    """Batched PyTorch stages.

    The features are normalised once into a reused buffer (``flashvid.workspace``). One bmm
    gives every frame's Gram; with ``adts`` the segment mean mu_S rides along as an extra row
    of each frame, so the same product also yields the event term (1% more work instead of
    another pass over the tokens). After ``prepare`` the adjacent-pair similarities are computed
    in the same pass, one bmm per segment, and ``edges`` only masks and reduces them. Every
    cosine is computed as the reference computes it (x / ||x||, then bmm), so float32 picks and
    edges are bit-identical to the reference's (the event term is rounded differently, as the
    reference's einsum form costs a pass per frame of the segment).
    """


    def __init__(self) -> None:
        self._layout: tuple[list[int], list[int]] | None = None
        self._pairs: tuple[torch.Tensor, torch.Tensor] | None = None

    def prepare(self, starts, lengths):
        self._layout = (list(starts), list(lengths))

    @torch.no_grad()
    def _front(self, x: torch.Tensor, gram: bool, event_mean: torch.Tensor | None,
               layout: tuple[list[int], list[int]] | None):
        """(cosine Grams [F, N, N] | None, event [F, N] | None, pair similarities [F, N, N] |
        None): pairs[t] = <x^_t, x^_{t-1}> for the frames t that ``layout`` links to t-1,
        -1 elsewhere."""
        frames, n, dim = x.shape
        wd, dev = work_dtype(x.dtype), x.device
        # with the event term, mu_S becomes row n, padded with zero rows to a multiple of 8 (MKL
        # is markedly slower on odd row counts)
        extra = (-(-(n + 1) // 8) * 8 - n) if gram and event_mean is not None else 0
        unit = workspace.buffer("unit", (frames, n + extra, dim), wd, dev)
        norms = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=wd)
        norms = norms.clamp_min(torch.finfo(wd).tiny)
        torch.div(x, norms, out=unit[:, :n])  # half / float32 -> float32
        grams = event = pairs = None
        if gram:
            if extra:
                unit[:, n] = event_mean
                unit[:, n + 1 :] = 0.0
            full = torch.bmm(unit, unit.transpose(1, 2))  # [F, N+extra, N+extra]
            grams = full[:, :n, :n]
            if extra:  # e_j = <x_j, mu> = ||x_j|| <x^_j, mu>
                event = norms[:, :, 0] * full[:, :n, n]
        runs = [(s, length) for s, length in zip(*layout) if length > 1] if layout else []
        if runs:
            pairs = torch.empty(frames, n, n, dtype=wd, device=dev)
            linked = torch.zeros(frames, dtype=torch.bool)
            for s, length in runs:
                cur, prev = unit[s + 1 : s + length, :n], unit[s : s + length - 1, :n]
                torch.bmm(cur, prev.transpose(1, 2), out=pairs[s + 1 : s + length])
                linked[s + 1 : s + length] = True
            pairs[~linked.to(dev)] = -1.0
        return grams, event, pairs

    @torch.no_grad()
    def select(self, x, weights, event_mean, k, exclude, fill):
        frames, n, _ = x.shape
        grams, event, pairs = self._front(x, True, event_mean, self._layout)
        if pairs is not None:
            self._pairs = (x, pairs)
        dist = grams.neg_().add_(1.0)  # 1 - cos: [F, N(picked), N(candidate)]
        if weights is not None:
            dist.mul_(weights[:, None, :])
        if event is not None:
            dist.mul_(event[:, None, :])
        rows = torch.arange(frames, device=x.device)
        if n >= 2:
            first = torch.topk(dist, 2, dim=1, largest=False).values[:, 1, :].argmax(dim=-1)
        else:
            first = torch.zeros(frames, dtype=torch.long, device=x.device)
        picks = [first]
        running = dist[rows, first]  # [F, N] min over picked rows
        chosen = torch.zeros(frames, n, dtype=torch.bool, device=x.device)
        chosen[rows, first] = True
        for _ in range(k - 1):
            score = running.masked_fill(chosen, fill) if exclude else running
            j = score.argmax(dim=-1)
            picks.append(j)
            chosen[rows, j] = True
            running = torch.minimum(running, dist[rows, j])
        return torch.stack(picks, dim=1).sort(dim=1).values

    @torch.no_grad()
    def edges(self, x, eligible, starts, lengths):
        frames, n, _ = x.shape
        layout = (list(starts), list(lengths))
        if self._pairs is not None and self._pairs[0] is x and self._layout == layout:
            sims = self._pairs[1]
        else:
            sims = self._front(x, False, None, layout)[2]
        maxsim = torch.full((frames, n), -1.0, dtype=work_dtype(x.dtype), device=x.device)
        parent = torch.full((frames, n), -1, dtype=torch.long, device=x.device)
        if sims is None:
            return maxsim, parent
        sim = sims[1:].masked_fill_(~eligible[:-1, None, :], -1.0)  # [F-1, N(t), N(t-1)]
        best, arg = sim.max(dim=-1)
        rows = eligible[1:] & (best > -1.0)
        maxsim[1:] = torch.where(eligible[1:], best, -1.0)
        parent[1:] = torch.where(rows, arg, -1)
        return maxsim, parent


# --------------------------------------------------------------------------- DySeg
def segment_lengths(x: torch.Tensor, video_frames: list[int], cfg: FlashVIDConfig,
                    bounds: torch.Tensor | None = None,
                    frame_means: torch.Tensor | None = None) -> list[int]:
    """DySeg (SPEC §5) for each video of a flat frame list, with one host synchronisation, which
    also fetches and checks the input ``bounds`` (see ``validation.value_bounds``) if given.

    Same rule as ``flashvid.reference.dyseg``, computed in the work dtype.
    """
    if not cfg.segment or x.shape[0] == 1:
        if bounds is not None:
            check_values(bounds.tolist())
        return list(video_frames)
    if frame_means is None:
        frame_means = x.mean(dim=1, dtype=work_dtype(x.dtype))
    g = unit_rows(frame_means)  # [F, D]
    sim = torch.sum(g[:-1] * g[1:], dim=-1)  # [F-1], pairs across videos are ignored below
    order = torch.sort(torch.where(sim < cfg.segment_threshold, 1.0, sim), stable=True).indices
    fetched = [sim.double(), order.double()] + ([bounds] if bounds is not None else [])
    values = torch.cat(fetched).tolist()
    if bounds is not None:
        check_values(values[-4:])
    count = x.shape[0] - 1
    sim_list, order_list = values[:count], [int(v) for v in values[count : 2 * count]]
    lengths: list[int] = []
    start = 0
    for frames in video_frames:
        cuts = {t - start for t in range(start, start + frames - 1)
                if sim_list[t] < cfg.segment_threshold}
        missing = cfg.min_segments - (len(cuts) + 1)
        if cfg.complementary_segments and missing > 0 and frames > 1:
            ranked = [t - start for t in order_list if start <= t < start + frames - 1]
            cuts.update(ranked[: min(missing, frames - 1)])
        ends = [-1, *sorted(cuts), frames - 1]
        lengths += [b - a for a, b in zip(ends, ends[1:]) if b > a]
        start += frames
    return lengths


# --------------------------------------------------------------------------- the pipeline
@dataclass
class Segments:
    """DySeg's segments of a flat frame list."""

    lengths: list[int]
    starts: list[int]
    of_frame: torch.Tensor  # [F] segment id of each frame
    single: torch.Tensor  # [F] the frame is a single-frame segment


def make_segments(lengths: list[int], device: torch.device) -> Segments:
    starts = [0]
    for length in lengths[:-1]:
        starts.append(starts[-1] + length)
    of_frame, single = to_device(
        [[s for s, length in enumerate(lengths) for _ in range(length)],
         [int(length == 1) for length in lengths for _ in range(length)]], device)
    return Segments(lengths, starts, of_frame, single.bool())


def run(x: torch.Tensor, a: torch.Tensor, cfg: FlashVIDConfig, ops: StageOps,
        video_frames: list[int] | None = None,
        bounds: torch.Tensor | None = None) -> list[CompressedVideo]:
    """Compress the videos of a flat frame list x [F, N, D], a [F, N].

    ``video_frames`` splits the F frames into videos (default: one video). The inputs' shapes
    must be checked already; their values are checked here from ``bounds``
    (``validation.value_bounds``), fetched with the first host synchronisation.
    """
    frames, n, dim = x.shape
    device = x.device
    video_frames = video_frames or [frames]
    budget = cfg.budget(n)
    frame_means = None  # [F, D], for DySeg and the event term
    if (cfg.segment and frames > 1) or cfg.selection == "adts":
        frame_means = x.mean(dim=1, dtype=work_dtype(x.dtype))
    lengths = segment_lengths(x, video_frames, cfg, bounds, frame_means)  # host sync 1
    seg = make_segments(lengths, device)

    # ADTS (SPEC §6)
    ops.prepare(seg.starts, seg.lengths)
    picked = adts(x, a, cfg, ops, seg, budget.adts, frame_means)  # [F, k]
    eligible = torch.ones(frames, n, dtype=torch.bool, device=device)
    eligible.scatter_(1, picked, False)
    gid = torch.arange(frames * n, device=device).view(frames, n)
    adts_gid = gid.gather(1, picked).reshape(-1)  # [F*k], frame-major, sorted within frames
    parent_g = torch.full((frames * n,), -1, dtype=torch.long, device=device)
    rows_gid, rows_kind = [adts_gid], [torch.full_like(adts_gid, KIND_ADTS)]
    rows_value = [x.reshape(-1, dim)[adts_gid]]
    rows_per_frame = [budget.adts] * frames
    represented_by = None  # [F*N] pre-sort row of each token's tree representative
    if budget.merge > 0:
        merge, parent_g = _merge(x, cfg, ops, seg, eligible, budget, adts_gid.numel())
        rows_gid += merge.gid
        rows_kind += merge.kind
        rows_value += merge.value
        represented_by = merge.represented_by
        rows_per_frame = [r + m for r, m in zip(rows_per_frame, merge.rows_per_frame)]

    # assembly (SPEC §9): sort by position, ADTS rows first among duplicates (stable)
    all_gid = torch.cat(rows_gid)
    all_kind = torch.cat(rows_kind)
    all_value = torch.cat([v.to(x.dtype) for v in rows_value])
    order = torch.sort(all_gid * 2 + (all_kind != KIND_ADTS), stable=True).indices
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=device)
    pre = torch.full((frames * n,), order.numel(), dtype=torch.long, device=device)
    pre.scatter_reduce_(0, adts_gid, torch.arange(adts_gid.numel(), device=device), "amin")
    pre = torch.where(pre < order.numel(), pre, -1)  # the first ADTS row of a picked token
    if represented_by is not None:
        pre = torch.where(pre >= 0, pre, represented_by)
    source = torch.where(pre >= 0, rank[pre.clamp_min(0)], -1).view(frames, n)
    out = (all_value[order], all_gid[order], all_kind[order].to(torch.int8), source,
           parent_g.view(frames, n))
    return _split(out, seg.lengths, video_frames, rows_per_frame, n, budget, cfg)


def adts(x: torch.Tensor, a: torch.Tensor, cfg: FlashVIDConfig, ops: StageOps, seg: Segments,
         k: int, frame_means: torch.Tensor) -> torch.Tensor:
    """Stage ``adts`` (SPEC §6): [F, k] sorted local indices kept by the configured selection."""
    frames, n, _ = x.shape
    if k == 0:
        return torch.zeros(frames, 0, dtype=torch.long, device=x.device)
    if cfg.selection == "attention":
        order = torch.sort(a, dim=-1, descending=True, stable=True).indices
        return order[:, :k].sort(dim=-1).values
    wd = work_dtype(x.dtype)
    weights = a.to(wd) * 1e6 if cfg.selection in ("adts", "adts_v1") else None
    event_mean = None
    if cfg.selection == "adts":  # e_j = <x_j, mu_S>, mu_S the mean of all tokens of the segment
        sums = torch.zeros(len(seg.lengths), x.shape[2], dtype=wd, device=x.device)
        sums.index_add_(0, seg.of_frame, frame_means)
        means = sums / count_into(seg.of_frame, len(seg.lengths), wd)[:, None]  # [S, D]
        event_mean = means[seg.of_frame]  # [F, D]
    exclude = cfg.dedupe or cfg.selection in ("adts_v1", "diversity")
    fill = -math.inf if cfg.dedupe else -1.0
    return ops.select(x, weights, event_mean, k, exclude, fill)


@dataclass
class Forest:
    """The TSTM result: who merged where, and which tokens go on to the spatial merge."""

    merged: torch.Tensor  # [F, N] bool, merged into the previous frame
    parent: torch.Tensor  # [F, N] int64 index in frame t-1 (meaningful where merged)
    candidates: torch.Tensor  # [F, N] bool, tokens of the spatial merge
    counts: list[int]  # candidates per frame (host)


def tstm(x: torch.Tensor, cfg: FlashVIDConfig, ops: StageOps, seg: Segments,
         eligible: torch.Tensor, budget) -> Forest:
    """Stage ``tstm`` (SPEC §7): edges, the threshold and the per-segment soft threshold.

    The spatial-merge candidates are the non-ADTS tree roots, plus every token of a
    single-frame segment (quirk Q3) unless dedupe. Host sync 2 fetches their per-frame counts
    together with the tokens each segment retains; a segment retaining fewer than its lower bound
    takes the soft threshold and the counts are fetched again (rare).
    """
    frames, n, _ = x.shape
    device = x.device
    maxsim = None
    if cfg.temporal_threshold < 1.0 and max(seg.lengths) > 1:
        if cfg.temporal_merge == "ttm":
            maxsim, parent = _same_position_edges(x, eligible, seg)
        else:
            maxsim, parent = ops.edges(x, eligible, seg.starts, seg.lengths)
        merged = maxsim > cfg.temporal_threshold
    else:
        merged = torch.zeros(frames, n, dtype=torch.bool, device=device)
        parent = torch.full((frames, n), -1, dtype=torch.long, device=device)
    retained = torch.zeros(len(seg.lengths), dtype=torch.long, device=device)
    retained.index_add_(0, seg.of_frame, (~merged).sum(dim=1))
    candidates = _candidates(merged, eligible, seg, cfg)
    fetched = torch.cat([candidates.sum(dim=1), retained]).tolist()
    counts, retained_list = fetched[:frames], fetched[frames:]
    short = [s for s, (r, length) in enumerate(zip(retained_list, seg.lengths))
             if r < length * budget.total]
    if short and maxsim is not None:
        merged = _soft_threshold(maxsim, merged, seg, short, budget.total)
        candidates = _candidates(merged, eligible, seg, cfg)
        counts = candidates.sum(dim=1).tolist()
    return Forest(merged, parent, candidates, counts)


def trees(x: torch.Tensor, cfg: FlashVIDConfig, seg: Segments, forest: Forest
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stage ``trees``: (parent [F*N] global or -1, root [F*N], targets [C] positions of the
    candidates, values [C, D] their tree values in the work dtype)."""
    frames, n, dim = x.shape
    gid = torch.arange(frames * n, device=x.device).view(frames, n)
    prev_gid = (gid - n).clamp_min(0)
    parent_g = torch.where(forest.merged, prev_gid.gather(1, forest.parent.clamp_min(0)), -1)
    parent_g = parent_g.view(-1)
    root = tree_roots(parent_g, max(seg.lengths) - 1)
    targets = compact(forest.candidates.reshape(-1), sum(forest.counts))
    values = aggregate_trees(x.reshape(-1, dim).to(work_dtype(x.dtype)), root, parent_g, targets,
                             cfg.aggregation)
    return parent_g, root, targets, values


@dataclass
class SpatialPlan:
    """Per frame (host lists): clusters wanted (0 = keep every candidate as-is), whether the
    frame's distances take torch.cdist's matmul path, whether its candidates are kept."""

    clusters: list[int]
    matmul_path: list[bool]
    keep: list[bool]


def spatial_plan(counts: list[int], seg: Segments, budget, cfg: FlashVIDConfig) -> SpatialPlan:
    """SPEC §8: each frame gets ceil(c_t * ratio) clusters, ratio = merge budget / candidates of
    its segment, when ratio < 1 (Python floats, as published)."""
    clusters, matmul_path, keep = [], [], []
    for start, length in zip(seg.starts, seg.lengths):
        c = counts[start : start + length]
        ratio = budget.merge * length / sum(c) if sum(c) else math.inf
        cluster = cfg.spatial_merge and ratio < 1.0
        clusters += [math.ceil(ct * ratio) if cluster else 0 for ct in c]
        keep += [not cluster] * length
        matmul_path += [max(c) > CDIST_MM_ROWS] * length
    return SpatialPlan(clusters, matmul_path, keep)


@torch.no_grad()
def dpc(values: torch.Tensor, counts: list[int], plan: SpatialPlan,
        cfg: FlashVIDConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage ``dpc`` (SPEC §8): (assign [C], centres [K]) of the DPC-kNN spatial merge."""
    return dpc_knn_frames(values, counts, plan.clusters, plan.matmul_path, cfg.dpc_knn)


@dataclass
class _Merged:
    gid: list[torch.Tensor]
    kind: list[torch.Tensor]
    value: list[torch.Tensor]
    represented_by: torch.Tensor
    rows_per_frame: list[int]


def _merge(x, cfg, ops, seg, eligible, budget, first_row) -> tuple[_Merged, torch.Tensor]:
    """TSTM, trees and the spatial merge of all segments; returns the rows and the parents."""
    frames, n, dim = x.shape
    device = x.device
    forest = tstm(x, cfg, ops, seg, eligible, budget)
    parent_g, root, target_gid, values = trees(x, cfg, seg, forest)
    counts, total = forest.counts, sum(forest.counts)
    plan = spatial_plan(counts, seg, budget, cfg)
    kept_total = sum(c for c, k in zip(counts, plan.keep) if k)

    # rows kept as-is (kind 1): every candidate of a frame that is not clustered
    keep_frame, count_t = to_device([plan.keep, counts], device)
    keep_rows = keep_frame.bool().repeat_interleave(count_t, output_size=total)  # [C]
    kept = compact(keep_rows, kept_total)
    row_of_target = torch.full((total,), -1, dtype=torch.long, device=device)
    row_of_target[kept] = first_row + torch.arange(kept_total, device=device)
    gids, kinds, vals = [target_gid[kept]], [torch.full_like(kept, KIND_ROOT)], [values[kept]]

    if any(plan.clusters):
        assign, centres = dpc(values, counts, plan, cfg)
        num = centres.numel()
        slot = torch.where(assign >= 0, assign, num)  # row `num` discards the kept candidates
        sums = torch.zeros(num + 1, dim, dtype=values.dtype, device=device)
        sums.index_add_(0, slot, values)
        sums, sizes = sums[:num], count_into(slot, num + 1, values.dtype)[:num]
        row_of_target = torch.where(assign >= 0, first_row + kept_total + assign, row_of_target)
        gids.append(target_gid[centres])
        kinds.append(torch.full_like(centres, KIND_CLUSTER))
        vals.append(sums / sizes[:, None])

    # representative row of every non-ADTS token: its tree root's row (the caller sets the ADTS
    # tokens, which is also why Q3's ADTS candidates get no row here)
    flat_eligible = eligible.reshape(-1)
    represented_by = torch.full((frames * n,), -1, dtype=torch.long, device=device)
    represented_by[target_gid] = torch.where(flat_eligible[target_gid], row_of_target, -1)
    members = flat_eligible & (root != torch.arange(frames * n, device=device))
    represented_by = torch.where(members, represented_by[root], represented_by)
    rows_per_frame = [c if k else cl for c, k, cl in zip(counts, plan.keep, plan.clusters)]
    return _Merged(gids, kinds, vals, represented_by, rows_per_frame), parent_g


def _same_position_edges(x, eligible, seg):
    """TTM baseline edges: token n of frame t may only merge into token n of frame t-1."""
    xh = unit_rows(x.to(work_dtype(x.dtype)))
    frames, n, _ = x.shape
    sim = torch.sum(xh[1:] * xh[:-1], dim=-1)  # [F-1, N]
    ok = eligible[1:] & eligible[:-1] & (seg.of_frame[1:] == seg.of_frame[:-1])[:, None]
    maxsim = torch.full((frames, n), -1.0, dtype=xh.dtype, device=x.device)
    parent = torch.full((frames, n), -1, dtype=torch.long, device=x.device)
    maxsim[1:] = torch.where(ok, sim, -1.0)
    parent[1:] = torch.where(ok, torch.arange(n, device=x.device), -1)
    return maxsim, parent


def _candidates(merged, eligible, seg, cfg):
    """[F, N] tokens of the spatial merge: non-ADTS tree roots, plus every token of a
    single-frame segment (quirk Q3) unless dedupe."""
    candidates = ~merged & eligible
    return candidates if cfg.dedupe else candidates | seg.single[:, None]


def _soft_threshold(maxsim, merged, seg, short, per_frame_budget):
    """The soft threshold of SPEC §7 for the segments in ``short``, which would keep fewer than
    ``per_frame_budget * F_s`` tokens: merge only maxsim > (k-th largest maxsim of the segment),
    k = F_s * N - that bound."""
    n = maxsim.shape[1]
    merged = merged.clone()
    for s in short:
        a, length = seg.starts[s], seg.lengths[s]
        k = length * (n - per_frame_budget)
        block = maxsim[a : a + length]
        if k <= 0:
            merged[a : a + length] = False
            continue
        soft = float(torch.topk(block.flatten(), k).values[-1])
        merged[a : a + length] = block > max(soft, -1.0 + 1e-6)
    return merged


def _split(out, lengths, video_frames, rows_per_frame, n, budget, cfg) -> list[CompressedVideo]:
    """One CompressedVideo per video of the flat frame list (row ranges known on the host)."""
    value, gid, kind, source, parents = out
    device = gid.device
    videos, frame0, row0, seg0 = [], 0, 0, 0
    for frames in video_frames:
        rows = sum(rows_per_frame[frame0 : frame0 + frames])
        segs, covered = [], 0
        while covered < frames:
            segs.append(lengths[seg0])
            covered += lengths[seg0]
            seg0 += 1
        src = source[frame0 : frame0 + frames]
        par = parents[frame0 : frame0 + frames]
        videos.append(CompressedVideo(
            tokens=value[row0 : row0 + rows], indices=gid[row0 : row0 + rows] - frame0 * n,
            kinds=kind[row0 : row0 + rows], source=torch.where(src >= 0, src - row0, -1),
            segment_lengths=to_device([segs], device)[0],
            parents=torch.where(par >= 0, par - frame0 * n, -1), budget=budget, config=cfg))
        frame0 += frames
        row0 += rows
    return videos
