"""The cosine-similarity tile that the ADTS Gram and the TSTM edges are built from."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def cosine_tile(p_a, p_b, o_a, o_b, m_a, m_b, b_na, b_nb, D, stride_n,
                HALF_DOT: tl.constexpr, EMULATE_TC: tl.constexpr,
                BA: tl.constexpr, BB: tl.constexpr, BD: tl.constexpr):
    """[BA, BB] fp32 cosine similarities of rows o_a of one frame with rows o_b of another:

        S(i, j) = <x_a[i], x_b[j]> / (||x_a[i]|| * ||x_b[j]||)

    p_a, p_b point at the frames' first tokens, rows are ``stride_n`` apart with unit-stride
    features, b_na / b_nb are the rows' norms (fp32, never 0) and masked rows give S = 0. The dot
    runs over D in chunks of BD with fp32 accumulation. HALF_DOT feeds raw float16/bfloat16 tiles
    to the tensor cores (every product exact in fp32) and divides by the norms after; otherwise
    each chunk is cast to fp32 right after the load and divided by its norms before an IEEE fp32
    dot (the reference's order: unit vectors first). EMULATE_TC (the interpreter, whose bfloat16
    dot is wrong) runs HALF_DOT's arithmetic without tensor cores: the half tiles are cast to
    fp32, which is exact, so the IEEE dot forms every product exactly and sums in fp32.
    """
    o_d = tl.arange(0, BD)
    p_ra = p_a + o_a[:, None].to(tl.int64) * stride_n  # [BA, 1]
    p_rb = p_b + o_b[:, None].to(tl.int64) * stride_n  # [BB, 1]
    b_s = tl.full((BA, BB), 0.0, dtype=tl.float32)
    for d0 in range(0, D, BD):
        m_d = (d0 + o_d) < D
        b_a = tl.load(p_ra + (d0 + o_d)[None, :], mask=m_a[:, None] & m_d[None, :], other=0.0)
        b_b = tl.load(p_rb + (d0 + o_d)[None, :], mask=m_b[:, None] & m_d[None, :], other=0.0)
        if HALF_DOT:
            if EMULATE_TC:
                b_s += tl.dot(b_a.to(tl.float32), tl.trans(b_b.to(tl.float32)),
                              input_precision="ieee")
            else:
                b_s += tl.dot(b_a, tl.trans(b_b))  # [BA, BD] x [BD, BB]
        else:
            b_a = b_a.to(tl.float32) / b_na[:, None]
            b_b = b_b.to(tl.float32) / b_nb[:, None]
            b_s += tl.dot(b_a, tl.trans(b_b), input_precision="ieee")
    if HALF_DOT:
        b_s = b_s / b_na[:, None] / b_nb[None, :]
    return b_s
