"""The GPU's launch plan under the interpreter (``gpu_plan``): the GPU's feature chunks, and for
float16/bfloat16 input the tensor-core path HALF_DOT (raw half tiles dotted with fp32
accumulation, then divided by the norms), which every bf16 user on a GPU takes.

The interpreter cannot dot raw bfloat16, so the kernels emulate the tensor cores exactly where
the hardware is exact: the half tiles are cast to fp32 (exact), every product of two halves is
exact in fp32, and the sums are fp32 (``EMULATE_TC``). On a GPU the same tests run the real
tensor cores.

HALF_DOT rounds differently from the torch backend (which normalises in fp32 first, then runs
its own fp32 matrix product), so the comparison is tie-aware. Both start from the same
half-precision values; they differ only by fp32 rounding, which for a pair (i, j) of the
calibrated distance D'(i, j) = (1 - cos_ij) w_j e_j is bounded by

    t_ij = 2 * ((3 D + 16) * u * S_ij * |w_j e_j| + 4 u |D'_ij|),   u = 2**-24,
    S_ij = sum_d |x_id x_jd| / (||x_i|| ||x_j||)                     (<= 1)

(two fp32 dot products of D exact products, norms of D squares, the divisions and the two
factor products; the factor 2 covers accumulators that truncate instead of rounding, as tensor
cores may). Every score the greedy compares is a minimum or an order statistic of one column of
D', so its error is at most t_j = max_i t_ij. The kernel's picks are accepted when the greedy
can be replayed on the torch backend's D' taking, at every step, the kernel's pick: the torch
backend's own choice j* whenever the kernel picked j* too, otherwise a kernel pick c whose score
is within t_c + t_j* of j*'s, i.e. a tie within the rounding of that pair. Exactly equal scores
go to the lowest index in both. Most frames must need no such decision at all.
"""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from helpers import random_video
from test_kernels import check_edges, check_select, reference_factors

import flashvid_kernels as K
from flashvid.backends import FrameStats, get_backend
from flashvid.workspace import Workspace
from flashvid_kernels._runtime import BLOCK_D_GPU, gpu_plan, recording

pytestmark = pytest.mark.usefixtures("poison_empty")
U = 2.0**-24
HALF = [torch.float16, torch.bfloat16]


def preset_k(n: int) -> int:
    """ADTS picks per frame at r = 0.10 (expansion 1.25, alpha 0.7), as the presets."""
    return math.ceil(min(n, math.ceil(n * 0.125)) * 0.7)


def torch_backend_distances(x, weights, event):
    """(D' [F, N, N] of the torch backend, its column bound t [F, N]) for half input x."""
    backend = get_backend("torch")
    with Workspace(x.device, pooled=False) as ws:
        stats = backend.frame_stats(x, backend.token_norms(x, ws, unit=True), ws, gram=True)
    gram = stats.gram.clone()
    dist = 1.0 - gram
    factor = torch.ones_like(stats.norms)
    if weights is not None:
        dist = dist * weights[:, None, :]
        factor = factor * weights
    if event is not None:
        dist = dist * event[:, None, :]
        factor = factor * event
    xf = x.float().abs()
    s = torch.bmm(xf, xf.transpose(1, 2)) / (stats.norms[:, :, None] * stats.norms[:, None, :])
    dim = x.shape[-1]
    tol = 2 * ((3 * dim + 16) * U * s * factor.abs()[:, None, :] + 4 * U * dist.abs())
    return dist, tol.amax(dim=1), stats


def torch_backend_picks(x, stats, weights, event, k, exclude, fill):
    fresh = FrameStats(stats.norms, None, event, stats.gram.clone())
    with Workspace(x.device, pooled=False) as ws:
        return get_backend("torch").adts_select(x, fresh, weights, k, exclude, fill, ws)


def replay(dist, tol, picks, k, exclude, fill):
    """Replay the greedy on one frame's D' [N, N] taking the kernel's picks (a multiset);
    (number of tie decisions, None) or (-1, why not)."""
    n = dist.shape[0]
    left = Counter(picks)
    chosen = torch.zeros(n, dtype=torch.bool)
    if n >= 2:
        score = torch.topk(dist, 2, dim=0, largest=False).values[1]
    else:
        score = dist[0].clone()
    run, ties = None, 0
    for step in range(k):
        if step > 0:
            score = run.masked_fill(chosen, fill) if exclude else run
        best = int(score.argmax())
        if left[best]:
            pick = best
        else:
            near = [c for c in left if left[c] and score[c] >= score[best] - (tol[c] + tol[best])]
            if not near:
                return -1, (f"step {step}: torch backend picks {best} (score {float(score[best])}"
                            f", bound {float(tol[best])}); the kernel's remaining picks "
                            f"{sorted(c for c in left if left[c])} score "
                            f"{[float(score[c]) for c in sorted(left) if left[c]]}")
            pick = max(near, key=lambda c: (float(score[c]), -c))
            ties += 1
        left[pick] -= 1
        chosen[pick] = True
        run = dist[pick].clone() if run is None else torch.minimum(run, dist[pick])
    return ties, None


# (N, D, frames per dtype, selection): the presets' frame sizes; D exercises one chunk of the
# GPU's 64 features, two chunks with a masked tail, and a short row
CASES = [(169, 80, 96, "adts"), (196, 64, 96, "adts"), (1024, 32, 8, "adts_v1")]


