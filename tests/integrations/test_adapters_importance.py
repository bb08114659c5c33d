"""The blocked importance score (§3) against the full attention matrix."""

from __future__ import annotations

import pytest
import torch
from helpers import device

from flashvid.integrations import attention_column_mean, merge_unit_mean


def naive(q: torch.Tensor, k: torch.Tensor, scale: float) -> torch.Tensor:
    """Full [S, H, N, N] attention in float64, averaged over heads, then over queries."""
    attn = torch.softmax(q.double() @ k.double().transpose(-1, -2) * scale, dim=-1)
    return attn.mean(dim=1).mean(dim=1)


def qk(seqs: int, heads: int, n: int, dim: int, seed: int, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(seqs, heads, n, dim, generator=gen) * 2
    k = torch.randn(seqs, heads, n, dim, generator=gen) * 2
    return q.to(dtype).to(device()), k.to(dtype).to(device())


@pytest.mark.parametrize(("seqs", "heads", "n", "dim"),
                         [(1, 1, 1, 4), (3, 2, 7, 8), (2, 3, 196, 16), (2, 2, 729, 8)],
                         ids=["n1", "n7", "n196", "n729"])
@pytest.mark.parametrize("block_elems", [1, 97, 1 << 22], ids=["row", "odd", "whole"])
def test_matches_full_attention(seqs, heads, n, dim, block_elems):
    q, k = qk(seqs, heads, n, dim, seed=n + dim)
    got = attention_column_mean(q, k, block_elems=block_elems)
    want = naive(q, k, dim ** -0.5)
    assert got.dtype == torch.float32 and got.shape == (seqs, n)
    torch.testing.assert_close(got.double(), want, atol=2e-7, rtol=1e-5)
    ones = torch.ones(seqs, dtype=torch.float64, device=got.device)
    torch.testing.assert_close(got.sum(-1).double(), ones, atol=1e-6, rtol=0)


def test_scale_argument():
    q, k = qk(2, 2, 13, 8, seed=3)
    torch.testing.assert_close(attention_column_mean(q, k, scale=0.3).double(),
                               naive(q, k, 0.3), atol=2e-7, rtol=1e-5)


def test_block_memory_is_bounded(monkeypatch):
    """No block of scores exceeds block_elems (the [H, N, N] matrix is never formed)."""
    q, k = qk(4, 2, 50, 8, seed=5)
    seen = []
    real = torch.matmul

    def spy(a, b):
        out = real(a, b)
        seen.append(out.numel())
        return out

    monkeypatch.setattr(torch, "matmul", spy)
    attention_column_mean(q, k, block_elems=2 * 50 * 6)
    monkeypatch.undo()
    assert seen and max(seen) <= 2 * 50 * 6
    assert max(seen) < 2 * 50 * 50  # one frame's full attention would be 5000 elements


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_published_rounding(dtype):
    """round_to rounds probabilities, head mean and query mean like the model-dtype published
    code: p.to(dtype).mean(heads).mean(queries)."""
    q, k = qk(2, 3, 31, 8, seed=7, dtype=dtype)
    got = attention_column_mean(q, k, round_to=dtype, block_elems=40)
    p = torch.softmax(q.float() @ k.float().transpose(-1, -2) * 8 ** -0.5, dim=-1).to(dtype)
    want = p.mean(dim=1).mean(dim=1).float()
    assert torch.equal(got, got.to(dtype).float())  # representable in the model dtype
    torch.testing.assert_close(got, want, atol=0, rtol=2 * torch.finfo(dtype).eps)


def test_merge_unit_mean():
    scores = torch.arange(12, dtype=torch.float32).view(2, 6)
    torch.testing.assert_close(merge_unit_mean(scores, 2),
                               torch.tensor([[0.5, 2.5, 4.5], [6.5, 8.5, 10.5]]))
    with pytest.raises(ValueError, match="groups of 4"):
        merge_unit_mean(scores, 4)


def test_bad_input():
    q, k = qk(1, 2, 5, 4, seed=0)
    with pytest.raises(ValueError, match="shape"):
        attention_column_mean(q, k[:, :, :4])
    with pytest.raises(ValueError, match="shape"):
        attention_column_mean(q[0], k[0])
    with pytest.raises(TypeError, match="floating"):
        attention_column_mean(q.long(), k.long())
    with pytest.raises(TypeError, match="torch.Tensor"):
        attention_column_mean(q.tolist(), k)
    with pytest.raises(ValueError, match="round_to"):
        attention_column_mean(q, k, round_to=torch.float64)
    with pytest.raises(ValueError, match="block_elems"):
        attention_column_mean(q, k, block_elems=0)
    with pytest.raises(ValueError, match="non-empty"):
        attention_column_mean(q[:, :, :0], k[:, :, :0])
