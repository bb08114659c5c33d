"""Triton kernels against the reference (CPU: TRITON_INTERPRET=1; GPU: compiled).

Indices must be exactly equal in float32 and similarities within 1e-6; half-precision inputs must
give the indices the reference gives on the same rounded values in float32. Every buffer the
launchers allocate with torch.empty is poisoned (the ``poison_empty`` fixture in conftest.py), so
an output or scratch element that a kernel fails to write fails the comparison.
"""

from __future__ import annotations

import math

import pytest
import torch
from helpers import device, random_video
from hypothesis import given, settings
from hypothesis import strategies as st

import flashvid
import flashvid_kernels as K
import flashvid_kernels.adts as kadts
from flashvid import reference
from flashvid_kernels._runtime import recording

pytestmark = pytest.mark.usefixtures("poison_empty")
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(),
                               reason="compiled kernels need a CUDA GPU")


def select(x, weights, k, exclude, fill=-1.0, event=None):
    got = K.adts_select(x, weights, k, exclude, fill=fill, event=event)
    assert got.dtype == torch.int64 and got.shape == (x.shape[0], k)
    assert bool(((got >= 0) & (got < x.shape[1])).all()), "unwritten or out-of-range picks"
    return got


def edges(x, eligible, start):
    parent, maxsim = K.tstm_edges(x, eligible, start)
    assert parent.dtype == torch.int64 and maxsim.dtype == torch.float32
    assert not bool(torch.isnan(maxsim).any()), "unwritten similarities"
    assert bool(((parent >= -1) & (parent < x.shape[1])).all()), "unwritten parents"
    return parent, maxsim


def reference_factors(x, a, method):
    """The column factors (1e6 * importance, event relevance) the oracle uses for one segment
    x [F_s, N, D], as the kernel receives them."""
    event = None
    if method == "adts":
        event = reference.event_relevance(x, reference.frame_means(x), [x.shape[0]])
    factors = reference.column_weights(x, a, method, event)
    return (factors[0] if factors else None), (factors[1] if len(factors) > 1 else None)


def reference_adts(x, a, k, method):
    """The oracle's picks of one segment x [F_s, N, D]."""
    return reference.adts(x, a, [x.shape[0]], flashvid.FlashVIDConfig(selection=method), k)


def reference_select(x, a, k, method):
    """The oracle's picks, with the column factors the kernel receives."""
    return (reference_adts(x, a, k, method), *reference_factors(x, a, method))


def check_select(x, a, k, method):
    want, weights, event = reference_select(x.float(), a.float(), k, method)
    got = select(x, weights, k, method != "adts", event=event)
    assert torch.equal(got, want), (got, want)


def segment_layout(frames: int, starts: list[int]):
    start = torch.zeros(frames, dtype=torch.bool, device=device())
    start[starts] = True
    bounds = [*starts, frames]
    return start, list(zip(bounds[:-1], bounds[1:]))


def check_edges(x, eligible, starts):
    start, spans = segment_layout(x.shape[0], starts)
    parent, maxsim = edges(x, eligible, start)
    for s, e in spans:
        want_sim, want_parent = reference.tstm_edges(x[s:e].float(), eligible[s:e])
        want_sim = torch.where(eligible[s:e], want_sim, -1.0)
        torch.testing.assert_close(maxsim[s:e], want_sim.float(), atol=1e-6, rtol=0)
        linked = want_sim > -1.0
        assert torch.equal(parent[s:e][linked], want_parent[linked])
        assert bool((parent[s:e][~linked] == -1).all())
        assert bool((maxsim[s] == -1).all()) and bool((parent[s] == -1).all())


# -------------------------------------------------------------- quick: small frames, few programs
def test_adts_select_small():
    """Two token tiles per frame: three tile-pair programs per frame, the last one selects."""
    x, a = random_video(2, 100, 24, seed=2)
    check_select(x, a, 6, "adts")
    check_select(x, a, 6, "adts_v1")


def test_tstm_edges_small():
    x, _ = random_video(3, 100, 24, seed=3)
    eligible = torch.rand(3, 100, generator=torch.Generator().manual_seed(3)).to(x.device) > 0.3
    check_edges(x, eligible, [0, 2])


