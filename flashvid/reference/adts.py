"""Reference stage ``adts`` (SPEC §6): attention- and diversity-based token selection."""

from __future__ import annotations

import math

import torch

from ..config import FlashVIDConfig
from .util import spans, unit_rows, work_dtype


def column_weights(x: torch.Tensor, a: torch.Tensor, method: str) -> list[torch.Tensor]:
    """The per-column factors of the calibrated distance of one segment x [F_s, N, D], applied
    left to right (SPEC §6).

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


def adts(tokens: torch.Tensor, cls_attn: torch.Tensor, lengths: list[int],
         config: FlashVIDConfig, k: int) -> torch.Tensor:
    """[F, k] sorted local indices picked in each frame (SPEC §6), segment by segment.

    ``attention``: top-k importance (ties to the lowest index). The other methods run the greedy
    max-min selection on the cosine distance D'(i, j) = (1 - <x^_i, x^_j>) * w_j: first pick =
    argmax over columns of the column's second-smallest value, then k-1 steps of argmax of the
    running minimum. ``adts_v1`` and ``diversity`` exclude picked tokens (score -1, as published);
    ``adts`` does not (quirk Q2) unless ``dedupe``, which excludes with -inf for every method.
    """
    frames, n, _ = tokens.shape
    if k == 0:
        return torch.zeros(frames, 0, dtype=torch.long, device=tokens.device)
    method = config.selection
    if method == "attention":
        order = torch.sort(cls_attn, dim=-1, descending=True, stable=True).indices
        return order[:, :k].sort(dim=-1).values
    exclude = config.dedupe or method in ("adts_v1", "diversity")
    fill = -math.inf if config.dedupe else -1.0
    picks = []
    for start, end in spans(lengths):
        x, a = tokens[start:end], cls_attn[start:end]
        xh = unit_rows(x.to(work_dtype(x.dtype)))
        dist = 1.0 - torch.bmm(xh, xh.transpose(1, 2))  # [F_s, N, N]: row picked, col candidate
        for factor in column_weights(x, a, method):
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
