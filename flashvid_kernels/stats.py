"""Per-token statistics shared by the ADTS and TSTM kernels: norms and event relevance."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._runtime import (
    FLOAT32_TINY,
    STATS_BLOCK_D_GPU,
    STATS_ROWS,
    block_d,
    check_input,
    device_guard,
    launch,
)

NORM_FLOOR = tl.constexpr(FLOAT32_TINY)


@triton.jit
def _token_stats_kernel(
    x_ptr, mu_ptr, norm_ptr, event_ptr,
    N, D, stride_xf, stride_xn, pid_ptr,
    HAS_MU: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr, REMAP: tl.constexpr,
):
    """One pass over the tokens of a block of BN rows of one frame f (grid: frames x row blocks):

        norm[f, n]  = max(sqrt(sum_d x[f, n, d]^2), NORM_FLOOR)
        event[f, n] = sum_d x[f, n, d] * mu[f, d]          (when HAS_MU)

    in fp32, whatever the input dtype (cast right after the load).
    """
    i_f = tl.program_id(0)
    i_n = tl.program_id(1)
    if REMAP:  # test hook (_runtime.program_order): do the work of program pid_ptr[L]
        lin = tl.load(pid_ptr + i_n.to(tl.int64) * tl.num_programs(0) + i_f)
        i_f = lin % tl.num_programs(0)
        i_n = lin // tl.num_programs(0)
    i_f = i_f.to(tl.int64)
    o_n = i_n * BN + tl.arange(0, BN)
    m_n = o_n < N
    o_d = tl.arange(0, BD)
    p_x = x_ptr + i_f * stride_xf + o_n[:, None].to(tl.int64) * stride_xn
    b_ss = tl.zeros((BN,), dtype=tl.float32)
    b_e = tl.zeros((BN,), dtype=tl.float32)
    for d0 in range(0, D, BD):
        m_d = (d0 + o_d) < D
        b_x = tl.load(p_x + (d0 + o_d)[None, :], mask=m_n[:, None] & m_d[None, :],
                      other=0.0).to(tl.float32)  # [BN, BD]
        b_ss += tl.sum(b_x * b_x, axis=1)
        if HAS_MU:
            b_mu = tl.load(mu_ptr + i_f * D + d0 + o_d, mask=m_d, other=0.0).to(tl.float32)
            b_e += tl.sum(b_x * b_mu[None, :], axis=1)
    b_norm = tl.maximum(tl.sqrt(b_ss), NORM_FLOOR)
    tl.store(norm_ptr + i_f * N + o_n, b_norm, mask=m_n)
    if HAS_MU:
        tl.store(event_ptr + i_f * N + o_n, b_e, mask=m_n)


def token_stats(x: torch.Tensor, event_mean: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Norms [F, N] fp32 and, given ``event_mean`` [F, D], event relevance <x, mu_f> [F, N] fp32
    (None without it), in one launch.

    x: [F, N, D] float16/bfloat16/float32 (CUDA, or CPU under TRITON_INTERPRET=1). Norms are
    clamped below at the smallest normal float32, so that dividing by them is always finite.
    """
    x = check_input("token_stats", x)
    frames, n, dim = x.shape
    norms = torch.empty(frames, n, dtype=torch.float32, device=x.device)
    event = mu = None
    if event_mean is not None:
        if tuple(event_mean.shape) != (frames, dim):
            raise ValueError(f"token_stats: event_mean must be [{frames}, {dim}], got "
                             f"{tuple(event_mean.shape)}")
        mu = event_mean.to(device=x.device, dtype=torch.float32).contiguous()
        event = torch.empty(frames, n, dtype=torch.float32, device=x.device)
    if frames == 0 or n == 0:
        return norms, event
    with device_guard(x):
        launch(_token_stats_kernel, (frames, triton.cdiv(n, STATS_ROWS)),
               x, norms if mu is None else mu, norms, norms if event is None else event,
               n, dim, x.stride(0), x.stride(1),
               HAS_MU=mu is not None, BN=STATS_ROWS,
               BD=block_d(dim, gpu_cap=STATS_BLOCK_D_GPU))
    return norms, event
