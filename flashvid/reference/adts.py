"""Reference stage ``adts`` (§6): attention- and diversity-based token selection."""

from __future__ import annotations

import math

import torch

from ..config import FlashVIDConfig
from .util import spans, unit_rows, work_dtype


def event_relevance(tokens: torch.Tensor, means: torch.Tensor,
                    lengths: list[int]) -> torch.Tensor:
    """[F, N] e_j = <x_j, mu_S>: each token's dot product with the mean token of its segment.

    mu_S is the mean of the segment's frame means (``means`` [F, D], work dtype), summed frame
    after frame and divided by the segment's length; the product is one [1, D] x [D, N] matrix
    product per frame, mu_S^T x^T (a batched product whose result for a frame does not depend on
    how many frames are computed together). Mathematically this is the published mean over the
    segment's frames c of <x_j, mean_n x_c>.
    """
    frames, _, dim = tokens.shape
    mu = torch.zeros(frames, 1, dim, dtype=means.dtype, device=means.device)
    for start, end in spans(lengths):
        total = torch.zeros(dim, dtype=means.dtype, device=means.device)
        for f in range(start, end):
            total = total + means[f]
        mu[start:end, 0] = total / (end - start)
    return torch.bmm(mu, tokens.to(means.dtype).transpose(1, 2))[:, 0, :]


def column_weights(x: torch.Tensor, a: torch.Tensor, method: str,
                   event: torch.Tensor | None = None) -> list[torch.Tensor]:
    """The per-column factors of the calibrated distance, applied left to right (§6):
    ``adts_v1``: [1e6 * a]; ``adts``: [1e6 * a, event]; others: []."""
    if method not in ("adts", "adts_v1"):
        return []
    weights = [a.to(work_dtype(x.dtype)) * 1e6]
    if method == "adts":
        weights.append(event)
    return weights


def adts(tokens: torch.Tensor, cls_attn: torch.Tensor, lengths: list[int],
         config: FlashVIDConfig, k: int, means: torch.Tensor | None = None) -> torch.Tensor:
    """[F, k] sorted local indices picked in each frame (§6), segment by segment.

    ``attention``: the k most important tokens, as ``torch.topk`` orders ties (published).
    The other methods run the greedy max-min selection on the calibrated distance
    D'(i, j) = ((1 - <x^_i, x^_j>) * w_j) * e_j (w = 1e6 * a for adts/adts_v1, e = the event
    relevance for adts; float32 for half input): first pick = argmax over columns of the
    column's second-smallest value, then k-1 steps of argmax of the running minimum.
    ``adts_v1`` and ``diversity`` exclude picked tokens (score -1, as published); ``adts`` does
    not (quirk Q2) unless ``dedupe``, which excludes with -inf for every method. ``means``: the
    frame means of ``dyseg.frame_means`` (computed here if not given).
    """
    frames, n, _ = tokens.shape
    if k == 0:
        return torch.zeros(frames, 0, dtype=torch.long, device=tokens.device)
    method = config.selection
    if method == "attention":
        return torch.topk(cls_attn, k, dim=-1).indices.sort(dim=-1).values
    event = None
    if method == "adts":
        if means is None:
            means = tokens.mean(dim=1, dtype=work_dtype(tokens.dtype))
        event = event_relevance(tokens, means, lengths)
    exclude = config.dedupe or method in ("adts_v1", "diversity")
    fill = -math.inf if config.dedupe else -1.0
    picks = []
    for start, end in spans(lengths):
        x, a = tokens[start:end], cls_attn[start:end]
        xh = unit_rows(x.to(work_dtype(x.dtype)))
        dist = 1.0 - torch.bmm(xh, xh.transpose(1, 2))  # [F_s, N, N]: row picked, col candidate
        seg_event = event[start:end] if event is not None else None
        for factor in column_weights(x, a, method, seg_event):
            dist = dist * factor[:, None, :]
        for d in dist:
            picks.append(sorted(_greedy(d, k, exclude, fill)))
    return torch.tensor(picks, dtype=torch.long, device=tokens.device)


def _greedy(d: torch.Tensor, k: int, exclude: bool, fill: float) -> list[int]:
    """The k picks of the greedy max-min selection on one frame's [N, N] distances."""
    n = d.shape[0]
    first = int(torch.argmax(torch.topk(d, 2, dim=0, largest=False).values[1])) if n >= 2 else 0
    chosen = [first]
    running = d[first].clone()  # min over picked rows, per column
    for _ in range(k - 1):
        score = running.clone()
        if exclude:
            score[chosen] = fill
        j = int(torch.argmax(score))
        chosen.append(j)
        running = torch.minimum(running, d[j])
    return chosen
