"""TSTM edges: each token's most similar eligible token of the previous frame."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._runtime import block_d, block_tokens, check_input, half_dot
from .stats import token_stats


@triton.jit
def _tstm_edges_kernel(
    x_ptr, norm_ptr, elig_ptr, start_ptr, maxsim_ptr, parent_ptr,
    N, D, stride_xf, stride_xn,
    HALF_DOT: tl.constexpr, BR: tl.constexpr, BC: tl.constexpr, BD: tl.constexpr,
):
    """For a block of tokens n of frame t (grid: frames x row blocks):

        S(n, m)      = <x^_{t,n}, x^_{t-1,m}>,  S = -1 where token m of frame t-1 is not eligible
        maxsim[t, n] = max_m S(n, m),  parent[t, n] = argmax_m S(n, m)   (first index on ties)

    streaming the previous frame in column blocks with a running max/argmax, so no N x N matrix
    is ever written. Tokens that are not eligible, and every token of a segment's first frame
    (start[t] != 0), get maxsim = -1 and parent = -1. A row whose best similarity is not above
    -1 keeps parent = -1 (it can never merge).
    """
    i_t = tl.program_id(0).to(tl.int64)
    i_r = tl.program_id(1)
    o_r = i_r * BR + tl.arange(0, BR)
    m_r = o_r < N
    o_c0 = tl.arange(0, BC)
    o_d = tl.arange(0, BD)
    b_best = tl.full((BR,), -1.0, dtype=tl.float32)
    b_arg = tl.full((BR,), -1, dtype=tl.int32)
    is_start = tl.load(start_ptr + i_t) != 0
    if not is_start:
        p_cur = x_ptr + i_t * stride_xf
        p_prev = x_ptr + (i_t - 1) * stride_xf
        b_nr = tl.load(norm_ptr + i_t * N + o_r, mask=m_r, other=1.0)
        for c0 in range(0, N, BC):
            o_c = c0 + o_c0
            m_c = o_c < N
            b_nc = tl.load(norm_ptr + (i_t - 1) * N + o_c, mask=m_c, other=1.0)
            b_ec = tl.load(elig_ptr + (i_t - 1) * N + o_c, mask=m_c, other=0) != 0
            b_s = tl.zeros((BR, BC), dtype=tl.float32)
            for d0 in range(0, D, BD):
                m_d = (d0 + o_d) < D
                b_a = tl.load(p_cur + o_r[:, None].to(tl.int64) * stride_xn + (d0 + o_d)[None, :],
                              mask=m_r[:, None] & m_d[None, :], other=0.0)  # [BR, BD]
                b_b = tl.load(p_prev + o_c[:, None].to(tl.int64) * stride_xn + (d0 + o_d)[None, :],
                              mask=m_c[:, None] & m_d[None, :], other=0.0)  # [BC, BD]
                if HALF_DOT:
                    b_s += tl.dot(b_a, tl.trans(b_b))
                else:
                    b_a = b_a.to(tl.float32) / b_nr[:, None]
                    b_b = b_b.to(tl.float32) / b_nc[:, None]
                    b_s += tl.dot(b_a, tl.trans(b_b), input_precision="ieee")
            if HALF_DOT:
                b_s = b_s / b_nr[:, None] / b_nc[None, :]
            b_s = tl.where(b_ec[None, :], b_s, -1.0)
            b_s = tl.where(m_c[None, :], b_s, -float("inf"))
            b_v = tl.max(b_s, axis=1)
            b_i = tl.argmax(b_s, axis=1).to(tl.int32) + c0
            b_up = b_v > b_best  # strict: an earlier block keeps its ties
            b_arg = tl.where(b_up, b_i, b_arg)
            b_best = tl.where(b_up, b_v, b_best)
    b_er = tl.load(elig_ptr + i_t * N + o_r, mask=m_r, other=0) != 0
    tl.store(maxsim_ptr + i_t * N + o_r, tl.where(b_er, b_best, -1.0), mask=m_r)
    tl.store(parent_ptr + i_t * N + o_r, tl.where(b_er, b_arg, -1), mask=m_r)


def tstm_edges(x: torch.Tensor, eligible: torch.Tensor, segment_start: torch.Tensor, *,
               norms: torch.Tensor | None = None,
               out: tuple[torch.Tensor, torch.Tensor] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(parent [F, N] int32, maxsim [F, N] fp32) over a flat list of frames, in one launch.

    Args:
        x: [F, N, D] float16/bfloat16/float32 tokens (frames of any number of segments/videos).
        eligible: [F, N] bool, False for tokens that take no part (ADTS-kept ones).
        segment_start: [F] bool, True for the first frame of each segment (no previous frame).
        norms: [F, N] fp32 token norms if already computed (see ``token_stats``).
        out: optional (parent [F, N] int32, maxsim [F, N] fp32) buffers to write into.

    parent[t, n] is the index in frame t-1 of token (t, n)'s most similar eligible token; -1 (and
    maxsim -1) for ineligible tokens, segment starts and rows with no similarity above -1.
    """
    x = check_input("tstm_edges", x)
    frames, n, dim = x.shape
    if tuple(eligible.shape) != (frames, n):
        raise ValueError(f"tstm_edges: eligible must be [{frames}, {n}], got "
                         f"{tuple(eligible.shape)}")
    if tuple(segment_start.shape) != (frames,):
        raise ValueError(f"tstm_edges: segment_start must be [{frames}], got "
                         f"{tuple(segment_start.shape)}")
    if norms is None:
        norms, _ = token_stats(x)
    if out is None:
        parent = torch.empty(frames, n, dtype=torch.int32, device=x.device)
        maxsim = torch.empty(frames, n, dtype=torch.float32, device=x.device)
    else:
        parent, maxsim = out
        ok_parent = parent.dtype == torch.int32 and parent.is_contiguous()
        ok_maxsim = maxsim.dtype == torch.float32 and maxsim.is_contiguous()
        if not (ok_parent and ok_maxsim and parent.shape == maxsim.shape == (frames, n)):
            raise ValueError(f"tstm_edges: out must be contiguous (int32, float32) [{frames}, {n}] "
                             "tensors")
    bt = block_tokens(n)
    _tstm_edges_kernel[(frames, triton.cdiv(n, bt))](
        x, norms.contiguous(), eligible.to(torch.int8).contiguous(),
        segment_start.to(torch.int8).contiguous(), maxsim, parent,
        n, dim, x.stride(0), x.stride(1),
        HALF_DOT=half_dot(x), BR=bt, BC=bt, BD=block_d(dim),
    )
    return parent, maxsim
