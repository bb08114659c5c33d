"""Order independence: every kernel gives identical outputs whichever program runs first or last.

Under the interpreter programs run one after another in grid order, so a kernel that depends on
that order (or, for ADTS, on which tile-pair program draws the frame's last ticket) would pass
every other test. Here each launch runs with its program ids permuted (the ``program_order``
test hook: program L does the work of program perm[L]); outputs must be bit-identical to the
normal order's.

Your own permutations: FLASHVID_KERNELS_PROGRAM_ORDER=reversed | seed:N | module:function runs
every kernel launch of any test with that order (``tests/kernels/test_kernels.py`` then checks
the remapped kernels against the reference), and this file adds it to the orders it compares
with the normal one:

    FLASHVID_KERNELS_PROGRAM_ORDER=seed:1234 pytest tests/kernels
    FLASHVID_KERNELS_PROGRAM_ORDER=mymodule:my_perm pytest tests/kernels/test_order.py

where ``my_perm(grid)`` returns a permutation of ``range(prod(grid))``.
"""

from __future__ import annotations

import math
import os

import pytest
import torch
import triton
import triton.language as tl
from helpers import device, random_video
from test_kernels import reference_select, segment_layout

import flashvid_kernels as K
import flashvid_kernels.adts as kadts
from flashvid_kernels._runtime import ORDER_ENV, interpreting, permutation, program_order, recording

pytestmark = pytest.mark.usefixtures("poison_empty")

ORDERS = ["reversed", "seed:0", "seed:1", "seed:2"]
if os.environ.get(ORDER_ENV, "") not in ("", "grid") and os.environ[ORDER_ENV] not in ORDERS:
    ORDERS.append(os.environ[ORDER_ENV])


def run_all(x, a, eligible, start, k, order):
    """Every output of the three kernels on one video, in one program order."""
    mu = x.float().mean(dim=1)
    with program_order(order):
        norms, event = K.token_stats(x, mu)
        plain, _ = K.token_stats(x)
        picks = K.adts_select(x, a * 1e6, k, False, event=event, norms=norms)
        picks_x = K.adts_select(x, a * 1e6, k, True, fill=-1.0, norms=norms)
        parent, maxsim = K.tstm_edges(x, eligible, start, norms=norms)
    return {"norms": norms, "event": event, "plain_norms": plain, "picks": picks,
            "picks_excluding": picks_x, "parent": parent, "maxsim": maxsim}


@pytest.fixture(scope="module")
def video():
    """Three frames of 150 tokens: 6 tile-pair programs per frame for ADTS, 3 row blocks per
    frame for TSTM and 10 for the statistics; and every output in the normal order."""
    x, a = random_video(3, 150, 24, seed=5)
    eligible = torch.rand(3, 150, generator=torch.Generator().manual_seed(5)).to(x.device) > 0.2
    start = segment_layout(3, [0, 2])[0]
    return (x, a, eligible, start), run_all(x, a, eligible, start, 9, "grid")


@pytest.mark.slow
@pytest.mark.parametrize("order", ORDERS)
def test_outputs_identical_under_permuted_program_ids(video, order):
    """Every output bit for bit (floats too) as in the normal order."""
    inputs, want = video
    got = run_all(*inputs, 9, order)
    for name in want:
        assert torch.equal(got[name], want[name]), name


@triton.jit
def _order_probe(counter_ptr, rank_ptr):
    """rank[L] = when program L (linear index) ran, 0 first."""
    lin = tl.program_id(1) * tl.num_programs(0) + tl.program_id(0)
    tl.store(rank_ptr + lin, tl.atomic_add(counter_ptr, 1))


def execution_rank(grid: tuple[int, int]) -> torch.Tensor:
    counter = torch.zeros(1, dtype=torch.int32, device=device())
    rank = torch.full((math.prod(grid),), -1, dtype=torch.int32, device=device())
    _order_probe[grid](counter, rank)
    assert sorted(rank.tolist()) == list(range(math.prod(grid)))
    return rank.cpu()


def last_pair(grid: tuple[int, int], order: str) -> list[int]:
    """For each frame slot, the tile pair whose work is done by the program that runs last."""
    rank = execution_rank(grid)
    perm = permutation(order, grid) or list(range(math.prod(grid)))
    n0 = grid[0]
    last = {}
    for lin in sorted(range(len(perm)), key=lambda i: int(rank[i])):
        pair, slot = perm[lin] % n0, perm[lin] // n0
        last[slot] = pair
    return [last[s] for s in range(grid[1])]


