"""ADTS: the calibrated cosine-distance Gram of every frame, spread over tile-pair programs, and
the greedy max-min selection, run by the last program of each frame in the same launch."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._runtime import (
    ADTS_LARGE_NP,
    ADTS_WARPS,
    ADTS_WARPS_LARGE,
    FLOAT32_BYTES,
    MAX_GRID_Y,
    MIN_DOT,
    SCRATCH_BYTES,
    block_d,
    block_tokens,
    check_input,
    check_rows,
    device_guard,
    half_dot,
    interpreting,
    launch,
    next_pow2,
)
from ._tiles import cosine_tile
from .stats import token_stats


@triton.jit
def _greedy_picks(p_d, p_m1, p_m2, p_out, N, K, fill, n_t,
                  EXCLUDE: tl.constexpr, NP: tl.constexpr):
    """The selection of one frame from its D' rows (p_d, [NP, NP]) and column partials (p_m1,
    p_m2: [n_t, NP] smallest and second-smallest of each column over each row tile):

        first = argmax_j  second-smallest_i D'(i, j)
        run_j = D'(first, j)
        repeat K-1 times:  s_j = run_j  (s_j = fill for picked j when EXCLUDE)
                           j*  = argmax_j s_j;  run_j = min(run_j, D'(j*, j))

    ties to the lowest index. It counts the picks of each token and writes them sorted ascending
    to p_out (token n at positions [at_n, at_n + count_n), at = exclusive cumsum of the counts),
    so no sort is needed. The scratch was written by other programs of this launch: it is read
    past L1 (.cg).
    """
    inf = float("inf")
    o_n = tl.arange(0, NP)
    m_n = o_n < N
    b_m1 = tl.full((NP,), inf, dtype=tl.float32)
    b_m2 = tl.full((NP,), inf, dtype=tl.float32)
    for t in range(0, n_t):  # merge the row tiles' (smallest, second-smallest) pairs
        b_a1 = tl.load(p_m1 + t * NP + o_n, mask=m_n, other=inf, cache_modifier=".cg")
        b_a2 = tl.load(p_m2 + t * NP + o_n, mask=m_n, other=inf, cache_modifier=".cg")
        b_m2 = tl.minimum(tl.minimum(b_m2, b_a2), tl.maximum(b_m1, b_a1))
        b_m1 = tl.minimum(b_m1, b_a1)
    _, first = tl.max(tl.where(m_n, b_m2, -inf), axis=0, return_indices=True)
    b_run = tl.load(p_d + first * NP + o_n, mask=m_n, other=-inf, cache_modifier=".cg")  # [NP]
    b_count = (o_n == first).to(tl.int32)  # picks of each token (more than 1: a repeat)
    for _ in range(1, K):
        b_score = b_run
        if EXCLUDE:
            b_score = tl.where(b_count > 0, fill, b_score)
        b_score = tl.where(m_n, b_score, -inf)
        _, j = tl.max(b_score, axis=0, return_indices=True)  # lowest index on ties
        b_row = tl.load(p_d + j * NP + o_n, mask=m_n, other=-inf, cache_modifier=".cg")
        b_run = tl.minimum(b_run, b_row)
        b_count += (o_n == j).to(tl.int32)
    # sorted output without a sort: token n's picks go to positions [at_n, at_n + count_n)
    b_at = tl.cumsum(b_count, axis=0) - b_count
    for rep in range(0, tl.max(b_count, axis=0)):
        tl.store(p_out + b_at + rep, o_n.to(tl.int64), mask=b_count > rep)


@triton.jit(do_not_specialize=["f0", "K"])  # any chunk start and k: one compiled kernel
def _adts_select_kernel(
    x_ptr, norm_ptr, w_ptr, e_ptr, dist_ptr, part_ptr, ticket_ptr, out_ptr,
    f0, N, D, K, stride_xf, stride_xn, fill, pid_ptr,
    HAS_W: tl.constexpr, HAS_E: tl.constexpr, EXCLUDE: tl.constexpr, HALF_DOT: tl.constexpr,
    EMULATE_TC: tl.constexpr, NP: tl.constexpr, NT: tl.constexpr, BT: tl.constexpr,
    BD: tl.constexpr, REMAP: tl.constexpr,
):
    """Greedy max-min selection of K tokens in every frame of a chunk (frames f0 + slot).

    With x^_i = x_i / ||x_i|| (norms given), the calibrated distance is

        D'(i, j) = ((1 - <x^_i, x^_j>) * w_j) * e_j                 [w, e optional, fp32]

    (row i = a picked token, column j = a candidate; the Gram is symmetric, D' is not; its
    diagonal is left as computed, not forced to 0: the published duplicate picks depend on it).

    Work split. Grid = (tile pairs, frames of the chunk). With n_t = ceil(N / BT) token tiles,
    program (p, s) takes the p-th pair r <= c of the upper triangle (row-major), computes the
    [BT, BT] Gram tile of tiles r and c once (``cosine_tile``), and writes to the frame's scratch
    slot s both D' blocks (r, c) and (c, r), and for each block the smallest and second-smallest
    value of every column over the block's rows (the column partials of row tile r, resp. c).
    It then takes a ticket: an acq_rel atomic increment of the slot's counter, after a barrier
    so that every thread's stores come first. The program that draws the last ticket
    (n_t (n_t + 1) / 2 - 1) sees every other program's stores, resets the counter for the next
    chunk and runs ``_greedy_picks``: the first pick from the merged partials, then K-1 steps on
    the running minimum, reading D' rows from the scratch (L2). No program ever waits.
    """
    i_p = tl.program_id(0)
    i_s = tl.program_id(1)
    if REMAP:  # test hook (_runtime.program_order): do the work of program pid_ptr[L]
        lin = tl.load(pid_ptr + i_s.to(tl.int64) * tl.num_programs(0) + i_p)
        i_p = lin % tl.num_programs(0)
        i_s = lin // tl.num_programs(0)
    i_s = i_s.to(tl.int64)
    i_f = f0 + i_s
    n_t = (N + BT - 1) // BT
    r = i_p * 0  # row tile r and column tile c >= r of pair i_p
    rem = i_p
    while rem >= n_t - r:
        rem -= n_t - r
        r += 1
    c = r + rem
    inf = float("inf")
    o_t = tl.arange(0, BT)
    o_r = r * BT + o_t
    m_r = o_r < N
    o_c = c * BT + o_t
    m_c = o_c < N
    b_nr = tl.load(norm_ptr + i_f * N + o_r, mask=m_r, other=1.0)
    b_nc = tl.load(norm_ptr + i_f * N + o_c, mask=m_c, other=1.0)
    p_x = x_ptr + i_f * stride_xf
    b_cd = 1.0 - cosine_tile(p_x, p_x, o_r, o_c, m_r, m_c, b_nr, b_nc, D, stride_xn,
                             HALF_DOT, EMULATE_TC, BT, BT, BD)  # [BT (i in r), BT (j in c)]
    b_rc = b_cd  # D'(i, j) = cd(i, j) w_j e_j
    b_cr = b_cd  # D'(j, i) = cd(i, j) w_i e_i, still indexed [i, j]
    if HAS_W:
        b_rc = b_rc * tl.load(w_ptr + i_f * N + o_c, mask=m_c, other=0.0)[None, :]
        b_cr = b_cr * tl.load(w_ptr + i_f * N + o_r, mask=m_r, other=0.0)[:, None]
    if HAS_E:
        b_rc = b_rc * tl.load(e_ptr + i_f * N + o_c, mask=m_c, other=0.0)[None, :]
        b_cr = b_cr * tl.load(e_ptr + i_f * N + o_r, mask=m_r, other=0.0)[:, None]
    mirror = r != c  # a diagonal tile holds both blocks already
    m_rc = m_r[:, None] & m_c[None, :]
    m_cr = tl.where(mirror, m_rc, False)  # (not `m_rc & mirror`: the interpreter rejects it)
    p_d = dist_ptr + i_s * NP * NP
    tl.store(p_d + o_r[:, None] * NP + o_c[None, :], b_rc, mask=m_rc)
    tl.store(p_d + o_c[None, :] * NP + o_r[:, None], b_cr, mask=m_cr)

    # column partials: block (r, c) gives columns j over rows i; block (c, r) columns i over j
    p_m1 = part_ptr + i_s * (2 * NT * NP)
    p_m2 = p_m1 + NT * NP
    b_v = tl.where(m_r[:, None], b_rc, inf)
    b_lo, b_at = tl.min(b_v, axis=0, return_indices=True)
    b_lo2 = tl.min(tl.where(o_t[:, None] == b_at[None, :], inf, b_v), axis=0)
    tl.store(p_m1 + r * NP + o_c, b_lo, mask=m_c)
    tl.store(p_m2 + r * NP + o_c, b_lo2, mask=m_c)
    b_v = tl.where(m_c[None, :], b_cr, inf)
    b_lo, b_at = tl.min(b_v, axis=1, return_indices=True)
    b_lo2 = tl.min(tl.where(o_t[None, :] == b_at[:, None], inf, b_v), axis=1)
    m_r = tl.where(mirror, m_r, False)
    tl.store(p_m1 + c * NP + o_r, b_lo, mask=m_r)
    tl.store(p_m2 + c * NP + o_r, b_lo2, mask=m_r)

    tl.debug_barrier()  # all of this program's stores before its ticket (release)
    ticket = tl.atomic_add(ticket_ptr + i_s, 1, sem="acq_rel", scope="gpu")
    if ticket == n_t * (n_t + 1) // 2 - 1:
        tl.store(ticket_ptr + i_s, 0)
        _greedy_picks(p_d, p_m1, p_m2, out_ptr + i_f * K, N, K, fill, n_t, EXCLUDE, NP)


def adts_plan(n: int) -> tuple[int, int, int]:
    """(NP, NT, BT) for frames of n tokens: padded side, token tiles per side, tile side."""
    np_ = max(MIN_DOT, next_pow2(n))
    bt = block_tokens(n)
    return np_, np_ // bt, bt


def adts_scratch_bytes(n: int) -> int:
    """Bytes of scratch one frame of n tokens needs: D' [NP, NP] and partials [2, NT, NP]."""
    np_, nt, _ = adts_plan(n)
    return FLOAT32_BYTES * (np_ * np_ + 2 * nt * np_)


def adts_chunk(frames: int, n: int) -> int:
    """Frames per launch: as many as fit in SCRATCH_BYTES of D' and partials, at least one (so
    a launch's scratch is at most max(SCRATCH_BYTES, adts_scratch_bytes(n)))."""
    return max(1, min(frames, SCRATCH_BYTES // adts_scratch_bytes(n), MAX_GRID_Y))


def adts_select(x: torch.Tensor, weights: torch.Tensor | None, k: int,
                exclude_selected: bool = False, *, fill: float = -1.0,
                event: torch.Tensor | None = None, norms: torch.Tensor | None = None
                ) -> torch.Tensor:
    """[F, k] int64 local indices picked in each frame by the greedy max-min selection, sorted
    ascending per frame (a token may appear more than once when not excluding).

    Args:
        x: [F, N, D] float16/bfloat16/float32 tokens of any number of frames (from any number of
            segments or videos: each frame is independent).
        weights: [F, N] column weights w_j (1e6 * importance for ADTS), or None (unweighted).
        k: picks per frame, 1 <= k <= N.
        exclude_selected: score picked tokens ``fill`` (-1 as published for attn_div/div;
            -inf to forbid repeats for any weights); False lets a token be picked again.
        event: [F, N] second column factor e_j (event relevance), applied after ``weights``.
        norms: [F, N] float32 token norms if already computed (see ``token_stats``).

    One launch per chunk of frames, each with one program per (token-tile pair, frame); no host
    synchronisation. The scratch (``adts_chunk``) holds D' [NP, NP] and the column partials of
    as many frames as fit in SCRATCH_BYTES, and at least one, so it never grows with F: at most
    max(SCRATCH_BYTES, one frame's 4 (NP^2 + 2 NT NP) bytes), i.e. 32 MiB up to N = 2048 (17 MB
    per frame there) and one frame's 69 MB (66 MiB) at N = 4096.
    """
    x = check_input("adts_select", x)
    frames, n, dim = x.shape
    if not 1 <= k <= n:
        raise ValueError(f"adts_select: k must be in [1, {n}] (tokens per frame), got {k}")
    for what, t in (("weights", weights), ("event", event), ("norms", norms)):
        check_rows("adts_select", what, t, frames, n)
    if norms is None:
        norms, _ = token_stats(x)
    out = torch.empty(frames, k, dtype=torch.int64, device=x.device)
    if frames == 0:
        return out
    norms = norms.float().contiguous()
    w = weights.float().contiguous() if weights is not None else norms  # norms: unused pointer
    e = event.float().contiguous() if event is not None else norms
    np_, nt, bt = adts_plan(n)
    chunk = adts_chunk(frames, n)
    n_t = -(-n // bt)
    with device_guard(x):
        dist = torch.empty(chunk, np_, np_, dtype=torch.float32, device=x.device)
        part = torch.empty(chunk, 2, nt, np_, dtype=torch.float32, device=x.device)
        tickets = torch.zeros(chunk, dtype=torch.int32, device=x.device)
        for f0 in range(0, frames, chunk):
            launch(_adts_select_kernel, (n_t * (n_t + 1) // 2, min(chunk, frames - f0)),
                   x, norms, w, e, dist, part, tickets, out,
                   f0, n, dim, k, x.stride(0), x.stride(1), float(fill),
                   HAS_W=weights is not None, HAS_E=event is not None,
                   EXCLUDE=bool(exclude_selected), HALF_DOT=half_dot(x),
                   EMULATE_TC=interpreting(), NP=np_, NT=nt, BT=bt, BD=block_d(dim, x.dtype),
                   num_warps=ADTS_WARPS_LARGE if np_ >= ADTS_LARGE_NP else ADTS_WARPS)
    return out
