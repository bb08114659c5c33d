"""Triton kernels against the reference (CPU: TRITON_INTERPRET=1; GPU: compiled).

Indices must be exactly equal in float32 and similarities within 1e-6; half-precision inputs must
give the indices the reference gives on the same rounded values in float32. Output buffers are
poisoned (NaN / impossible sentinels) so that an unwritten entry fails.
"""

from __future__ import annotations

import pytest
import torch
from helpers import device, random_video
from hypothesis import given, settings
from hypothesis import strategies as st

import flashvid
import flashvid_kernels as K
from flashvid import reference

SENTINEL = -(2**40)


def poisoned_select(x, weights, k, exclude, fill=-1.0, event=None):
    out = torch.full((x.shape[0], k), SENTINEL, dtype=torch.int64, device=x.device)
    got = K.adts_select(x, weights, k, exclude, fill=fill, event=event, out=out)
    assert got is out and not bool((out == SENTINEL).any()), "unwritten picks"
    return out


def poisoned_edges(x, eligible, start):
    f, n, _ = x.shape
    parent = torch.full((f, n), -(2**30), dtype=torch.int32, device=x.device)
    maxsim = torch.full((f, n), float("nan"), dtype=torch.float32, device=x.device)
    K.tstm_edges(x, eligible, start, out=(parent, maxsim))
    assert not bool(torch.isnan(maxsim).any()) and not bool((parent == -(2**30)).any())
    return parent.long(), maxsim


def reference_adts(x, a, k, method):
    """The oracle's picks of one segment x [F_s, N, D]."""
    return reference.adts(x, a, [x.shape[0]], flashvid.FlashVIDConfig(selection=method), k)


def reference_select(x, a, k, method):
    """The oracle's picks, with the column factors the kernel receives."""
    picks = reference_adts(x, a, k, method)
    factors = reference.column_weights(x, a, method)
    weights = factors[0] if factors else None
    event = factors[1] if len(factors) > 1 else None
    return picks, weights, event


def check_select(x, a, k, method):
    want, weights, event = reference_select(x.float(), a.float(), k, method)
    exclude = method != "adts"
    got = poisoned_select(x, weights, k, exclude, event=event)
    assert torch.equal(got, want), (got, want)


# (N, D): every awkward N at D=64, every awkward D at N=196, and the extremes together
SHAPES = [(n, 64) for n in (1, 2, 169, 196, 257, 729)] + [(196, d) for d in (1, 3, 1152)]
SHAPES += [(729, 1152), (2, 1)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"N{s[0]}-D{s[1]}")
@pytest.mark.parametrize("k_is_n", [False, True], ids=["k1", "kN"])
def test_adts_select_awkward_shapes(shape, k_is_n):
    n, dim = shape
    frames = 2 if n * (n if k_is_n else 1) > 200_000 else 3
    x, a = random_video(frames, n, dim, seed=n * 7 + dim)
    check_select(x, a, n if k_is_n else 1, "adts_v1")


@pytest.mark.parametrize("method", ["adts", "adts_v1", "diversity"])
@pytest.mark.parametrize("n,k", [(196, 18), (169, 23), (266, 24), (50, 33)])
def test_adts_select_methods(method, n, k):
    x, a = random_video(4, n, 48, seed=n + k)
    check_select(x, a, k, method)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("method", ["adts", "adts_v1"])
def test_adts_select_half_inputs_match_rounded_reference(dtype, method):
    x, a = random_video(3, 196, 64, seed=5, dtype=dtype)
    check_select(x, a, 18, method)


def test_adts_select_unweighted_without_exclusion_may_repeat():
    """No exclusion and identical tokens: the same (lowest) index is picked again, as in Q2."""
    x = torch.ones(2, 8, 4, device=device())
    got = poisoned_select(x, None, 3, exclude=False)
    assert got.tolist() == [[0, 0, 0], [0, 0, 0]]
    got = poisoned_select(x, None, 3, exclude=True, fill=float("-inf"))
    assert got.tolist() == [[0, 1, 2], [0, 1, 2]]


def segment_layout(frames: int, starts: list[int]):
    start = torch.zeros(frames, dtype=torch.bool, device=device())
    start[starts] = True
    bounds = [*starts, frames]
    return start, list(zip(bounds[:-1], bounds[1:]))


def check_edges(x, eligible, starts):
    start, spans = segment_layout(x.shape[0], starts)
    parent, maxsim = poisoned_edges(x, eligible, start)
    for s, e in spans:
        want_sim, want_parent = reference.tstm_edges(x[s:e].float(), eligible[s:e])
        want_sim = torch.where(eligible[s:e], want_sim, -1.0)
        torch.testing.assert_close(maxsim[s:e], want_sim.float(), atol=1e-6, rtol=0)
        linked = want_sim > -1.0
        assert torch.equal(parent[s:e][linked], want_parent[linked])
        assert bool((parent[s:e][~linked] == -1).all())
        assert bool((maxsim[s] == -1).all()) and bool((parent[s] == -1).all())


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"N{s[0]}-D{s[1]}")
def test_tstm_edges_awkward_shapes(shape):
    n, dim = shape
    x, _ = random_video(4, n, dim, seed=3 * n + dim)
    eligible = torch.rand(4, n, generator=torch.Generator().manual_seed(n)) > 0.3
    check_edges(x, eligible.to(x.device), [0, 2])


