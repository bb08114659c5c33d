"""The torch backend: batched PyTorch for the heavy stages (the CPU path; correct on CUDA too).

The features are normalised once into a workspace buffer; batched products give every frame's
Gram (three quarters of it, the rest mirrored: ``symmetric_gram``), the ADTS event term (one
[1, D] x [D, N] product per frame), and the adjacent-frame similarities of every segment
between the tokens TSTM may link (ADTS tokens left out). Every statistic is computed with the
reference's operations; where the BLAS rounds a product's entry the same whatever else is
multiplied with it (the case on the AMD EPYC machine the parity fixtures were checked on), the
picks, edges and clusters on float32 input are bit-identical to the reference's. Some BLAS
builds round block products differently from the whole product (MKL on an Intel AVX-512
Xeon: by one unit in the last place at 196 tokens of 3584); a pick can then differ at an exact
near-tie only, as the reference's own picks differ with how frames are batched.
"""

from __future__ import annotations

import torch

from ..stages.util import products
from ..workspace import Workspace
from . import Edges, FrameStats, work_dtype

SYMMETRIC_MIN_TOKENS = 64  # below this a frame's Gram is one product
COMPACT_BELOW = 94  # take only the eligible rows when they are at most this % of the tokens


def _fill_holes(unit: torch.Tensor, eligible: torch.Tensor, count: torch.Tensor, width: int,
                ws: Workspace) -> tuple[torch.Tensor, torch.Tensor]:
    """Make the first ``count[f]`` rows of every frame f of the unit rows ``unit`` [F, N, D]
    (workspace memory, changed in place) its eligible tokens: each ineligible slot below the
    count (a hole) receives the next eligible row from at or above it, in position order (at
    most the ADTS picks of the frame move). Returns (order [F, width]: the position of the token
    now in each slot, a permutation's first ``width`` entries; moved [F, width] bool: the slot
    holds a moved row). Unmoved slots keep their position, and moved rows come after every
    unmoved eligible position and in position order among themselves."""
    frames, n, dim = unit.shape
    slots = torch.arange(n, device=unit.device)
    below = slots[None, :] < count[:, None]
    holes = (~eligible & below).reshape(-1).nonzero()[:, 0]  # frame-major, ascending
    sources = (eligible & ~below).reshape(-1).nonzero()[:, 0]  # as many per frame as holes
    flat = unit.view(frames * n, dim)
    rows = ws.empty("tstm_moved", (sources.numel(), dim), unit.dtype)
    flat.index_copy_(0, holes, torch.index_select(flat, 0, sources, out=rows))
    order = slots.repeat(frames)
    order[holes], order[sources] = sources % n, holes % n
    moved = torch.zeros(frames * n, dtype=torch.bool, device=unit.device)
    moved[holes] = True
    return order.view(frames, n)[:, :width], moved.view(frames, n)[:, :width]


def _first_unmoved_ties(sim: torch.Tensor, best: torch.Tensor, arg: torch.Tensor,
                        moved: torch.Tensor) -> torch.Tensor:
    """``arg`` [P, W] (each row's first maximum of ``sim`` [P, W, W], in slot order) corrected
    to the first maximum in position order: where it is a moved column (``moved`` [P, W] of
    the previous frames) and an unmoved column ties with it, the first such column (a moved
    row's position is above every unmoved one's). Only the rows whose maximum is a moved
    column are looked at."""
    hit = torch.gather(moved, 1, arg)
    if not bool(hit.any()):
        return arg
    pair, row = hit.nonzero(as_tuple=True)
    rows = sim[pair, row].masked_fill_(moved[pair], -torch.inf)
    best2, arg2 = rows.max(dim=-1)
    fix = best2 == best[pair, row]
    arg = arg.clone()
    arg[pair[fix], row[fix]] = arg2[fix]
    return arg


