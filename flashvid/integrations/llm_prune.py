"""The inner-LLM stage of FlashVID (§10), as pure functions: ``llm_prune``.

At decoder layer K-1 of the prefill the attention of the last prompt token over every key gives
each video token a score (mean over heads); before layer K only the top ``ceil(V' * ratio)`` of
the V' video tokens (the *candidates*) by that score stay, with every other token:

    w[b, h, j]  = softmax_j(q[b, h] . k[b, h // groups, j] * scale)      over the row's real keys
    s[b, j]     = 1/H sum_h w[b, h, j]
    keep[b]     = sorted(non-candidates of row b  U  top-ceil(V'_b * ratio) candidates by s[b])

Only the last query's row is ever computed (from q and the cached k): no attention matrix. The
precision follows the published code: q . k and the scale in the model dtype, softmax in float32,
the weights rounded to the model dtype, the head mean in the model dtype (``torch.mean``), top-k
with ``torch.topk`` on each row's candidate scores, then sorted.

The runtime that applies the selection inside ``generate()`` is in ``_llm_stage.py``.
"""

from __future__ import annotations

import math

import torch

__all__ = ["last_query_attention", "llm_prune_keep", "llm_prune_count"]


def llm_prune_count(candidates: int, ratio: float) -> int:
    """Video tokens kept at layer K out of ``candidates``: ``ceil(candidates * ratio)`` (Python
    float arithmetic, as published)."""
    return math.ceil(candidates * ratio)


@torch.no_grad()
def last_query_attention(q: torch.Tensor, k: torch.Tensor, key_mask: torch.Tensor | None = None,
                         *, scale: float | None = None) -> torch.Tensor:
    """Attention weights of one query per row over all keys (the last prompt token at layer K-1).

    Args:
        q: [B, H, d] post-RoPE query of the last prompt token of each row, model dtype.
        k: [B, H_kv, L, d] post-RoPE keys of layer K-1 (H divisible by H_kv: grouped-query
            attention repeats each key head H / H_kv times), same dtype and device as ``q``.
        key_mask: [B, L] bool, True for the keys the query may attend to (real tokens at or
            before the query); None: all.
        scale: logit scale; default ``d ** -0.5``.

    Returns:
        [B, H, L] in the dtype of ``q``: softmax(q . kᵀ * scale) computed in float32 and rounded
        to the model dtype; 0 where ``key_mask`` is False.
    """
    if q.dim() != 3 or k.dim() != 4 or q.shape[0] != k.shape[0] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q must be [B, H, d] and k [B, H_kv, L, d]; got {tuple(q.shape)} and "
                         f"{tuple(k.shape)}")
    batch, heads, dim = q.shape
    kv_heads, length = k.shape[1], k.shape[2]
    if heads % kv_heads:
        raise ValueError(f"{heads} query heads do not split into {kv_heads} key heads")
    if key_mask is not None and tuple(key_mask.shape) != (batch, length):
        raise ValueError(f"key_mask must be [B, L] = {(batch, length)}, got "
                         f"{tuple(key_mask.shape)}")
    scale = dim ** -0.5 if scale is None else scale
    keys = k.to(q.dtype).repeat_interleave(heads // kv_heads, dim=1)  # [B, H, L, d]
    logits = torch.matmul(q[:, :, None, :], keys.transpose(-1, -2))[:, :, 0] * scale  # [B, H, L]
    if key_mask is not None:
        logits = logits.masked_fill(~key_mask[:, None, :].to(logits.device), float("-inf"))
    return torch.softmax(logits, dim=-1, dtype=torch.float32).to(q.dtype)


def llm_prune_keep(attn: torch.Tensor, candidates: torch.Tensor, ratio: float,
                   valid: torch.Tensor | None = None) -> list[torch.Tensor]:
    """The columns each row keeps at layer K.

    Args:
        attn: [B, H, L] attention weights of the last prompt token (``last_query_attention``),
            or [B, H, 1, L] as the published code holds them.
        candidates: [B, L] bool, the prunable video tokens of each row.
        ratio: share of each row's candidates kept, in (0, 1].
        valid: [B, L] bool real (non-padding) columns; None: all. Invalid columns are dropped.

    Returns:
        per row, [L''_b] int64 ascending columns: every valid non-candidate and the top
        ``ceil(V'_b * ratio)`` candidates by the head-mean weight (``torch.topk`` order on ties).
    """
    if attn.dim() == 4:
        attn = attn[:, :, -1, :]
    if attn.dim() != 3 or tuple(candidates.shape) != (attn.shape[0], attn.shape[2]):
        raise ValueError(f"attn must be [B, H, L] and candidates [B, L]; got {tuple(attn.shape)} "
                         f"and {tuple(candidates.shape)}")
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    scores = attn.mean(dim=1)  # [B, L], in the weights' dtype, as published
    candidates = candidates.to(scores.device, torch.bool)
    if valid is None:
        valid = torch.ones_like(candidates)
    valid = valid.to(scores.device, torch.bool)
    candidates = candidates & valid
    rows = []
    for b in range(scores.shape[0]):
        cand = candidates[b].nonzero().flatten()
        kept = cand
        if cand.numel():
            count = llm_prune_count(int(cand.numel()), ratio)
            top = torch.topk(scores[b, cand][None], k=count, dim=-1).indices[0].sort().values
            kept = cand[top]
        others = (valid[b] & ~candidates[b]).nonzero().flatten()
        rows.append(torch.sort(torch.cat([others, kept])).values)
    return rows
