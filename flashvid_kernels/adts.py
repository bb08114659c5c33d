"""ADTS: the fused per-frame cosine-distance Gram and greedy max-min selection."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._runtime import block_d, block_tokens, check_input, half_dot, next_pow2
from .stats import token_stats


@triton.jit
def _adts_select_kernel(
    x_ptr, norm_ptr, w_ptr, e_ptr, dist_ptr, out_ptr,
    N, D, K, stride_xf, stride_xn, fill,
    HAS_W: tl.constexpr, HAS_E: tl.constexpr, EXCLUDE: tl.constexpr, HALF_DOT: tl.constexpr,
    NP: tl.constexpr, KP: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr,
):
    """Greedy max-min selection of K tokens in one frame f (one program per frame).

    With x^_i = x_i / ||x_i|| (norms given), the calibrated distance is

        D'(i, j) = ((1 - <x^_i, x^_j>) * w_j) * e_j                 [w, e optional, fp32]

    (row i = a picked token, column j = a candidate; the Gram is symmetric, D' is not). It is
    built tile by tile (each tile of the symmetric Gram once) into a scratch [NP, NP] that stays
    in L2 when it does not fit on chip. Then

        first   = argmax_j  second-smallest_i D'(i, j)
        run_j   = D'(first, j)
        repeat K-1 times:  s_j = run_j  (s_j = fill for picked j when EXCLUDE)
                           j*  = argmax_j s_j;  run_j = min(run_j, D'(j*, j))

    with ties to the lowest index, and writes the K picks sorted ascending. HALF_DOT feeds raw
    half-precision tiles to the tensor cores and divides the dot products by the norms after.
    """
    i_f = tl.program_id(0).to(tl.int64)
    p_x = x_ptr + i_f * stride_xf
    p_dist = dist_ptr + i_f * NP * NP
    o_t = tl.arange(0, BT)
    o_d = tl.arange(0, BD)
    inf = float("inf")

    # 1. D' tiles: for r <= c compute the Gram tile once and write D'[r, c] and D'[c, r]
    for r0 in range(0, N, BT):
        o_r = r0 + o_t
        m_r = o_r < N
        b_nr = tl.load(norm_ptr + i_f * N + o_r, mask=m_r, other=1.0)
        for c0 in range(r0, N, BT):
            o_c = c0 + o_t
            m_c = o_c < N
            b_nc = tl.load(norm_ptr + i_f * N + o_c, mask=m_c, other=1.0)
            b_g = tl.zeros((BT, BT), dtype=tl.float32)
            for d0 in range(0, D, BD):
                m_d = (d0 + o_d) < D
                b_a = tl.load(p_x + o_r[:, None].to(tl.int64) * stride_xn + (d0 + o_d)[None, :],
                              mask=m_r[:, None] & m_d[None, :], other=0.0)  # [BT, BD]
                b_b = tl.load(p_x + o_c[:, None].to(tl.int64) * stride_xn + (d0 + o_d)[None, :],
                              mask=m_c[:, None] & m_d[None, :], other=0.0)  # [BT, BD]
                if HALF_DOT:
                    b_g += tl.dot(b_a, tl.trans(b_b))
                else:
                    b_a = b_a.to(tl.float32) / b_nr[:, None]
                    b_b = b_b.to(tl.float32) / b_nc[:, None]
                    b_g += tl.dot(b_a, tl.trans(b_b), input_precision="ieee")
            if HALF_DOT:
                b_g = b_g / b_nr[:, None] / b_nc[None, :]
            b_cd = 1.0 - b_g  # [BT(r), BT(c)] cosine distance
            b_rc = b_cd
            b_cr = tl.trans(b_cd)
            if HAS_W:
                b_rc = b_rc * tl.load(w_ptr + i_f * N + o_c, mask=m_c, other=0.0)[None, :]
                b_cr = b_cr * tl.load(w_ptr + i_f * N + o_r, mask=m_r, other=0.0)[None, :]
            if HAS_E:
                b_rc = b_rc * tl.load(e_ptr + i_f * N + o_c, mask=m_c, other=0.0)[None, :]
                b_cr = b_cr * tl.load(e_ptr + i_f * N + o_r, mask=m_r, other=0.0)[None, :]
            tl.store(p_dist + o_r[:, None] * NP + o_c[None, :], b_rc,
                     mask=m_r[:, None] & m_c[None, :])
            if c0 != r0:
                tl.store(p_dist + o_c[:, None] * NP + o_r[None, :], b_cr,
                         mask=m_c[:, None] & m_r[None, :])
    tl.debug_barrier()

    # 2. first pick: the column whose second-smallest value is largest
    best_v = -inf
    best_i = 0
    for c0 in range(0, N, BT):
        o_c = c0 + o_t
        m_c = o_c < N
        b_m1 = tl.full((BT,), inf, dtype=tl.float32)
        b_m2 = tl.full((BT,), inf, dtype=tl.float32)
        for r0 in range(0, N, BT):
            o_r = r0 + o_t
            m_r = o_r < N
            b_tile = tl.load(p_dist + o_r[:, None] * NP + o_c[None, :],
                             mask=m_r[:, None] & m_c[None, :], other=inf)  # [BT, BT]
            b_lo = tl.min(b_tile, axis=0)
            b_at = tl.argmin(b_tile, axis=0)
            b_lo2 = tl.min(tl.where(o_t[:, None] == b_at[None, :], inf, b_tile), axis=0)
            b_m2 = tl.minimum(tl.minimum(b_m2, b_lo2), tl.maximum(b_m1, b_lo))
            b_m1 = tl.minimum(b_m1, b_lo)
        b_cand = tl.where(m_c, b_m2, -inf)
        v = tl.max(b_cand, axis=0)
        i = tl.argmax(b_cand, axis=0)
        best_i = tl.where(v > best_v, c0 + i, best_i)
        best_v = tl.maximum(best_v, v)

    # 3. greedy max-min steps on the running minimum
    o_n = tl.arange(0, NP)
    m_n = o_n < N
    b_run = tl.load(p_dist + best_i * NP + o_n, mask=m_n, other=-inf)  # [NP]
    b_chosen = o_n == best_i
    o_k = tl.arange(0, KP)
    b_picks = tl.where(o_k == 0, best_i, NP)  # NP pads past every index for the sort
    for step in range(1, K):
        b_score = b_run
        if EXCLUDE:
            b_score = tl.where(b_chosen, fill, b_score)
        b_score = tl.where(m_n, b_score, -inf)
        j = tl.argmax(b_score, axis=0)
        b_row = tl.load(p_dist + j * NP + o_n, mask=m_n, other=-inf)
        b_run = tl.minimum(b_run, b_row)
        b_chosen = b_chosen | (o_n == j)
        b_picks = tl.where(o_k == step, j, b_picks)
    b_picks = tl.sort(b_picks)
    tl.store(out_ptr + i_f * K + o_k, b_picks.to(tl.int64), mask=o_k < K)


def adts_select(x: torch.Tensor, weights: torch.Tensor | None, k: int,
                exclude_selected: bool = False, *, fill: float = -1.0,
                event: torch.Tensor | None = None, norms: torch.Tensor | None = None,
                out: torch.Tensor | None = None) -> torch.Tensor:
    """[F, k] int64 sorted local indices picked in each frame by the greedy max-min selection.

    Args:
        x: [F, N, D] float16/bfloat16/float32 tokens of any number of frames (from any number of
            segments or videos: each frame is independent).
        weights: [F, N] column weights w_j (1e6 * importance for ADTS), or None (unweighted).
        k: picks per frame, 1 <= k <= N.
        exclude_selected: score picked tokens ``fill`` (-1 as published for attn_div/div;
            -inf to forbid repeats for any weights); False lets a token be picked again.
        event: [F, N] second column factor e_j (event relevance), applied after ``weights``.
        norms: [F, N] fp32 token norms if already computed (see ``token_stats``).
        out: optional [F, k] int64 buffer to write into.
    """
    x = check_input("adts_select", x)
    frames, n, dim = x.shape
    if not 1 <= k <= n:
        raise ValueError(f"adts_select: k must be in [1, {n}] (tokens per frame), got {k}")
    for name, t in (("weights", weights), ("event", event), ("norms", norms)):
        if t is not None and tuple(t.shape) != (frames, n):
            raise ValueError(f"adts_select: {name} must be [{frames}, {n}], got {tuple(t.shape)}")
    if norms is None:
        norms, _ = token_stats(x)
    w = weights.float().contiguous() if weights is not None else norms
    e = event.float().contiguous() if event is not None else norms
    np_ = max(16, next_pow2(n))
    dist = torch.empty(frames, np_, np_, dtype=torch.float32, device=x.device)
    if out is None:
        out = torch.empty(frames, k, dtype=torch.int64, device=x.device)
    elif out.shape != (frames, k) or out.dtype != torch.int64 or not out.is_contiguous():
        raise ValueError(f"adts_select: out must be a contiguous int64 [{frames}, {k}] tensor")
    _adts_select_kernel[(frames,)](
        x, norms.contiguous(), w, e, dist, out,
        n, dim, k, x.stride(0), x.stride(1), float(fill),
        HAS_W=weights is not None, HAS_E=event is not None, EXCLUDE=bool(exclude_selected),
        HALF_DOT=half_dot(x), NP=np_, KP=max(16, next_pow2(k)), BT=block_tokens(n),
        BD=block_d(dim),
    )
    return out
