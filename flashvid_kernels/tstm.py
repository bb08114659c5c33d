"""TSTM edges: each token's most similar eligible token of the previous frame."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._runtime import (
    block_d,
    block_tokens,
    check_input,
    check_rows,
    device_guard,
    half_dot,
    interpreting,
    launch,
)
from ._tiles import cosine_tile
from .stats import token_stats

NO_PARENT = tl.constexpr(-1)  # parent of a token that links to nothing
NO_SIM = tl.constexpr(-1.0)  # its maxsim, and the similarity given to ineligible candidates


@triton.jit
def _tstm_edges_kernel(
    x_ptr, norm_ptr, elig_ptr, start_ptr, parent_ptr, maxsim_ptr,
    N, D, stride_xf, stride_xn, pid_ptr,
    HALF_DOT: tl.constexpr, EMULATE_TC: tl.constexpr, BR: tl.constexpr, BC: tl.constexpr,
    BD: tl.constexpr, REMAP: tl.constexpr,
):
    """For a block of BR tokens n of frame t (grid: frames x row blocks, one program each):

        S(n, m)      = <x^_{t,n}, x^_{t-1,m}>,  S = NO_SIM (-1) where token m of frame t-1 is
                       not eligible                         (x^ = x / ||x||, fp32, cosine_tile)
        maxsim[t, n] = max_m S(n, m),  parent[t, n] = argmax_m S(n, m)   (first index on ties)

    streaming the previous frame in blocks of BC columns with a running max/argmax, so no N x N
    matrix is ever written. Tokens that are not eligible, and every token of a segment's first
    frame (start[t] != 0, and frame 0 whatever start says), get maxsim = NO_SIM and parent =
    NO_PARENT. A row whose best similarity is not above NO_SIM keeps parent = NO_PARENT (it can
    never merge).
    """
    i_t = tl.program_id(0)
    i_r = tl.program_id(1)
    if REMAP:  # test hook (_runtime.program_order): do the work of program pid_ptr[L]
        lin = tl.load(pid_ptr + i_r.to(tl.int64) * tl.num_programs(0) + i_t)
        i_t = lin % tl.num_programs(0)
        i_r = lin // tl.num_programs(0)
    i_t = i_t.to(tl.int64)
    o_r = i_r * BR + tl.arange(0, BR)
    m_r = o_r < N
    o_c0 = tl.arange(0, BC)
    b_best = tl.full((BR,), NO_SIM, dtype=tl.float32)
    b_arg = tl.full((BR,), NO_PARENT, dtype=tl.int64)
    is_start = (tl.load(start_ptr + i_t) != 0) | (i_t == 0)  # frame 0 has no previous frame
    if not is_start:
        p_cur = x_ptr + i_t * stride_xf
        p_prev = p_cur - stride_xf
        b_nr = tl.load(norm_ptr + i_t * N + o_r, mask=m_r, other=1.0)
        for c0 in range(0, N, BC):
            o_c = c0 + o_c0
            m_c = o_c < N
            b_nc = tl.load(norm_ptr + (i_t - 1) * N + o_c, mask=m_c, other=1.0)
            b_ec = tl.load(elig_ptr + (i_t - 1) * N + o_c, mask=m_c, other=0) != 0
            b_s = cosine_tile(p_cur, p_prev, o_r, o_c, m_r, m_c, b_nr, b_nc, D, stride_xn,
                              HALF_DOT, EMULATE_TC, BR, BC, BD)  # [BR, BC]
            b_s = tl.where(b_ec[None, :], b_s, NO_SIM)
            b_s = tl.where(m_c[None, :], b_s, -float("inf"))
            b_v, b_i = tl.max(b_s, axis=1, return_indices=True)  # first index on ties
            b_i = b_i.to(tl.int64) + c0
            b_up = b_v > b_best  # strict: an earlier block keeps its ties
            b_arg = tl.where(b_up, b_i, b_arg)
            b_best = tl.where(b_up, b_v, b_best)
    b_er = tl.load(elig_ptr + i_t * N + o_r, mask=m_r, other=0) != 0
    tl.store(maxsim_ptr + i_t * N + o_r, tl.where(b_er, b_best, NO_SIM), mask=m_r)
    tl.store(parent_ptr + i_t * N + o_r, tl.where(b_er, b_arg, NO_PARENT), mask=m_r)


def tstm_edges(x: torch.Tensor, eligible: torch.Tensor, segment_start: torch.Tensor, *,
               norms: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(parent [F, N] int64, maxsim [F, N] float32) over a flat list of frames, in one launch.

    Args:
        x: [F, N, D] float16/bfloat16/float32 tokens (frames of any number of segments/videos).
        eligible: [F, N] bool (or 0/1), False for tokens that take no part (ADTS-kept ones).
        segment_start: [F] bool (or 0/1), True for the first frame of each segment.
        norms: [F, N] float32 token norms if already computed (see ``token_stats``).

    parent[t, n] is the index in frame t-1 of token (t, n)'s most similar eligible token; -1 (and
    maxsim -1) for ineligible tokens, segment starts and rows with no similarity above -1.
    Grid: one program per (frame, block of 64 tokens).
    """
    x = check_input("tstm_edges", x)
    frames, n, dim = x.shape
    check_rows("tstm_edges", "eligible", eligible, frames, n)
    check_rows("tstm_edges", "norms", norms, frames, n)
    if tuple(segment_start.shape) != (frames,):
        raise ValueError(f"tstm_edges: segment_start must be [{frames}], got "
                         f"{tuple(segment_start.shape)}")
    eligible = eligible if eligible.dtype == torch.bool else eligible != 0
    segment_start = segment_start if segment_start.dtype == torch.bool else segment_start != 0
    if norms is None:
        norms, _ = token_stats(x)
    parent = torch.empty(frames, n, dtype=torch.int64, device=x.device)
    maxsim = torch.empty(frames, n, dtype=torch.float32, device=x.device)
    if frames == 0 or n == 0:
        return parent, maxsim
    bt = block_tokens(n)
    with device_guard(x):
        # bool -> int8 views: the same bytes, no copy
        launch(_tstm_edges_kernel, (frames, triton.cdiv(n, bt)),
               x, norms.float().contiguous(), eligible.contiguous().view(torch.int8),
               segment_start.contiguous().view(torch.int8), parent, maxsim,
               n, dim, x.stride(0), x.stride(1),
               HALF_DOT=half_dot(x), EMULATE_TC=interpreting(), BR=bt, BC=bt,
               BD=block_d(dim, x.dtype))
    return parent, maxsim
