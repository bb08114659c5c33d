"""The torch backend: batched PyTorch for the heavy stages (the CPU path; correct on CUDA too).

The features are normalised once into a scratch buffer; one bmm gives every frame's Gram, one bmm
per segment the adjacent-frame similarities, one bmm against [mu_S, 0] the ADTS event term.
Every statistic is computed as the reference computes it (the same operations on tensors of the
same per-frame shapes), so on float32 input the picks, edges and clusters are bit-identical to
the reference's.

On the CPU, large temporaries live in per-thread buffers reused from call to call (a fresh
multi-megabyte tensor costs more in first-touch page faults than the arithmetic done in it).
They are private to this backend and never returned to the caller of ``flashvid.compress``;
``release()`` frees them.
"""

from __future__ import annotations

import threading

import torch

from . import Edges, FrameStats, work_dtype

_local = threading.local()


def release() -> None:
    """Free this thread's reusable CPU buffers (they are reallocated on the next call)."""
    _local.__dict__.pop("buffers", None)


class TorchBackend:
    """Batched PyTorch stages. ``reuse_buffers=False`` gives fresh scratch tensors (for callers
    that keep stage results across calls, such as the benchmark)."""

    name = "torch"

    def __init__(self, reuse_buffers: bool = True) -> None:
        self.reuse_buffers = reuse_buffers

    # ------------------------------------------------------------------ scratch
    def empty(self, name: str, shape: tuple[int, ...], dtype: torch.dtype,
              device: torch.device, *, grad: bool = False) -> torch.Tensor:
        """An uninitialised [shape] tensor; on the CPU a view of this thread's buffer ``name``,
        valid until ``name`` is requested again on this thread. ``grad``: the result will be
        recorded by autograd (then it is always fresh, since a reused buffer would invalidate
        saved tensors)."""
        if (not self.reuse_buffers or device.type != "cpu" or torch.compiler.is_compiling()
                or (grad and torch.is_grad_enabled())):
            return torch.empty(shape, dtype=dtype, device=device)
        cache = _local.__dict__.setdefault("buffers", {})
        numel = 1
        for s in shape:
            numel *= s
        buf = cache.get(name)
        if buf is None or buf.dtype != dtype or buf.numel() < numel:
            # a normal tensor even inside torch.inference_mode(), so that later calls outside it
            # may still write into it
            with torch.inference_mode(False):
                buf = cache[name] = torch.empty(numel, dtype=dtype)
        return buf[:numel].view(shape)

    # ------------------------------------------------------------------ statistics
    def frame_stats(self, x, *, event_mean=None, gram=False, segments=None) -> FrameStats:
        """Norms; with ``gram`` the cosine Grams (and, given ``event_mean`` [F, D], the event
        term); with ``segments`` the adjacent-pair similarities of the frames that continue a
        segment (-1 for segment starts)."""
        with torch.no_grad():
            frames, n, dim = x.shape
            wd, dev = work_dtype(x.dtype), x.device
            unit = self.empty("unit", (frames, n, dim), wd, dev)
            norms = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=wd)
            norms = norms.clamp_min(torch.finfo(wd).tiny)
            torch.div(x, norms, out=unit)  # half / float32 -> float32
            norms = norms[:, :, 0]
            grams = event = pairs = None
            if gram:
                grams = torch.bmm(unit, unit.transpose(1, 2))  # [F, N, N]
            if event_mean is not None:  # e_j = <x_j, mu_S>: [N, D] x [D, 2] per frame, as reference
                mu = torch.zeros(frames, dim, 2, dtype=wd, device=dev)
                mu[:, :, 0] = event_mean
                event = torch.bmm(x.to(wd), mu)[:, :, 0]
            if segments is not None and segments.lengths is None and frames > 1:
                # exact-count mode: every adjacent pair, segment starts masked (static shapes)
                pairs = torch.cat([torch.full((1, n, n), -1.0, dtype=wd, device=dev),
                                   torch.bmm(unit[1:], unit[:-1].transpose(1, 2))])
                pairs = pairs.masked_fill(segments.start[:, None, None], -1.0)
            elif segments is not None:
                runs = [(s, length) for s, length in zip(segments.starts, segments.lengths)
                        if length > 1]
                if runs:
                    pairs = torch.empty(frames, n, n, dtype=wd, device=dev)
                    linked = torch.zeros(frames, dtype=torch.bool)
                    for s, length in runs:
                        cur, prev = unit[s + 1 : s + length], unit[s : s + length - 1]
                        torch.bmm(cur, prev.transpose(1, 2), out=pairs[s + 1 : s + length])
                        linked[s + 1 : s + length] = True
                    pairs[~linked.to(dev)] = -1.0
            return FrameStats(norms, event, grams, pairs)

    # ------------------------------------------------------------------ adts
    def adts_select(self, x, stats, weights, k, exclude, fill) -> torch.Tensor:
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
    def tstm_edges(self, x, stats, eligible, segments) -> Edges:
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