def test_token_stats():
    x, _ = random_video(3, 70, 40, seed=4)
    mu = torch.randn(3, 40, generator=torch.Generator().manual_seed(1)).to(x.device)
    norms, event = K.token_stats(x, mu)
    torch.testing.assert_close(norms, torch.linalg.vector_norm(x, dim=-1), atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(event, torch.einsum("fnd,fd->fn", x, mu), atol=1e-4, rtol=1e-5)
    assert K.token_stats(x)[1] is None


def test_adts_select_unweighted_without_exclusion_may_repeat():
    """No exclusion and identical tokens: the same (lowest) index is picked again, as in Q2."""
    x = torch.ones(2, 8, 4, device=device())
    assert select(x, None, 3, exclude=False).tolist() == [[0, 0, 0], [0, 0, 0]]
    got = select(x, None, 3, exclude=True, fill=float("-inf"))
    assert got.tolist() == [[0, 1, 2], [0, 1, 2]]


def test_adts_select_in_chunks_reuses_one_scratch(monkeypatch):
    """A scratch smaller than the video: several launches over one scratch (the frame tickets
    reset themselves), same picks as the reference."""
    x, a = random_video(5, 70, 16, seed=8)
    np_, nt, _ = kadts.adts_plan(70)
    monkeypatch.setattr(kadts, "SCRATCH_BYTES", 2 * 4 * (np_ * np_ + 2 * nt * np_))
    want, weights, event = reference_select(x, a, 7, "adts")
    with recording() as launches:
        got = select(x, weights, 7, False, event=event)
    assert torch.equal(got, want)
    runs = [launch for launch in launches if launch.kernel is kadts._adts_select_kernel]
    assert [launch.grid[1] for launch in runs] == [2, 2, 1]
    assert all(launch.args[4] is runs[0].args[4] for launch in runs)  # one D' scratch
    assert int(runs[0].args[6].abs().sum()) == 0  # every ticket back at 0


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
    with pytest.raises(ValueError, match=r"norms must be \[2, 10\]"):
        K.tstm_edges(x, torch.ones(2, 10, dtype=torch.bool), torch.ones(2, dtype=torch.bool),
                     norms=a[:, :3])
    with pytest.raises(ValueError, match=r"at most 4096 tokens"):
        K.token_stats(torch.empty(1, 4097, 2, device="meta"))


def test_empty_video():
    x = torch.empty(0, 12, 8, device=device())
    assert K.adts_select(x, None, 3).shape == (0, 3)
    parent, maxsim = K.tstm_edges(x, torch.ones(0, 12, dtype=torch.bool, device=x.device),
                                  torch.ones(0, dtype=torch.bool, device=x.device))
    assert parent.shape == maxsim.shape == (0, 12)


# ---------------------------------------------------- launch plans (recorded, nothing runs)
def planned(frames, n, dim, k=8, dtype=torch.bfloat16):
    x = torch.empty(frames, n, dim, dtype=dtype, device="meta")
    norms = torch.empty(frames, n, device="meta")
    with recording(dry_run=True) as launches:
        K.adts_select(x, norms, k, norms=norms)
    return launches


def test_poison_reaches_the_launchers(poison_empty):
    """The fixture poisons the launchers' own buffers (not only the test's): D' scratch and picks
    start poisoned, the frame tickets start at zero."""
    x, a = random_video(2, 20, 8, seed=0)
    (launch,) = planned_on(x, a)
    dist, tickets, out = launch.args[4], launch.args[6], launch.args[7]
    assert bool(torch.isnan(dist).all())
    assert bool((out == poison_empty(torch.int64)).all())
    assert bool((tickets == 0).all())


def planned_on(x, a):
    with recording(dry_run=True) as launches:
        K.adts_select(x, a, 3, norms=a)
    return launches


@pytest.mark.parametrize("frames,n", [(32, 196), (64, 169), (16, 1024)], ids=str)
def test_one_video_fills_an_h200(frames, n):
    """The Gram of each frame is spread over tile-pair programs: the preset videos launch more
    programs than an H200 has SMs (132)."""
    launch = planned(frames, n, 3584)[0]  # the first chunk of frames
    assert math.prod(launch.grid) >= 132, launch.grid


@pytest.mark.parametrize("n", [196, 1024, 4096])
def test_scratch_does_not_grow_with_frames(n):
    """The D' scratch is sized by the chunk, not by F: 1024 and 2048 frames get the same one, and
    more frames only mean more launches."""
    small, large = planned(1024, n, 64), planned(2048, n, 64)
    scratch = lambda launch: sum(t.numel() * 4 for t in launch.args[4:6])  # D', partials
    np_, nt, _ = kadts.adts_plan(n)
    one_frame = 4 * (np_ * np_ + 2 * nt * np_)
    assert scratch(small[0]) == scratch(large[0]) <= max(kadts.SCRATCH_BYTES, one_frame)
    assert sum(launch.grid[1] for launch in large) == 2048


@pytest.mark.parametrize("n,frames_per_launch", [(196, 124), (1024, 7), (2048, 1), (4096, 1)])
def test_scratch_bound_as_documented(n, frames_per_launch):
    """The documented bound: a launch's scratch is at most max(SCRATCH_BYTES, one frame's), and
    only at N = 4096 does one frame alone exceed SCRATCH_BYTES (69 MB, 66 MiB)."""
    runs = planned(1024, n, 64)
    one_frame = kadts.adts_scratch_bytes(n)
    got = sum(t.numel() * 4 for t in runs[0].args[4:6])
    assert runs[0].grid[1] == frames_per_launch
    assert got == frames_per_launch * one_frame <= max(kadts.SCRATCH_BYTES, one_frame)
    assert (one_frame > kadts.SCRATCH_BYTES) == (n == 4096)
    if n == 4096:
        assert one_frame == 4 * (4096 * 4096 + 2 * 64 * 4096) == 69_206_016


def test_tstm_edges_frame_zero_never_reads_before_the_video():
    """Frame 0 has no previous frame: it links to nothing even when segment_start[0] is False
    (the kernel must not read before the start of x)."""
    x, _ = random_video(3, 40, 16, seed=12)
    eligible = torch.ones(3, 40, dtype=torch.bool, device=x.device)
    parent, maxsim = edges(x, eligible, torch.zeros(3, dtype=torch.bool, device=x.device))
    assert bool((parent[0] == -1).all()) and bool((maxsim[0] == -1).all())
    check_edges(x, eligible, [0])  # with the start flag: frames 1 and 2 as the reference


BIG = (1024, 4096, 8192)  # F * N * D = 2**35 elements: offsets past 2**31


@pytest.mark.parametrize("selection", ["adts", "adts_v1"])
def test_int64_addresses_at_1024_frames_4096_tokens_8192_dims(selection):
    """The launches at 1024 x 4096 x 8192 (recorded on meta tensors, nothing allocated): every
    integer argument fits the int32 Triton gives it, the grids fit CUDA's limits, every frame is
    covered once, and the element offsets reach past 2**31, so the kernels' own int64 frame
    arithmetic is what keeps them right. That arithmetic is read from the generated TTIR by the
    compile report (``int64_frame_offsets``, every specialisation; this shape compiles to the
    report's F1024_N4096_D8192 / N4096 specialisations: ``tests/kernels/test_kernel_report.py``).
    Under the interpreter any int32 overflow in a kernel raises (Triton sanitises integer
    arithmetic there), so the tests at smaller shapes would catch a wrap too."""
    frames, n, dim = BIG
    meta = dict(device="meta")
    x = torch.empty(frames, n, dim, dtype=torch.bfloat16, **meta)
    w = torch.empty(frames, n, **meta)
    with recording(dry_run=True) as launches:
        norms, event = K.token_stats(x, torch.empty(frames, dim, **meta) if selection == "adts"
                                     else None)
        K.adts_select(x, w, 287, selection == "adts_v1", event=event, norms=norms)
        K.tstm_edges(x, torch.empty(frames, n, dtype=torch.bool, **meta),
                     torch.empty(frames, dtype=torch.bool, **meta), norms=norms)
    assert (frames - 1) * x.stride(0) + (n - 1) * x.stride(1) + dim - 1 >= 2**31
    covered = []
    for launch in launches:
        assert launch.grid[0] < 2**31 and all(g <= 65535 for g in launch.grid[1:]), launch.grid
        for a in launch.args:
            if isinstance(a, int) and not isinstance(a, bool):
                assert -(2**31) <= a < 2**31, (launch.kernel, a)
        if launch.kernel is kadts._adts_select_kernel:
            covered += [launch.args[8] + s for s in range(launch.grid[1])]  # f0 + slot
        else:
            assert launch.grid[0] == frames
    assert covered == list(range(frames))


# ---------------------------------------------------------- interpreter-heavy (marked slow)
# (N, D): every awkward N at D=64, every awkward D at N=196, and the extremes together
SHAPES = [(n, 64) for n in (1, 2, 169, 196, 257, 729)] + [(196, d) for d in (1, 3, 1152)]
SHAPES += [(729, 1152), (2, 1)]


@pytest.mark.slow
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"N{s[0]}-D{s[1]}")
@pytest.mark.parametrize("k_is_n", [False, True], ids=["k1", "kN"])
def test_adts_select_awkward_shapes(shape, k_is_n):
    n, dim = shape
    frames = 2 if n * (n if k_is_n else 1) > 200_000 else 3
    x, a = random_video(frames, n, dim, seed=n * 7 + dim)
    check_select(x, a, n if k_is_n else 1, "adts_v1")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["adts", "adts_v1", "diversity"])
