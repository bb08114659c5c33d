"""Importance scores (§3): the mean attention each token receives in one attention layer.

    a[s, j] = 1/H sum_h 1/N sum_i softmax_j(q[s, h, i] . k[s, h, j] * scale)

is the column mean of the head-averaged attention matrix of sequence s (one frame). The full
[H, N, N] matrix is never formed: queries are processed in blocks, each block's softmax rows are
summed into a running [S, H, N] column sum, so the extra memory is O(block * N * H), bounded by
``block_elems`` elements, whatever the number of frames.
"""

from __future__ import annotations

import torch

DEFAULT_BLOCK_ELEMS = 1 << 22  # fp32 score elements per block (16 MiB)
HALF_DTYPES = (torch.float16, torch.bfloat16)


@torch.no_grad()
def attention_column_mean(q: torch.Tensor, k: torch.Tensor, *, scale: float | None = None,
                          round_to: torch.dtype | None = None,
                          block_elems: int = DEFAULT_BLOCK_ELEMS) -> torch.Tensor:
    """Column mean of softmax(q kᵀ · scale), averaged over heads and queries, per sequence.

    Args:
        q: [S, H, N, d] queries (post-RoPE where the model applies RoPE) of S independent
            sequences (frames) of N tokens each, any floating dtype.
        k: [S, H, N, d] keys, same shape, dtype and device as ``q``.
        scale: logit scale; default ``d ** -0.5``.
        round_to: None computes everything in float32. A half dtype (float16/bfloat16) rounds
            the softmax probabilities, the head mean and the final query mean to that dtype, as
            the published code does when it averages the model-dtype attention weights (§1);
            the accumulation itself stays in float32.
        block_elems: upper bound on the float32 score elements held at once (>= 1).

    Returns:
        [S, N] float32, non-negative; every row sums to 1 (up to rounding). No autograd graph
        (a selection score).
    """
    if not isinstance(q, torch.Tensor) or not isinstance(k, torch.Tensor):
        raise TypeError("q and k must be torch.Tensors of shape [S, H, N, d]")
    if q.dim() != 4 or q.shape != k.shape:
        raise ValueError(
            f"q and k must both have shape [sequences, heads, tokens, head_dim], got "
            f"{tuple(q.shape)} and {tuple(k.shape)}")
    if not (q.is_floating_point() and k.is_floating_point()):
        raise TypeError(f"q and k must be floating tensors, got {q.dtype} and {k.dtype}")
    if q.device != k.device:
        raise ValueError(f"q and k must be on one device, got {q.device} and {k.device}")
    if round_to is not None and round_to not in HALF_DTYPES:
        raise ValueError(f"round_to must be None, torch.float16 or torch.bfloat16, got {round_to}")
    if block_elems < 1:
        raise ValueError(f"block_elems must be >= 1, got {block_elems}")
    seqs, heads, n, dim = q.shape
    if seqs == 0 or heads == 0 or n == 0 or dim == 0:
        raise ValueError(f"q and k must be non-empty, got shape {tuple(q.shape)}")
    scale = dim ** -0.5 if scale is None else float(scale)

    kf = k.float().transpose(-1, -2)  # [S, H, d, N]
    col = torch.zeros(seqs, heads if round_to is None else 1, n, dtype=torch.float32,
                      device=q.device)
    # Blocks over (sequences x queries) such that one block's scores fit in block_elems.
    per_seq = heads * n  # score elements per query of one sequence
    rows = max(1, block_elems // per_seq)  # queries per block for one sequence
    seq_step = max(1, rows // n) if rows >= n else 1
    q_step = n if rows >= n else rows
    for s0 in range(0, seqs, seq_step):
        s1 = min(seqs, s0 + seq_step)
        for i0 in range(0, n, q_step):
            i1 = min(n, i0 + q_step)
            scores = torch.matmul(q[s0:s1, :, i0:i1].float(), kf[s0:s1]) * scale  # [s, H, b, N]
            probs = torch.softmax(scores, dim=-1)
            if round_to is None:
                col[s0:s1] += probs.sum(dim=2)
            else:
                head_mean = probs.to(round_to).float().mean(dim=1)  # [s, b, N]
                col[s0:s1, 0] += head_mean.to(round_to).float().sum(dim=1)
    if round_to is None:
        return col.mean(dim=1) / n
    return (col[:, 0] / n).to(round_to).float()


def merge_unit_mean(scores: torch.Tensor, unit: int,
                    round_to: torch.dtype | None = None) -> torch.Tensor:
    """Average each group of ``unit`` consecutive scores (Qwen's 2x2 merge units).

    Args:
        scores: [..., M * unit] float32.
        unit: group size (spatial_merge_size ** 2).
        round_to: optional half dtype to round the result to (published precision).

    Returns:
        [..., M] float32.
    """
    if scores.shape[-1] % unit:
        raise ValueError(f"{scores.shape[-1]} scores do not split into groups of {unit}")
    out = scores.reshape(*scores.shape[:-1], scores.shape[-1] // unit, unit).mean(dim=-1)
    return out if round_to is None else out.to(round_to).float()