@pytest.mark.parametrize("n,dim,k", [(2048, 16, 3), (24, 8192, 6)], ids=["N2048", "D8192"])
def test_kernel_size_limits(n, dim, k):
    """The largest frames the kernels promise (Qwen at the highest resolution; wide features):
    the Gram then lives in the L2 scratch, and D is tiled."""
    x, a = random_video(2, n, dim, seed=n + dim)
    check_select(x, a, k, "adts")
    eligible = torch.ones(2, n, dtype=torch.bool, device=x.device)
    eligible[:, ::3] = False
    check_edges(x, eligible, [0])


def test_many_segments_and_videos_in_one_launch():
    """Two 'videos' of 5 and 7 frames, cut into segments of 1-4 frames, in one launch each."""
    x, a = random_video(12, 196, 32, seed=9)
    starts = [0, 3, 4, 5, 9, 10]
    factors = reference.column_weights(x, a, "adts_v1")
    got = poisoned_select(x, factors[0], 18, True)
    want = torch.cat([reference_adts(x[s:e], a[s:e], 18, "adts_v1")
                      for s, e in segment_layout(12, starts)[1]])
    assert torch.equal(got, want)
    eligible = torch.ones(12, 196, dtype=torch.bool, device=x.device)
    eligible.scatter_(1, got, False)
    check_edges(x, eligible, starts)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_tstm_edges_half_inputs_match_rounded_reference(dtype):
    x, _ = random_video(5, 169, 64, seed=21, dtype=dtype)
    eligible = torch.ones(5, 169, dtype=torch.bool, device=x.device)
    eligible[:, ::5] = False
    check_edges(x, eligible, [0, 3])


def test_token_stats():
    x, _ = random_video(3, 70, 40, seed=4)
    mu = torch.randn(3, 40, generator=torch.Generator().manual_seed(1)).to(x.device)
    out = torch.full((3, 70), float("nan"), device=x.device)
    norms, event = K.token_stats(x, mu, out=out)
    torch.testing.assert_close(norms, torch.linalg.vector_norm(x, dim=-1), atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(event, torch.einsum("fnd,fd->fn", x, mu), atol=1e-4, rtol=1e-5)


def test_launcher_errors():
    x, a = random_video(2, 10, 8, seed=0)
    with pytest.raises(ValueError, match=r"k must be in \[1, 10\]"):
        K.adts_select(x, None, 11)
    with pytest.raises(ValueError, match=r"weights must be \[2, 10\]"):
        K.adts_select(x, a[:1], 3)
    with pytest.raises(TypeError, match="float16, bfloat16 or float32"):
        K.adts_select(x.double(), None, 3)
    with pytest.raises(ValueError, match=r"segment_start must be \[2\]"):
        K.tstm_edges(x, torch.ones(2, 10, dtype=torch.bool), torch.ones(3, dtype=torch.bool))


@settings(max_examples=25, deadline=None)
@given(frames=st.integers(1, 5), n=st.integers(1, 40), dim=st.integers(1, 24),
       k_frac=st.floats(0.0, 1.0), cut_seed=st.integers(0, 2**16), method=st.sampled_from(
           ["adts", "adts_v1", "diversity"]))
def test_kernels_property(frames, n, dim, k_frac, cut_seed, method):
    """Random shapes and segment layouts: both kernels equal the reference."""
    x, a = random_video(frames, n, dim, seed=cut_seed)
    k = max(1, round(k_frac * n))
    gen = torch.Generator().manual_seed(cut_seed)
    starts = sorted({0, *torch.randint(0, frames, (2,), generator=gen).tolist()})
    spans = segment_layout(frames, starts)[1]
    picks, weights, events = [], [], []
    for s, e in spans:
        p, w, ev = reference_select(x[s:e], a[s:e], k, method)
        picks.append(p)
        weights.append(w)
        events.append(ev)
    cat = lambda ts: torch.cat(ts) if ts[0] is not None else None  # noqa: E731
    got = poisoned_select(x, cat(weights), k, method != "adts", event=cat(events))
    assert torch.equal(got, torch.cat(picks))
    eligible = torch.ones(frames, n, dtype=torch.bool, device=x.device)
    eligible.scatter_(1, got, False)
    check_edges(x, eligible, starts)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="compiled kernels need a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_compiled_kernels_on_gpu(dtype):
    """On a GPU the kernels run compiled (half inputs through the tensor cores)."""
    x, a = random_video(32, 196, 3584, seed=1, dtype=dtype)
    check_select(x, a, 18, "adts")
    eligible = torch.ones(32, 196, dtype=torch.bool, device=x.device)
    eligible[:, ::4] = False
    check_edges(x, eligible, [0, 5, 9, 20])