@pytest.mark.parametrize("n,k", [(196, 18), (169, 23), (266, 24), (50, 33)])
def test_adts_select_methods(method, n, k):
    x, a = random_video(4, n, 48, seed=n + k)
    check_select(x, a, k, method)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("method", ["adts", "adts_v1"])
def test_adts_select_half_inputs_match_rounded_reference(dtype, method):
    x, a = random_video(3, 196, 64, seed=5, dtype=dtype)
    check_select(x, a, 18, method)


@pytest.mark.slow
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"N{s[0]}-D{s[1]}")
def test_tstm_edges_awkward_shapes(shape):
    n, dim = shape
    x, _ = random_video(4, n, dim, seed=3 * n + dim)
    eligible = torch.rand(4, n, generator=torch.Generator().manual_seed(n)) > 0.3
    check_edges(x, eligible.to(x.device), [0, 2])


@pytest.mark.slow
@pytest.mark.parametrize("n,dim,k", [(2048, 16, 3), (24, 8192, 6)], ids=["N2048", "D8192"])
def test_kernel_size_limits(n, dim, k):
    """The largest frames the kernels promise (Qwen at the highest resolution; wide features):
    the Gram then lives in the L2 scratch, and D is tiled."""
    x, a = random_video(2, n, dim, seed=n + dim)
    check_select(x, a, k, "adts")
    eligible = torch.ones(2, n, dtype=torch.bool, device=x.device)
    eligible[:, ::3] = False
    check_edges(x, eligible, [0])