def symmetric_gram(unit: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """[F, N, N] Grams unit @ unit^T of every frame into ``out``, from three quarters of the
    products: with the rows split in halves a, b, the first half-rows a [a; b]^T (blocks a a^T
    and a b^T, one product twice as wide as a block, which the BLAS runs faster than two) and
    b b^T are computed, and b a^T = (a b^T)^T is mirrored. The result is exactly symmetric.
    Where the BLAS accumulates an entry's dot product the same whatever rows are multiplied
    together, it is bit for bit the single product; elsewhere it is within the products'
    rounding (``tests/core/test_adts.py`` checks both)."""
    n = unit.shape[1]
    if n < SYMMETRIC_MIN_TOKENS:
        return torch.bmm(unit, unit.transpose(1, 2), out=out)
    h = n // 2
    a, b = unit[:, :h], unit[:, h:]
    if torch.compiler.is_compiling():  # dynamo takes no out= views: the same products, joined
        top = torch.bmm(a, unit.transpose(1, 2))
        return torch.cat([top, torch.cat([top[:, :, h:].transpose(1, 2),
                                          torch.bmm(b, b.transpose(1, 2))], dim=2)], dim=1)
    products(a, unit.transpose(1, 2), out[:, :h])
    products(b, b.transpose(1, 2), out[:, h:, h:])
    out[:, h:, :h] = out[:, :h, h:].transpose(1, 2)
    return out


def top2(m: torch.Tensor, ws: Workspace) -> torch.Tensor:
    """[F, C] second-largest entry of every column of m [F, R, C] (R >= 2), counting repeats
    (the second entry of ``torch.topk(m, 2, dim=1).values``), by a tournament over the rows in
    two workspace buffers: the first round pairs row i with row i + R/2 and keeps the
    elementwise larger (``high``) and smaller (``low``); every later round halves the rows the
    same way, a pair's runner-up being the larger of its two runners-up and of the smaller of
    its two leaders; an odd row joins pair 0. Only comparisons: the result is an entry of m,
    bit for bit, and every step is vectorised along the columns (``topk`` over a strided dim
    is not: 5x slower at R = C = 1024 on two cores)."""
    if torch.compiler.is_compiling():  # dynamo takes no out= views; inductor fuses topk's
        return torch.topk(m, 2, dim=1).values[:, 1]
    frames, r, c = m.shape
    half = r // 2
    high = ws.empty("top2_high", (frames, half, c), m.dtype)
    low = ws.empty("top2_low", (frames, half, c), m.dtype)
    tmp = ws.empty("top2_tmp", (frames, max(half // 2, 1), c), m.dtype)
    torch.maximum(m[:, :half], m[:, half : 2 * half], out=high)
    torch.minimum(m[:, :half], m[:, half : 2 * half], out=low)
    if r % 2:
        _fold(high, low, m[:, -1:], None, tmp)
    rows = half
    while rows > 1:
        g = rows // 2
        a_hi, b_hi, a_lo, b_lo = high[:, :g], high[:, g : 2 * g], low[:, :g], low[:, g : 2 * g]
        t = tmp[:, :g]
        torch.maximum(a_lo, b_lo, out=a_lo)
        torch.minimum(a_hi, b_hi, out=t)
        torch.maximum(a_lo, t, out=a_lo)
        torch.maximum(a_hi, b_hi, out=a_hi)
        if rows % 2:
            _fold(high, low, high[:, rows - 1 : rows], low[:, rows - 1 : rows], tmp)
        rows = g
    return low[:, 0]


def _fold(high: torch.Tensor, low: torch.Tensor, r_hi: torch.Tensor, r_lo: torch.Tensor | None,
          tmp: torch.Tensor) -> None:
    """Merge one more row (leader r_hi, runner-up r_lo or none) into pair 0 of ``high``/``low``."""
    h0, l0, t = high[:, :1], low[:, :1], tmp[:, :1]
    if r_lo is not None:
        torch.maximum(l0, r_lo, out=l0)
    torch.minimum(h0, r_hi, out=t)
    torch.maximum(l0, t, out=l0)
    torch.maximum(h0, r_hi, out=h0)


class TorchBackend:
    """Batched PyTorch stages."""

    name = "torch"

    # ------------------------------------------------------------------ statistics
    def token_norms(self, x: torch.Tensor, ws: Workspace, *, unit: bool) -> FrameStats:
        """Norms, and with ``unit`` the unit rows x / ||x|| (in the workspace)."""
        with torch.no_grad():
            wd = work_dtype(x.dtype)
            norms = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=wd)
            norms = norms.clamp_min(torch.finfo(wd).tiny)
            rows = None
            if unit:
                rows = ws.empty("unit", tuple(x.shape), wd)
                torch.div(x, norms, out=rows)  # half / float32 -> float32
            return FrameStats(norms[:, :, 0], rows)

    def frame_stats(self, x, stats, ws, *, event_mean=None, gram=False) -> FrameStats:
        """With ``gram`` the cosine Grams; given ``event_mean`` [F, D] the event term."""
        with torch.no_grad():
            frames, n, dim = x.shape
            wd = work_dtype(x.dtype)
            unit = stats.unit
            grams = event = None
            if gram:
                grams = symmetric_gram(unit, ws.empty("gram", (frames, n, n), wd))
            if event_mean is not None:  # e_j = <x_j, mu_S>: [1, D] x [D, N] per frame, as reference
                mu = event_mean.to(wd)[:, None, :]
                event = torch.bmm(mu, x.to(wd).transpose(1, 2))[:, 0]
            return stats._replace(event=event, gram=grams)

    # ------------------------------------------------------------------ adts
    def adts_select(self, x, stats, weights, k, exclude, fill, ws) -> torch.Tensor:
        """[F, k] int64 sorted picks of the greedy max-min selection (see stages.adts).

        The calibrated distances D'(i, j) = ((1 - G[i, j]) * w_j) * e_j are never written out:
        for each column j, D' is a monotone function f_j of the Gram entry G[i, j] (rounding is
        monotone; w >= 0 is checked at the input), non-increasing where e_j >= 0 (or without
        an event term) and non-decreasing where e_j < 0. So the column's second-smallest D' is
        f_j of its second-largest G, or of its second-smallest G where e_j < 0, and equals the
        value the reference selects bit for bit. Negating the e_j < 0 columns (exact) makes both
        a second-largest, found by a tournament of elementwise maxima and minima (``top2``).
        The greedy steps compute the k picked rows of D' with the reference's operations."""
        with torch.no_grad():
            frames, n, _ = x.shape
            gram = stats.gram  # [F, N(picked), N(candidate)], workspace memory: flipped in place
            event = stats.event
            flip = None
            if event is not None and (torch.compiler.is_compiling() or x.device.type != "cpu"
                                      or bool((event < 0).any())):  # (a free check on the CPU)
                flip = torch.where(event < 0, -1.0, 1.0).to(gram.dtype)
                gram.mul_(flip[:, None, :])

            def calibrated(g: torch.Tensor) -> torch.Tensor:  # D' from (flipped) Gram rows
                if flip is not None:
                    g = g * flip
                d = 1.0 - g
                if weights is not None:
                    d = d * weights
                if event is not None:
                    d = d * event
                return d

            rows = torch.arange(frames, device=x.device)
            if n >= 2:
                first = calibrated(top2(gram, ws)).argmax(dim=-1)
            else:
                first = torch.zeros(frames, dtype=torch.long, device=x.device)
            picks = [first]
            running = calibrated(gram[rows, first])  # [F, N] min over picked rows
            chosen = None  # the picks so far, where they are excluded from the next ones
            if exclude:
                chosen = torch.zeros(frames, n, dtype=torch.bool, device=x.device)
                chosen[rows, first] = True
            for _ in range(k - 1):
                score = running if chosen is None else running.masked_fill(chosen, fill)
                j = score.argmax(dim=-1)
                picks.append(j)
                if chosen is not None:
                    chosen[rows, j] = True
                running = torch.minimum(running, calibrated(gram[rows, j]))
            return torch.stack(picks, dim=1).sort(dim=1).values

    # ------------------------------------------------------------------ tstm
    def tstm_edges(self, x, stats, eligible, segments, ws) -> Edges:
        """Most similar eligible previous-frame token of every eligible token, from products of
        the unit rows of adjacent frames of a segment: on the CPU between the eligible rows
        only (``_fill_holes`` moves them first in each frame, in place in the unit rows, which
        this consumes; ties still go to the lowest position: ``_first_unmoved_ties``);
        elsewhere, and in static plans, between whole frames, masked."""
        with torch.no_grad():
            frames, n, dim = x.shape
            wd = work_dtype(x.dtype)
            maxsim = torch.full((frames, n), -1.0, dtype=wd, device=x.device)
            parent = torch.full((frames, n), -1, dtype=torch.long, device=x.device)
            if frames < 2:
                return Edges(parent, maxsim)
            runs = None if segments.lengths is None else \
                [(s, length) for s, length in zip(segments.starts, segments.lengths) if length > 1]
            if runs == []:
                return Edges(parent, maxsim)
            count = eligible.sum(dim=1)  # [F]
            width = n
            if runs is not None and x.device.type == "cpu" and not torch.compiler.is_compiling():
                most = int(count.max())  # free on the CPU
                width = most if most * 100 <= n * COMPACT_BELOW else n  # the moves pay off
            sim = ws.empty("tstm_pairs", (frames - 1, width, width), wd)  # [t-1: t x t-1]
            unit = stats.unit
            moved = None
            if width < n:  # eligible rows first (in slots 0..count-1), the others ignored
                order, moved = _fill_holes(unit, eligible, count, width, ws)
                valid = torch.arange(width, device=x.device)[None, :] < count[:, None]
                unit = unit[:, :width]
            else:
                order = torch.arange(n, device=x.device).expand(frames, n)
                valid = eligible
            if runs is None:  # a static plan: every adjacent pair (starts masked below)
                products(unit[1:], unit[:-1].transpose(1, 2), sim)
            for s, length in runs or []:
                products(unit[s + 1 : s + length], unit[s : s + length - 1].transpose(1, 2),
                         sim[s : s + length - 1])
            if runs is None:
                linked = ~segments.start[1:]
            else:
                linked_list = [False] * (frames - 1)
                for s, length in runs:
                    linked_list[s : s + length - 1] = [True] * (length - 1)
                linked = torch.tensor(linked_list, device=x.device)
                idle = [t for t, on in enumerate(linked_list) if not on]
                if idle:
                    sim[idle] = -1.0
            sim.masked_fill_(~valid[:-1, None, :], -1.0)  # columns: eligible in frame t-1
            best, arg = sim.max(dim=-1)  # [F-1, W]
            if moved is not None:
                arg = _first_unmoved_ties(sim, best, arg, moved[:-1])
            ok = valid[1:] & linked[:, None]
            link = ok & (best > -1.0)
            prev = torch.gather(order[:-1], 1, arg)  # position in frame t-1
            maxsim[1:].scatter_(1, order[1:], torch.where(ok, best, -1.0))
            parent[1:].scatter_(1, order[1:], torch.where(link, prev, -1))
            return Edges(parent, maxsim)