@pytest.mark.skipif(not interpreting(), reason="a GPU runs programs in no fixed order")
def test_permutations_move_the_last_ticket():
    """The probe measures the interpreter's own execution order (rather than assuming it); with
    it, the frame's last ticket falls to another tile pair than in grid order: for every frame
    when reversed, and for some frame in each seeded order."""
    x = torch.empty(3, 150, 24, device="meta")
    with recording(dry_run=True) as launches:
        K.adts_select(x, None, 4, norms=torch.empty(3, 150, device="meta"))
    grid = launches[0].grid
    assert grid == (6, 3)
    normal = last_pair(grid, "grid")
    assert all(p != q for p, q in zip(last_pair(grid, "reversed"), normal))
    for order in ORDERS[1:]:
        assert last_pair(grid, order) != normal, order


def nan_scratch_launches(monkeypatch):
    """Fill the ADTS scratch with NaN before every launch (an unwritten cell read by the last
    program then shows in the picks) and check every frame ticket is 0 after every launch.
    Returns the list of (grid, tickets after) of the launches."""
    real = kadts.launch
    seen = []

    def launch(kernel, grid, *args, **meta):
        args[4].fill_(float("nan"))
        args[5].fill_(float("nan"))
        real(kernel, grid, *args, **meta)
        seen.append((grid, args[6].clone()))

    monkeypatch.setattr(kadts, "launch", launch)
    return seen


def shrink_scratch(monkeypatch, n: int, frames: int) -> None:
    np_, nt, _ = kadts.adts_plan(n)
    monkeypatch.setattr(kadts, "SCRATCH_BYTES", frames * 4 * (np_ * np_ + 2 * nt * np_))


@pytest.mark.slow
@pytest.mark.parametrize("order", ["grid", *ORDERS])
def test_back_to_back_launches_share_scratch_and_tickets(monkeypatch, order):
    """Five frames in chunks of two: three launches over one scratch and one set of tickets,
    scratch refilled with NaN before each; picks equal the reference's, tickets 0 after each."""
    x, a = random_video(5, 100, 16, seed=8)
    want, weights, event = reference_select(x, a, 7, "adts")
    shrink_scratch(monkeypatch, 100, 2)
    seen = nan_scratch_launches(monkeypatch)
    with program_order(order):
        got = K.adts_select(x, weights, 7, False, event=event)
    assert [grid[1] for grid, _ in seen] == [2, 2, 1]
    assert all(bool((t == 0).all()) for _, t in seen)
    assert torch.equal(got, want)


@pytest.mark.slow
def test_fresh_call_after_a_call_that_raised(monkeypatch):
    """A call rejected before launching, and a call whose second launch raised (its first chunk
    had run and its scratch holds that chunk's values), leave nothing behind: the next call
    gets fresh tickets (0 after every launch) and the reference's picks."""
    x, a = random_video(5, 100, 16, seed=9)
    want, weights, event = reference_select(x, a, 7, "adts")
    with pytest.raises(ValueError, match="k must be in"):
        K.adts_select(x, weights, 101, False, event=event)
    shrink_scratch(monkeypatch, 100, 2)
    real = kadts.launch
    calls = []

    def failing(kernel, grid, *args, **meta):
        calls.append(grid)
        if len(calls) == 2:
            raise RuntimeError("launch failed (injected)")
        real(kernel, grid, *args, **meta)

    monkeypatch.setattr(kadts, "launch", failing)
    with pytest.raises(RuntimeError, match="injected"):
        K.adts_select(x, weights, 7, False, event=event)
    monkeypatch.setattr(kadts, "launch", real)
    seen = nan_scratch_launches(monkeypatch)
    with program_order("reversed"):
        got = K.adts_select(x, weights, 7, False, event=event)
    assert torch.equal(got, want)
    assert len(seen) == 3 and all(bool((t == 0).all()) for _, t in seen)


def test_program_order_rejects_what_is_not_a_permutation():
    with pytest.raises(ValueError, match="expected a permutation of range"):
        permutation(lambda grid: [0] * math.prod(grid), (3, 2))
    with pytest.raises(ValueError, match="expected 'reversed', 'seed:N' or 'module:function'"):
        permutation("backwards", (3, 2))
    with pytest.raises(ValueError, match="seed:<integer>"):
        permutation("seed:x", (3, 2))
    assert permutation("grid", (3, 2)) is None
    assert permutation("reversed", (3, 2)) == [5, 4, 3, 2, 1, 0]
    assert sorted(permutation("test_order:rotate_by_one", (3, 2))) == list(range(6))


def rotate_by_one(grid):
    """A permutation given as module:function (used by the test above)."""
    n = math.prod(grid)
    return [(i + 1) % n for i in range(n)]
