"""Stage ``tstm``: the published edges, merges, roots and tree values on every fixture, and the
fast stage (static soft threshold included) equal to the reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import (
    FIXTURES,
    compress_fixture,
    fixture_config,
    fixture_segments,
    load_fixture,
    random_video,
)

import flashvid
from flashvid import reference
from flashvid.backends import get_backend
from flashvid.stages import dyseg
from flashvid.stages import tstm as stage
from flashvid.workspace import Workspace

BACKENDS = ["reference", "torch", pytest.param("triton", marks=pytest.mark.slow)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_parents(name, backend):
    _, d, out = compress_fixture(name, backend)
    n = d["input_video_features"].shape[1]
    parents = out.parents.cpu().numpy()
    for s, start, length in fixture_segments(d):
        if f"seg{s}_derived_merged" not in d:
            assert (parents[start : start + length] == -1).all()
            continue
        merged, parent = d[f"seg{s}_derived_merged"], d[f"seg{s}_derived_parent"]
        want = np.where(merged, (start + np.arange(length)[:, None] - 1) * n + parent, -1)
        np.testing.assert_array_equal(parents[start : start + length], want)


@pytest.mark.parametrize("name", FIXTURES)
def test_reference_roots_and_values_on_fixtures(name):
    meta, d = load_fixture(name)
    cfg = fixture_config(meta)
    x = torch.from_numpy(d["input_video_features"])
    n = x.shape[1]
    budget = cfg.budget(n)
    checked = 0
    for s, start, length in fixture_segments(d):
        if f"seg{s}_tstm_global_indices" not in d:
            continue
        seg = x[start : start + length]
        eligible = torch.from_numpy(d[f"seg{s}_tstm_token_mask"])
        maxsim, parent = reference.tstm_edges(seg, eligible)
        np.testing.assert_allclose(maxsim.numpy(), d[f"seg{s}_derived_maxsim"], atol=1e-6)
        merged, soft = reference.tstm_merged(maxsim, cfg.temporal_threshold,
                                             budget.total * length)
        np.testing.assert_array_equal(merged.numpy(), d[f"seg{s}_derived_merged"])
        assert soft == bool(d[f"seg{s}_derived_soft_threshold_used"])
        values = reference.trees(seg, parent, merged, "official")
        roots = ~merged & eligible
        gids = (start * n + torch.arange(length * n).view(length, n))[roots]
        np.testing.assert_array_equal(gids.numpy(), d[f"seg{s}_tstm_global_indices"])
        np.testing.assert_array_equal(roots.sum(1).numpy(), d[f"seg{s}_tstm_counts_per_frame"])
        np.testing.assert_allclose(values[roots].numpy(), d[f"seg{s}_tstm_tokens"],
                                   atol=1e-5, rtol=1e-5)
        checked += 1
    assert checked == sum(f"seg{s}_tstm_global_indices" in d for s, _, _ in fixture_segments(d))


def layout(frames: int, seed: int) -> list[int]:
    gen = torch.Generator().manual_seed(seed)
    lengths, left = [], frames
    while left:
        lengths.append(min(left, int(torch.randint(1, 6, (1,), generator=gen))))
        left -= lengths[-1]
    return lengths


@pytest.mark.parametrize("case", range(16))
def test_merge_decisions_equal_reference(case):
    """The static soft threshold (one sort, no host sync) decides as the reference's per-segment
    top-k, for thresholds that leave every segment, some segments or none short."""
    gen = torch.Generator().manual_seed(case)
    frames, n = 3 + case, [1, 4, 9, 30][case % 4]
    lengths = layout(frames, case)
    maxsim = torch.rand(frames, n, generator=gen) * 2 - 1
    maxsim[torch.rand(frames, n, generator=gen) < 0.2] = -1.0  # ADTS / segment-start rows
    maxsim[:, : n // 2] = maxsim[:, : n // 2].round(decimals=1)  # ties
    seg = dyseg.from_lengths(lengths, maxsim.device)
    for threshold in (-1.0, -0.5, 0.0, 0.8, 1.0):
        for budget in (0, 1, n // 2, n):
            budgets = torch.full((frames,), budget, dtype=torch.long)
            got = stage.merge_decisions(maxsim, seg, threshold, budgets)
            want = torch.cat([reference.tstm_merged(maxsim[a:b], threshold, budget * (b - a))[0]
                              for a, b in reference.spans(lengths)])
            assert torch.equal(got, want), (threshold, budget)


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.slow)])
@pytest.mark.parametrize("merge", ["tstm", "ttm"])
def test_stage_equals_reference(backend, merge):
    x, a = random_video(11, 49, 16, seed=5)
    lengths = [1, 4, 2, 4]
    cfg = flashvid.FlashVIDConfig(temporal_merge=merge, retention_ratio=0.3)
    eligible = torch.rand(x.shape[:2], generator=torch.Generator().manual_seed(1)) > 0.3
    eligible = eligible.to(x.device)
    seg = dyseg.from_lengths(lengths, x.device)
    fast = get_backend(backend)
    budgets = torch.full((x.shape[0],), 18, dtype=torch.long, device=x.device)
    with Workspace(x.device) as ws:
        stats = fast.token_norms(x, ws, unit=True)
        got = stage.tstm(x, stats, eligible, seg, cfg.temporal_threshold, cfg.temporal_merge,
                         budgets, fast, ws)
    parent, merged = reference.tstm(x, eligible, lengths, cfg, [18] * x.shape[0])
    assert torch.equal(got.merged, merged)
    assert torch.equal(got.parent[merged], parent[merged])


def test_torch_edges_moved_row_tie_goes_to_the_lower_position():
    """A moved row placed before an unmoved one with the same similarity: the parent is the
    lower position, as in the reference. Frame layout: slot 0 is an ADTS token (a hole), the
    eligible token at position 7 moves into it, and position 7 duplicates position 2; token 1
    of every frame equals token 2 of the previous one, so its best similarity (1) ties at 2 and
    7."""
    import flashvid.backends.pytorch as torch_backend

    frames, n = 4, 8
    x, _ = random_video(frames, n, 4, seed=2)
    x[:, 7] = x[:, 2]
    for t in range(1, frames):
        x[t, 1] = x[t - 1, 2]
    eligible = torch.tensor([[False, True, True, True, False, False, False, True]] * frames,
                            device=x.device)
    seg = dyseg.from_lengths([frames], x.device)
    fast = get_backend("torch")
    with Workspace(x.device) as ws:
        stats = fast.token_norms(x, ws, unit=True)
        order, moved = torch_backend._fill_holes(stats.unit.clone(), eligible,
                                                 eligible.sum(dim=1), 4, Workspace(x.device))
        edges = fast.tstm_edges(x, stats, eligible, seg, ws)
    assert order[0].tolist() == [7, 1, 2, 3] and moved[0].tolist() == [True] + [False] * 3
    maxsim, parent = reference.tstm_edges(x, eligible)
    assert torch.equal(edges.maxsim, maxsim)
    assert edges.parent[1:, 1].tolist() == [2] * (frames - 1) == parent[1:, 1].tolist()
    linked = maxsim > -1.0
    assert torch.equal(edges.parent[linked], parent[linked])


@pytest.mark.parametrize("layout", ["long", "uneven", "full"])
def test_torch_edges_between_eligible_rows_equal_reference(layout, monkeypatch):
    """The torch backend multiplies only the eligible rows of adjacent frames, after moving
    the eligible rows at or above a frame's eligible count into the ineligible slots below it.
    Long segments, frames with different eligible counts (ADTS repeats, quirk Q2) and frames
    with every token eligible (nothing moved) give the reference's similarities and parents
    exactly, ties included: identical tokens at a low and at high positions make a moved row
    tie with an unmoved one (the lower position must win) and two moved rows tie."""
    import flashvid.backends.pytorch as torch_backend

    frames, n = {"long": (41, 49), "uneven": (23, 30), "full": (9, 30)}[layout]
    x, _ = random_video(frames, n, 8, seed=frames)
    x[:, 5] = x[:, 3]  # exact ties: identical tokens in every frame
    x[:, n - 1] = x[:, 3]
    x[:, n - 2] = x[:, 3]
    x[:, n - 3] = x[:, n - 4]
    gen = torch.Generator().manual_seed(frames)
    keep = {"long": torch.full((frames, 1), 0.7),
            "uneven": 0.3 + 0.25 * (torch.arange(frames) % 3)[:, None],
            "full": torch.ones(frames, 1)}[layout]
    eligible = (torch.rand(frames, n, generator=gen) < keep).to(x.device)
    lengths = {"long": [1, 37, 3], "uneven": [23], "full": [4, 5]}[layout]
    seg = dyseg.from_lengths(lengths, x.device)
    fast = get_backend("torch")
    calls = []
    real = torch_backend._fill_holes
    monkeypatch.setattr(torch_backend, "_fill_holes", lambda *args: calls.append(1) or real(*args))
    with Workspace(x.device) as ws:
        stats = fast.token_norms(x, ws, unit=True)
        edges = fast.tstm_edges(x, stats, eligible, seg, ws)
    assert bool(calls) == (layout != "full")  # only the eligible rows where it pays
    for start, end in reference.spans(lengths):
        maxsim, parent = reference.tstm_edges(x[start:end], eligible[start:end])
        assert torch.equal(edges.maxsim[start:end], maxsim)
        linked = maxsim > -1.0
        assert torch.equal(edges.parent[start:end][linked], parent[linked])
        assert bool((edges.parent[start:end][~linked] == -1).all())
