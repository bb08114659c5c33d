"""Reference stage ``tstm`` (§7): edges and merge decisions."""

from __future__ import annotations

import torch

from ..config import FlashVIDConfig
from .util import spans, unit_rows, work_dtype


def tstm_edges(x: torch.Tensor, eligible: torch.Tensor,
               same_position: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """maxsim [F_s, N] and parent [F_s, N] of one segment (§7), in the work dtype.

    For t >= 1, token n's most cosine-similar eligible token of frame t-1 (first index on ties),
    with similarity -1 for ineligible tokens; frame 0 has maxsim -1 and parent -1.
    ``same_position`` (the TTM baseline) only considers token n of frame t-1.
    """
    frames, n, _ = x.shape
    xh = unit_rows(x.to(work_dtype(x.dtype)))
    maxsim = torch.full((frames, n), -1.0, dtype=xh.dtype, device=x.device)
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
    """Which tokens merge into their parent, and whether the soft threshold was needed (§7).

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


def tstm(tokens: torch.Tensor, eligible: torch.Tensor, lengths: list[int],
         config: FlashVIDConfig, frame_budgets: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(parent [F, N] index in frame t-1 or -1, merged [F, N] bool) of every segment (§7).

    A segment must keep at least the sum of its frames' budgets ``frame_budgets`` (B per frame;
    B_t in exact-count mode). Segments of one frame, and a ``temporal_threshold`` of 1, merge
    nothing.
    """
    frames, n, _ = tokens.shape
    parent = torch.full((frames, n), -1, dtype=torch.long, device=tokens.device)
    merged = torch.zeros(frames, n, dtype=torch.bool, device=tokens.device)
    if config.temporal_threshold >= 1.0:
        return parent, merged
    for start, end in spans(lengths):
        if end - start < 2:
            continue
        maxsim, parent[start:end] = tstm_edges(tokens[start:end], eligible[start:end],
                                               config.temporal_merge == "ttm")
        merged[start:end], _ = tstm_merged(maxsim, config.temporal_threshold,
                                           sum(frame_budgets[start:end]))
    return parent, merged