@pytest.mark.slow
def test_many_segments_and_videos_in_one_launch():
    """Two 'videos' of 5 and 7 frames, cut into segments of 1-4 frames, in one launch each."""
    x, a = random_video(12, 196, 32, seed=9)
    starts = [0, 3, 4, 5, 9, 10]
    weights, _ = reference_factors(x, a, "adts_v1")
    got = select(x, weights, 18, True)
    want = torch.cat([reference_adts(x[s:e], a[s:e], 18, "adts_v1")
                      for s, e in segment_layout(12, starts)[1]])
    assert torch.equal(got, want)
    eligible = torch.ones(12, 196, dtype=torch.bool, device=x.device)
    eligible.scatter_(1, got, False)
    check_edges(x, eligible, starts)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_tstm_edges_half_inputs_match_rounded_reference(dtype):
    x, _ = random_video(5, 169, 64, seed=21, dtype=dtype)
    eligible = torch.ones(5, 169, dtype=torch.bool, device=x.device)
    eligible[:, ::5] = False
    check_edges(x, eligible, [0, 3])


@pytest.mark.slow
@settings(max_examples=25, deadline=None)
@given(frames=st.integers(1, 5), n=st.integers(1, 100), dim=st.integers(8, 24),
       k_frac=st.floats(0.0, 1.0), cut_seed=st.integers(0, 2**16), method=st.sampled_from(
           ["adts", "adts_v1", "diversity"]))
