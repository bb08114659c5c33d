"""Importance scores inside vLLM's Qwen vision towers (§3), without attention maps.

vLLM's vision attention (``Qwen2_5_VisionAttention``, used by Qwen2.5-VL and Qwen3-VL) applies
the rotary embedding and then calls its ``attn`` submodule (``MMEncoderAttention``) with
``query``/``key`` of shape [1, S, H_local, d]. A forward pre-hook on that submodule of the LAST
vision block keeps q and k for the duration of one tower call; nothing is recomputed and the
tower still runs its fused attention. The scores are then, per temporal patch (one FlashVID
frame), the column mean of softmax(q kᵀ · scale) over that frame's patches, averaged over heads
and queries (:func:`flashvid.integrations.importance.attention_column_mean`, computed in query
blocks), then averaged over each 2x2 merge unit (``merge_unit_mean``), exactly as the
transformers adapters compute them.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any

import torch

from ..importance import HALF_DTYPES, attention_column_mean, merge_unit_mean


@contextmanager
def capture_last_block(visual: Any):
    """Keep the post-RoPE query and key of the last vision block while the block runs.

    Yields a dict that holds ``"q"`` and ``"k"`` ([S, H_local, d] each) after the tower ran.
    """
    attention = visual.blocks[-1].attn
    inner = getattr(attention, "attn", None)
    if inner is None:
        raise TypeError(f"unsupported vision attention {type(attention).__name__}: FlashVID "
                        "expects an `attn` submodule that receives query and key")
    captured: dict[str, torch.Tensor] = {}

    def pre_hook(module: Any, args: tuple, kwargs: dict) -> None:
        q = kwargs.get("query", args[0] if args else None)
        k = kwargs.get("key", args[1] if len(args) > 1 else None)
        captured["q"] = q.reshape(-1, q.shape[-2], q.shape[-1])  # [1, S, H, d] -> [S, H, d]
        captured["k"] = k.reshape(-1, k.shape[-2], k.shape[-1])

    handle = inner.register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        yield captured
    finally:
        handle.remove()


def video_scores(captured: dict[str, torch.Tensor], grids: Sequence[Sequence[int]], *,
                 merge: int, scale: float | None, total_heads: int,
                 window_index: Any = None, all_reduce: Any = None) -> list[torch.Tensor]:
    """Per-video importance [t, h*w / merge²] (float32, raster order) from captured q/k.

    Args:
        captured: ``{"q", "k"}`` from :func:`capture_last_block`, covering the videos of
            ``grids`` back to back (in the tower's own order).
        grids: (t, h, w) per video in patches, as ``video_grid_thw``.
        merge: spatial merge size (2): ``merge²`` patches form one LLM token.
        scale: the attention's logit scale (None: d ** -0.5).
        total_heads: heads of the attention over all tensor-parallel ranks.
        window_index: Qwen2.5-VL only: ``window_index(t, h, w)`` -> [t*h*w/merge²] raster index
            of each merge unit in the tower's window order (the order q/k arrive in).
        all_reduce: with tensor parallelism (heads split over ranks), a function that sums a
            tensor over the ranks; None on one rank.
    """
    q, k = captured.get("q"), captured.get("k")
    if q is None or k is None:
        raise RuntimeError("FlashVID's importance hook did not fire on the last vision block "
                           "(is the vision encoder compiled? FlashVID needs it eager)")
    heads = q.shape[1]
    split = all_reduce is not None and heads != total_heads
    round_to = q.dtype if (q.dtype in HALF_DTYPES and not split) else None
    unit = merge * merge
    out, offset = [], 0
    for t, h, w in ((int(a), int(b), int(c)) for a, b, c in grids):
        n = h * w
        qv = q[offset:offset + t * n].reshape(t, n, heads, -1).transpose(1, 2)  # [t, H, n, d]
        kv = k[offset:offset + t * n].reshape(t, n, heads, -1).transpose(1, 2)
        col = attention_column_mean(qv, kv, scale=scale, round_to=round_to)  # [t, n]
        if split:  # mean over local heads -> mean over all heads
            col = all_reduce(col * heads) / total_heads
        merged = merge_unit_mean(col.reshape(-1), unit, round_to)  # [t * n / unit]
        if window_index is not None:
            order = torch.as_tensor(window_index(t, h, w), device=merged.device)
            merged = merged[torch.argsort(order)]
        out.append(merged.view(t, n // unit))
        offset += t * n
    if offset != q.shape[0]:
        raise RuntimeError(f"video_grid_thw covers {offset} patches, the vision tower saw "
                           f"{q.shape[0]}")
    return out
