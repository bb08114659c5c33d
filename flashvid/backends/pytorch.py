"""The torch backend: batched PyTorch for the heavy stages (the CPU path; correct on CUDA too).

The features are normalised once into a workspace buffer; batched products give every frame's
Gram (three quarters of it, the rest mirrored: ``symmetric_gram``), the ADTS event term (one
[1, D] x [D, N] product per frame), and the adjacent-frame similarities of every segment
between the tokens TSTM may link (ADTS tokens left out). Every statistic is computed as the
reference computes it (the same operations on tensors of the same per-frame shapes: an entry of a
product does not depend on which other rows are multiplied with it), so on float32 input the
picks, edges and clusters are bit-identical to the reference's.
"""

from __future__ import annotations

import torch

from ..workspace import Workspace
from . import Edges, FrameStats, work_dtype

SYMMETRIC_MIN_TOKENS = 64  # below this a frame's Gram is one product
PAIR_CHUNK = 16  # adjacent-frame products per gather of eligible rows (bounds its memory)
GATHER_BELOW = 94  # gather the eligible rows when they are at most this % of a frame's tokens


def _gathered_pairs(unit: torch.Tensor, position: torch.Tensor, runs: list[tuple[int, int]],
                    sim: torch.Tensor, ws) -> None:
    """sim[t-1] = rows(t) @ rows(t-1)^T for the frames t that continue a segment, where rows(f)
    are the unit rows ``unit`` [F*N, D] at ``position`` [F, W] (frame f's eligible tokens),
    gathered for at most PAIR_CHUNK + 1 frames at a time."""
    width, dim = position.shape[1], unit.shape[1]
    rows = ws.empty("tstm_rows", (PAIR_CHUNK + 1, width, dim), unit.dtype)
    for s, length in runs:
        for first in range(s, s + length - 1, PAIR_CHUNK):
            last = min(first + PAIR_CHUNK, s + length - 1)  # pairs (t, t-1), first < t <= last
            m = last - first + 1
            torch.index_select(unit, 0, position[first : last + 1].reshape(-1),
                               out=rows[:m].view(m * width, dim))
            torch.bmm(rows[1:m], rows[: m - 1].transpose(1, 2), out=sim[first:last])


def symmetric_gram(unit: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """[F, N, N] Grams unit @ unit^T of every frame into ``out``, from three quarters of the
    products: with the rows split in halves a, b, the blocks a a^T, b b^T and a b^T are computed
    and b a^T = (a b^T)^T is mirrored. A product's entry is one dot product whose accumulation
    order does not depend on which rows or how many are multiplied together, and the dot
    product of two rows is symmetric, so the result is bit for bit the single product
    (``tests/core/test_adts.py`` checks it)."""
    n = unit.shape[1]
    if n < SYMMETRIC_MIN_TOKENS:
        return torch.bmm(unit, unit.transpose(1, 2), out=out)
    h = n // 2
    a, b = unit[:, :h], unit[:, h:]
    if torch.compiler.is_compiling():  # dynamo takes no out= views: the same products, joined
        ab = torch.bmm(a, b.transpose(1, 2))
        return torch.cat([torch.cat([torch.bmm(a, a.transpose(1, 2)), ab], dim=2),
                          torch.cat([ab.transpose(1, 2), torch.bmm(b, b.transpose(1, 2))],
                                    dim=2)], dim=1)
    torch.bmm(a, a.transpose(1, 2), out=out[:, :h, :h])
    torch.bmm(b, b.transpose(1, 2), out=out[:, h:, h:])
    torch.bmm(a, b.transpose(1, 2), out=out[:, :h, h:])
    out[:, h:, :h] = out[:, :h, h:].transpose(1, 2)
    return out


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
        """[F, k] int64 sorted picks of the greedy max-min selection (see stages.adts)."""
        with torch.no_grad():
            frames, n, _ = x.shape
            dist = stats.gram.neg_().add_(1.0)  # 1 - cos: [F, N(picked), N(candidate)], in place
            if weights is not None:
                dist.mul_(weights[:, None, :])
            if stats.event is not None:
                dist.mul_(stats.event[:, None, :])
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

    # ------------------------------------------------------------------ tstm
    def tstm_edges(self, x, stats, eligible, segments, ws) -> Edges:
        """Most similar eligible previous-frame token of every eligible token, from products of
        the unit rows of adjacent frames of a segment: on the CPU between the eligible rows
        only (gathered into the workspace, frame by frame in position order, so ties still go
        to the lowest index); elsewhere, and in static plans, between whole frames, masked."""
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
                width = most if most * 100 <= n * GATHER_BELOW else n  # the gather pays for itself
            sim = ws.empty("tstm_pairs", (frames - 1, width, width), wd)  # [t-1: t x t-1]
            if width < n:  # eligible rows first, ascending, then the others (ignored)
                order = torch.argsort((~eligible).to(torch.int8), dim=1, stable=True)[:, :width]
                valid = torch.arange(width, device=x.device)[None, :] < count[:, None]
                position = torch.arange(frames, device=x.device)[:, None] * n + order
                _gathered_pairs(stats.unit.view(frames * n, dim), position, runs, sim, ws)
            else:
                order = torch.arange(n, device=x.device).expand(frames, n)
                valid = eligible
                unit = stats.unit
                if runs is None:  # a static plan: every adjacent pair (starts masked below)
                    torch.bmm(unit[1:], unit[:-1].transpose(1, 2), out=sim)
                for s, length in runs or []:
                    torch.bmm(unit[s + 1 : s + length], unit[s : s + length - 1].transpose(1, 2),
                              out=sim[s : s + length - 1])
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
            ok = valid[1:] & linked[:, None]
            link = ok & (best > -1.0)
            prev = torch.gather(order[:-1], 1, arg)  # position in frame t-1
            maxsim[1:].scatter_(1, order[1:], torch.where(ok, best, -1.0))
            parent[1:].scatter_(1, order[1:], torch.where(link, prev, -1))
            return Edges(parent, maxsim)
