"""The torch backend: batched PyTorch for the heavy stages (the CPU path; correct on CUDA too).

The features are normalised once into a workspace buffer; batched products give every frame's
Gram (three quarters of it, the rest mirrored: ``symmetric_gram``), the adjacent-frame
similarities of every segment, and the ADTS event term (one product against [mu_S, 0] per
frame). Every statistic is computed as the reference computes it (the same
operations on tensors of the same per-frame shapes), so on float32 input the picks, edges and
clusters are bit-identical to the reference's.
"""

from __future__ import annotations

import torch

from ..workspace import Workspace
from . import Edges, FrameStats, work_dtype

SYMMETRIC_MIN_TOKENS = 64  # below this a frame's Gram is one product


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

    def frame_stats(self, x, stats, ws, *, event_mean=None, gram=False,
                    segments=None) -> FrameStats:
        """With ``gram`` the cosine Grams; given ``event_mean`` [F, D] the event term; with
        ``segments`` the adjacent-pair similarities of the frames that continue a segment (-1
        for segment starts)."""
        with torch.no_grad():
            frames, n, dim = x.shape
            wd, dev = work_dtype(x.dtype), x.device
            unit = stats.unit
            grams = event = pairs = None
            if gram:
                grams = symmetric_gram(unit, ws.empty("gram", (frames, n, n), wd))
            if event_mean is not None:  # e_j = <x_j, mu_S>: [N, D] x [D, 2] per frame, as reference
                mu = torch.zeros(frames, dim, 2, dtype=wd, device=dev)
                mu[:, :, 0] = event_mean
                event = torch.bmm(x.to(wd), mu)[:, :, 0]
            if segments is not None and segments.lengths is None and frames > 1:
                # a static plan: every adjacent pair, segment starts masked (static shapes)
                pairs = torch.cat([torch.full((1, n, n), -1.0, dtype=wd, device=dev),
                                   torch.bmm(unit[1:], unit[:-1].transpose(1, 2))])
                pairs = pairs.masked_fill(segments.start[:, None, None], -1.0)
            elif segments is not None:
                runs = [(s, length) for s, length in zip(segments.starts, segments.lengths)
                        if length > 1]
                if runs:
                    pairs = ws.empty("pairs", (frames, n, n), wd)
                    linked = [False] * frames
                    for s, length in runs:
                        cur, prev = unit[s + 1 : s + length], unit[s : s + length - 1]
                        torch.bmm(cur, prev.transpose(1, 2), out=pairs[s + 1 : s + length])
                        linked[s + 1 : s + length] = [True] * (length - 1)
                    starts = [t for t in range(frames) if not linked[t]]
                    pairs[starts] = -1.0
            return stats._replace(event=event, gram=grams, pairs=pairs)

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
        """Most similar eligible previous-frame token, from ``stats.pairs``."""
        with torch.no_grad():
            frames, n, _ = x.shape
            maxsim = torch.full((frames, n), -1.0, dtype=work_dtype(x.dtype), device=x.device)
            parent = torch.full((frames, n), -1, dtype=torch.long, device=x.device)
            if stats.pairs is None:
                return Edges(parent, maxsim)
            sim = stats.pairs[1:].masked_fill_(~eligible[:-1, None, :], -1.0)  # [F-1, N(t), N(t-1)]
            best, arg = sim.max(dim=-1)
            rows = eligible[1:] & (best > -1.0)
            maxsim[1:] = torch.where(eligible[1:], best, -1.0)
            parent[1:] = torch.where(rows, arg, -1)
            return Edges(parent, maxsim)
