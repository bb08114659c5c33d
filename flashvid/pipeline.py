"""The fast FlashVID pipeline: segment -> select -> edges -> trees -> spatial merge -> assemble.

Everything is batched over frames (and over videos: a batch is a flat frame list whose segments
never cross a video boundary). The two heavy stages, ADTS selection and TSTM edges, come from a
:class:`StageOps` implementation: :class:`TorchOps` (batched PyTorch, the CPU path) or the Triton
kernels (``flashvid.triton_ops``). There are no per-token or per-frame Python loops; the host
synchronises only where output sizes depend on the data (segment cuts, the rare soft-threshold
check, the per-frame DPC sizes, the output size).

Arithmetic: ADTS, TSTM and DPC run in float32 (float64 for float64 input), whatever the input
dtype; merged tokens are cast back to the input dtype; ADTS tokens are copied bit for bit.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import torch

from .config import FlashVIDConfig
from .reference import work_dtype
from .spatial import CDIST_MM_ROWS, dpc_knn_frames, to_device
from .trees import aggregate_trees, compact, count_into, tree_roots
from .types import KIND_ADTS, KIND_CLUSTER, KIND_ROOT, CompressedVideo
from .validation import check_values


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """x / ||x||_2 over the last dim (zero rows stay zero)."""
    return x / x.norm(p=2, dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)


# --------------------------------------------------------------------------- stage interface
class StageOps:
    """The two heavy stages. Implementations must agree with flashvid.reference on float32."""

    name = "abstract"

    def event_relevance(self, x: torch.Tensor, means: torch.Tensor, starts: list[int],
                        lengths: list[int]) -> torch.Tensor:
        """[F, N] e = <x_{f,n}, mu_S> in the work dtype, mu_S = means[s] for the frames of
        segment s (``means`` [S, D])."""
        raise NotImplementedError

    def select(self, x: torch.Tensor, weights: torch.Tensor | None,
               event: torch.Tensor | None, k: int, exclude: bool,
               fill: float) -> torch.Tensor:
        """[F, k] int64 sorted local indices: greedy max-min selection in every frame.

        D'(i, j) = (1 - cos(x_i, x_j)) * weights[f, j] * event[f, j] (each factor only when
        given, applied in that order); first pick = argmax_j of column j's second-smallest
        value, then k-1 steps of argmax of the running minimum (ties to the lowest index);
        ``exclude`` scores picked tokens ``fill``.
        """
        raise NotImplementedError

    def edges(self, x: torch.Tensor, eligible: torch.Tensor,
              starts: list[int], lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(maxsim [F, N] work dtype, parent [F, N] int64): for each eligible token of a frame
        that is not a segment start, the most cosine-similar eligible token of the previous frame
        (first index on ties); maxsim = -1 and parent = -1 elsewhere."""
        raise NotImplementedError


