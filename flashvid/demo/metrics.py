"""Fidelity of a compressed video: how well the output tokens represent the input tokens.

Definition (one rule for every strategy):

* The **representative** of input token (t, n) is the output row ``source[t, n]``: the row that
  stands for it (itself if kept, its tree's or cluster's merged row otherwise). A token that a
  pruning strategy dropped (``source[t, n] == -1``) has no such row; its representative is then
  the output row, among those whose position lies in the same frame t, that is most
  cosine-similar to it: the kept token the LLM could best attend to in its place. (Should a
  frame have no row at all, the most similar row of the whole video is used.)
* **Token fidelity** = cos(x[t, n], representative row), computed in float64 (a zero vector has
  cosine 0 with everything).
* **mean** = the mean of the token fidelities over all F*N input tokens.
* **worst frame** = the minimum over frames of the per-frame mean token fidelity.
* **count** = the number of output rows V (what the LLM has to process).
* **changed** = the mean token fidelity over the *changed* tokens only: tokens (t >= 1) whose
  cosine similarity to the token at the same position in frame t-1 is at most 0.8 (the default
  TSTM threshold), i.e. content that moved, appeared or was cut to. These are exactly the
  tokens a same-position temporal merge (TTM) cannot merge, so this is where following motion
  (TSTM) can help. NaN when no token changed.

Cosine ignores the norm, so FlashVID's published "official" aggregation (subtree sum over
1 + direct children, quirk Q1) scores the same as a true mean of the same tree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..types import CompressedVideo

CHANGED_THRESHOLD = 0.8


@dataclass(frozen=True)
class Fidelity:
    """Fidelity scores of one compressed video (see the module docstring).

    Attributes:
        mean: mean token fidelity over all input tokens.
        worst_frame: the lowest per-frame mean.
        worst_frame_index: the frame where it occurs (the first one on ties).
        count: output rows V.
        changed: mean fidelity of the changed tokens (NaN if none).
        changed_tokens: how many tokens changed.
        per_frame: [F] float64 per-frame means.
        per_token: [F, N] float64 token fidelities.
    """

    mean: float
    worst_frame: float
    worst_frame_index: int
    count: int
    changed: float
    changed_tokens: int
    per_frame: torch.Tensor
    per_token: torch.Tensor


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)


def representatives(tokens: torch.Tensor, out: CompressedVideo) -> torch.Tensor:
    """[F, N] int64: the output row representing each input token (module docstring).

    ``tokens`` [F, N, D] are the input features ``out`` was computed from.
    """
    frames, n, dim = tokens.shape
    if tuple(out.source.shape) != (frames, n):
        raise ValueError(f"the compressed video covers {tuple(out.source.shape)} (frames, tokens)"
                         f" but tokens have shape {tuple(tokens.shape)}; expected the input the "
                         "video was compressed from")
    if out.tokens.shape[0] == 0:
        raise ValueError("the compressed video has no output rows; nothing can represent the "
                         "input")
    rep = out.source.clone()
    dropped = rep < 0
    if not bool(dropped.any()):
        return rep
    x = _unit(tokens.double())
    rows = _unit(out.tokens.double().to(tokens.device))
    row_frame = out.frames.to(tokens.device)
    for t in dropped.any(dim=1).nonzero().flatten().tolist():
        candidates = (row_frame == t).nonzero().flatten()
        if candidates.numel() == 0:
            candidates = torch.arange(rows.shape[0], device=tokens.device)
        lost = dropped[t].nonzero().flatten()
        sim = x[t, lost] @ rows[candidates].T  # [dropped, candidates]
        rep[t, lost] = candidates[sim.argmax(dim=1)]
    return rep


def changed_tokens(tokens: torch.Tensor, threshold: float = CHANGED_THRESHOLD) -> torch.Tensor:
    """[F, N] bool: tokens of frames t >= 1 whose cosine similarity to the same position in
    frame t-1 is <= ``threshold`` (frame 0 is never changed). ``tokens`` [F, N, D] floating."""
    x = _unit(tokens.double())
    changed = torch.zeros(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
    changed[1:] = (x[1:] * x[:-1]).sum(dim=-1) <= threshold
    return changed


def fidelity(tokens: torch.Tensor, out: CompressedVideo,
             changed_threshold: float = CHANGED_THRESHOLD) -> Fidelity:
    """Fidelity of ``out`` as a compression of ``tokens`` [F, N, D] (module docstring)."""
    rep = representatives(tokens, out)
    x = _unit(tokens.double())
    rows = _unit(out.tokens.double().to(tokens.device))
    per_token = (x * rows[rep]).sum(dim=-1)  # [F, N]
    per_frame = per_token.mean(dim=1)
    worst = int(torch.argmin(per_frame))
    changed = changed_tokens(tokens, changed_threshold)
    n_changed = int(changed.sum())
    return Fidelity(mean=float(per_token.mean()), worst_frame=float(per_frame[worst]),
                    worst_frame_index=worst, count=int(out.tokens.shape[0]),
                    changed=float(per_token[changed].mean()) if n_changed else math.nan,
                    changed_tokens=n_changed, per_frame=per_frame, per_token=per_token)