def test_kernels_property(frames, n, dim, k_frac, cut_seed, method):
    """Random shapes and segment layouts: both kernels equal the reference.

    One exception, where no two matrix-product implementations agree: "adts" does not exclude
    picked tokens, so once every remaining column's running minimum is below some picked token's
    self-distance (1 - <x^_j, x^_j>) w_j e_j, a value at rounding level (e.g. a token with a
    negative event term is left), the greedy repeats that token for all remaining picks, and
    which token it is depends on the last bit of the self-distances (seen with the kernels before
    and after the work split: frames=1, n=7, dim=9, k=7 repeats token 2 in the kernel and 1 in
    the reference). Frames with a repeat must then pick the same distinct tokens. D >= 8: at
    D = 2 nearly collinear tokens put every distance at rounding level (D = 1 and 3 are covered
    exactly by the awkward-shape tests)."""
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
    got = select(x, cat(weights), k, method != "adts", event=cat(events))
    for g, w in zip(got.tolist(), torch.cat(picks).tolist()):
        if method == "adts" and min(len(set(g)), len(set(w))) < k:  # a repeat
            assert set(g) == set(w), (g, w)
        else:
            assert g == w
    eligible = torch.ones(frames, n, dtype=torch.bool, device=x.device)
    eligible.scatter_(1, got, False)
    check_edges(x, eligible, starts)


# ------------------------------------------------------------------------- GPU only
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_compiled_kernels_on_gpu(dtype):
    """On a GPU the kernels run compiled (half inputs through the tensor cores)."""
    x, a = random_video(32, 196, 3584, seed=1, dtype=dtype)
    check_select(x, a, 18, "adts")
    check_select(x, a, 18, "adts_v1")
    eligible = torch.ones(32, 196, dtype=torch.bool, device=x.device)
    eligible[:, ::4] = False
    check_edges(x, eligible, [0, 5, 9, 20])


@needs_gpu
def test_repeated_launches_agree_on_gpu():
    """The frame's last program (atomic ticket) must see every tile: a missing acquire/release
    shows up as picks that change between runs of the same input."""
    x, a = random_video(64, 729, 1152, seed=11, dtype=torch.bfloat16)
    weights, event = reference_factors(x.float(), a.float(), "adts")
    first = K.adts_select(x, weights, 90, event=event)
    for _ in range(20):
        assert torch.equal(K.adts_select(x, weights, 90, event=event), first)


@needs_gpu
def test_launchers_never_synchronise_and_capture_in_a_cuda_graph():
    """No host synchronisation inside the launchers (sync debug mode raises on one), and the
    three launches replay from a CUDA graph with the same results, also on new inputs copied
    into the captured buffers (the frame tickets are zeroed and reset on every replay)."""
    x, a = random_video(16, 196, 512, seed=2, dtype=torch.bfloat16)
    eligible = torch.ones(16, 196, dtype=torch.bool, device=x.device)
    eligible[:, ::3] = False
    start = segment_layout(16, [0, 7])[0]

    def run():
        mu = x.float().mean(dim=(0, 1)).expand(16, -1).contiguous()
        norms, event = K.token_stats(x, mu)
        picks = K.adts_select(x, a.float() * 1e6, 18, event=event, norms=norms)
        return (picks, *K.tstm_edges(x, eligible, start, norms=norms))

    want = run()  # compiles
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        run()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        got = run()
    graph.replay()
    torch.cuda.synchronize()
    for g, w in zip(got, want):
        assert torch.equal(g, w)
    for seed in (3, 4):
        x_new, a_new = random_video(16, 196, 512, seed=seed, dtype=torch.bfloat16)
        x.copy_(x_new)
        a.copy_(a_new)
        graph.replay()
        torch.cuda.synchronize()
        for g, w in zip(got, run()):
            assert torch.equal(g, w), seed


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="the device guard needs two GPUs")
def test_launch_on_the_tensors_device():
    """A tensor on cuda:1 launches on cuda:1 while cuda:0 is current."""
    x, a = random_video(4, 196, 64, seed=6, dev=torch.device("cuda", 1))
    want, weights, event = reference_select(x, a, 18, "adts")
    with torch.cuda.device(0):
        got = select(x, weights, 18, False, event=event)
        eligible = torch.ones(4, 196, dtype=torch.bool, device=x.device)
        check_edges(x, eligible, [0])
    assert got.device == x.device and torch.equal(got, want)