class TorchOps(StageOps):
    """Batched PyTorch stages: one bmm for all frames' Grams, one per segment for the edges.

    The unit-norm features are computed once into a workspace that each thread keeps between
    calls on the CPU: there a fresh buffer the size of the input costs more in page faults than
    the division itself (CUDA's caching allocator already reuses memory). The arithmetic is the
    reference's, so float32 results are bit-identical to it.
    """

    name = "torch"
    _local = threading.local()

    def __init__(self) -> None:
        self._unit: tuple[torch.Tensor, torch.Tensor] | None = None

    @torch.no_grad()
    def unit(self, x: torch.Tensor) -> torch.Tensor:
        """Unit-norm features in the work dtype (they only feed decisions: no autograd)."""
        if self._unit is None or self._unit[0] is not x:
            wd = work_dtype(x.dtype)
            norms = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=wd)
            norms = norms.clamp_min(torch.finfo(wd).tiny)
            out = self._buffer(x.shape, wd) if x.device.type == "cpu" else None
            self._unit = (x, torch.div(x, norms, out=out))  # half / float32 -> float32
        return self._unit[1]

    @classmethod
    def _buffer(cls, shape: torch.Size, dtype: torch.dtype) -> torch.Tensor:
        numel = shape.numel()
        buf = getattr(cls._local, "buffer", None)
        if buf is None or buf.dtype != dtype or buf.numel() < numel:
            buf = cls._local.buffer = torch.empty(numel, dtype=dtype)
        return buf[:numel].view(shape)

    @torch.no_grad()
    def event_relevance(self, x, means, starts, lengths):
        # one matrix-vector product per segment (a batched gemv per frame is twice as slow)
        n, dim = x.shape[1:]
        xw = x.detach().to(means.dtype)
        return torch.cat([torch.mv(xw[s : s + length].reshape(-1, dim), means[i]).view(length, n)
                          for i, (s, length) in enumerate(zip(starts, lengths))])

    @torch.no_grad()
    def select(self, x, weights, event, k, exclude, fill):
        frames, n, _ = x.shape
        xh = self.unit(x)
        dist = 1.0 - torch.bmm(xh, xh.transpose(1, 2))  # [F, N(picked), N(candidate)]
        if weights is not None:
            dist = dist * weights[:, None, :]
        if event is not None:
            dist = dist * event[:, None, :]
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
        xh = self.unit(x)
        maxsim = torch.full((frames, n), -1.0, dtype=xh.dtype, device=x.device)
        parent = torch.full((frames, n), -1, dtype=torch.long, device=x.device)
        for s, length in zip(starts, lengths):
            if length < 2:
                continue
            sim = torch.bmm(xh[s + 1 : s + length], xh[s : s + length - 1].transpose(1, 2))
            sim.masked_fill_(~eligible[s : s + length - 1, None, :], -1.0)
            best, arg = sim.max(dim=-1)
            rows = eligible[s + 1 : s + length]
            maxsim[s + 1 : s + length] = torch.where(rows, best, -1.0)
            parent[s + 1 : s + length] = torch.where(rows, arg, -1)
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
    pairs = x.shape[0] - 1
    sim_list, order_list = values[:pairs], [int(v) for v in values[pairs : 2 * pairs]]
    lengths: list[int] = []
    start = 0
    for frames in video_frames:
        pairs = range(start, start + frames - 1)
        cuts = {t - start for t in pairs if sim_list[t] < cfg.segment_threshold}
        missing = cfg.min_segments - (len(cuts) + 1)
        if cfg.complementary_segments and missing > 0 and frames > 1:
            ranked = [t - start for t in order_list if start <= t < start + frames - 1]
            cuts.update(ranked[: min(missing, frames - 1)])
        bounds = [-1, *sorted(cuts), frames - 1]
        lengths += [b - a for a, b in zip(bounds, bounds[1:]) if b > a]
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
    frame_means = x.mean(dim=1, dtype=work_dtype(x.dtype))  # [F, D]
    seg = make_segments(segment_lengths(x, video_frames, cfg, bounds, frame_means),
                    device)  # host sync 1

    # ADTS (SPEC §6)
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
    event = None
    if cfg.selection == "adts":  # e_j = <x_j, mu_S>, mu_S the mean of all tokens of the segment
        sums = torch.zeros(len(seg.lengths), x.shape[2], dtype=wd, device=x.device)
        sums.index_add_(0, seg.of_frame, frame_means)
        means = sums / count_into(seg.of_frame, len(seg.lengths), wd)[:, None]  # [S, D]
        event = ops.event_relevance(x, means, seg.starts, seg.lengths)
    exclude = cfg.dedupe or cfg.selection in ("adts_v1", "diversity")
    fill = -math.inf if cfg.dedupe else -1.0
    return ops.select(x, weights, event, k, exclude, fill)


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
        in_dpc = compact(assign >= 0, total - kept_total)
        num = centres.numel()
        sums = torch.zeros(num, dim, dtype=values.dtype, device=device)
        sums.index_add_(0, assign[in_dpc], values[in_dpc])
        sizes = count_into(assign[in_dpc], num, values.dtype)
        row_of_target[in_dpc] = first_row + kept_total + assign[in_dpc]
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