@pytest.mark.slow
@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"N{c[0]}-D{c[1]}-{c[3]}")
def test_half_dot_matches_the_torch_backend_up_to_ties(dtype, case):
    """HALF_DOT with the GPU's chunks against the torch backend on the same half-precision
    input, one seeded case per frame (200 per dtype, 400 in all)."""
    n, dim, frames, method = case
    x, a = random_video(frames, n, dim, seed=n * 31 + dim, dtype=dtype)
    weights, event = reference_factors(x.float(), a.float(), method)
    exclude, fill, k = method != "adts", -1.0, preset_k(n)
    with gpu_plan(), recording() as launches:
        got = K.adts_select(x, weights, k, exclude, fill=fill, event=event)
    gpu_bd = max(16, min(1 << (dim - 1).bit_length(), BLOCK_D_GPU))
    meta = [launch.meta for launch in launches if "HALF_DOT" in launch.meta]
    assert meta and all(m["HALF_DOT"] and m["BD"] == gpu_bd for m in meta), meta
    dist, tol, stats = torch_backend_distances(x, weights, event)
    want = torch_backend_picks(x, stats, weights, event, k, exclude, fill)
    got, want, dist, tol = got.cpu(), want.cpu(), dist.cpu(), tol.cpu()
    decided = 0
    for f in range(frames):
        if torch.equal(got[f], want[f]):
            continue
        ties, why = replay(dist[f], tol[f], got[f].tolist(), k, exclude, fill)
        assert why is None, f"frame {f}: {why}"
        decided += 1
    assert decided <= max(1, frames // 10), f"{decided} of {frames} frames differ"


@pytest.mark.slow
@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_half_dot_edges_match_up_to_ties(dtype):
    """TSTM through HALF_DOT: each similarity within its bound of the fp32 one, each parent
    the torch-style argmax or a candidate within the bound of it."""
    frames, n, dim = 12, 196, 64
    x, _ = random_video(frames, n, dim, seed=77, dtype=dtype)
    eligible = (torch.rand(frames, n, generator=torch.Generator().manual_seed(7)) > 0.25).to(
        x.device)
    start = torch.zeros(frames, dtype=torch.bool, device=x.device)
    start[[0, 5]] = True
    with gpu_plan():
        parent, maxsim = K.tstm_edges(x, eligible, start)
    xf = x.float()
    norms = torch.linalg.vector_norm(xf, dim=-1)
    unit = xf / norms[..., None]
    sim = torch.bmm(unit[1:], unit[:-1].transpose(1, 2))  # [F-1, N(t), N(t-1)]
    s = torch.bmm(xf[1:].abs(), xf[:-1].abs().transpose(1, 2)) / (
        norms[1:, :, None] * norms[:-1, None, :])
    tol = 2 * (3 * dim + 16) * U * s + 8 * U
    sim = sim.masked_fill(~eligible[:-1, None, :], -1.0)
    for t in range(1, frames):
        rows = eligible[t] & ~start[t]
        best, arg = sim[t - 1].max(dim=-1)
        linked = rows & (best > -1.0)
        assert bool((parent[t][~linked] == -1).all()) and bool((maxsim[t][~rows] == -1).all())
        bound = tol[t - 1].amax(dim=-1)
        assert bool(((maxsim[t] - best).abs()[rows] <= bound[rows]).all()), t
        for i in torch.nonzero(linked & (parent[t] != arg)).flatten().tolist():
            p, q = int(parent[t, i]), int(arg[i])
            assert bool(eligible[t - 1, p]), (t, i, p)
            gap = float(sim[t - 1, i, q] - sim[t - 1, i, p])
            assert gap <= float(tol[t - 1, i, p] + tol[t - 1, i, q]), (t, i, p, q, gap)
    assert bool((parent[start] == -1).all())


@pytest.mark.slow
@pytest.mark.parametrize("n,dim", [(169, 40), (196, 24)], ids=str)
def test_gpu_chunks_in_float32_match_the_reference_exactly(n, dim):
    """Float32 with the GPU's 16-wide feature chunks (IEEE fp32 dots, unit vectors first):
    indices equal to the reference's, similarities within 1e-6."""
    x, a = random_video(4, n, dim, seed=n + dim)
    with gpu_plan(), recording() as launches:
        check_select(x, a, preset_k(n), "adts")
        eligible = torch.rand(4, n, generator=torch.Generator().manual_seed(n)) > 0.3
        check_edges(x, eligible.to(x.device), [0, 2])
    assert {launch.meta["BD"] for launch in launches if "HALF_DOT" in launch.meta} == {16}


def test_replay_rejects_a_pick_that_is_not_a_tie():
    """The tie-aware comparison is not a formality: a pick outside the rounding bound fails."""
    gen = torch.Generator().manual_seed(0)
    dist = torch.rand(6, 6, generator=gen) + 0.5
    tol = torch.full((6,), 1e-6)
    score = torch.topk(dist, 2, dim=0, largest=False).values[1]
    best, worst = int(score.argmax()), int(score.argmin())
    assert replay(dist, tol, [best], 1, True, -1.0) == (0, None)
    ties, why = replay(dist, tol, [worst], 1, True, -1.0)
    assert ties == -1 and "torch backend picks" in why
    near = tol.clone()
    near[:] = float(score[best] - score[worst])  # a bound that makes them a tie
    assert replay(dist, near, [worst], 1, True, -1.0) == (1, None)
