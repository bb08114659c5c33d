"""Stage ``dpc``: every published DPC-kNN call of every fixture, distances computed frame by
frame as published (torch.cdist's matmul path only above 25 tokens), and the batched fast stage
equal to the reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import FIXTURES, fixture_config, fixture_segments, load_fixture

import flashvid
from flashvid import reference
from flashvid.backends.pytorch import TorchBackend
from flashvid.stages import dpc as stage
from flashvid.stages import dyseg


@pytest.mark.parametrize("name", FIXTURES)
def test_reference_reproduces_every_published_call(name):
    meta, d = load_fixture(name)
    cfg = fixture_config(meta)
    x = torch.from_numpy(d["input_video_features"])
    budget = cfg.budget(x.shape[1])
    calls = 0
    for s, start, length in fixture_segments(d):
        if f"seg{s}_tstm_tokens" in d:  # the TSTM output, split per frame
            counts = d[f"seg{s}_tstm_counts_per_frame"].tolist()
            values = list(torch.from_numpy(d[f"seg{s}_tstm_tokens"]).split(counts))
        else:  # a single-frame segment clusters all its tokens (Q3)
            counts, values = [x.shape[1]], [x[start]]
        ratio = budget.merge * length / sum(counts)
        ks = [math.ceil(c * ratio) for c in counts]
        results = reference.dpc(values, ks, cfg.dpc_knn)
        j = 0
        for t, (k, result) in enumerate(zip(ks, results)):
            if k == 0:
                assert result is None
                continue
            assert int(d[f"seg{s}_dpc{j}_frame_in_segment"]) == t
            assert int(d[f"seg{s}_dpc{j}_num_clusters"]) == k
            assign, centres = result
            np.testing.assert_array_equal(centres.numpy(), d[f"seg{s}_dpc{j}_center_indices"][0])
            np.testing.assert_array_equal(assign.numpy(),
                                          d[f"seg{s}_dpc{j}_cluster_indices"][0][: counts[t]])
            j += 1
            calls += 1
        assert f"seg{s}_dpc{j}_center_indices" not in d  # no published call left unchecked
    assert calls > 0


@pytest.mark.parametrize("rows", [2, 7, 25, 26, 40])
def test_distances_are_per_frame_cdist(rows):
    """A frame's distances do not depend on the other frames of its segment: the reference's
    are torch.cdist on the frame alone, bit for bit, whatever the neighbours' sizes."""
    gen = torch.Generator().manual_seed(rows)
    z = torch.randn(rows, 24, generator=gen)
    want = torch.cdist(z[None], z[None])[0] / math.sqrt(24)
    assert torch.equal(reference.distances(z), want)
    big = torch.randn(60, 24, generator=gen)  # a neighbour frame that takes the matmul path
    seg = dyseg.make_segments([2], z.device)
    counts = [60, rows]
    plan = stage.plan(counts, seg, flashvid.FlashVIDConfig().budget(60 + rows), _cfg())
    assert plan.matmul_path == [True, rows > stage.CDIST_MM_ROWS]
    values = torch.cat([big, z])
    rows_idx = torch.arange(60, 60 + rows)[None]
    sq = values.pow(2).sum(-1)
    got = stage.distances(values, sq, rows_idx, TorchBackend(reuse_buffers=False))[0]
    assert torch.equal(got / math.sqrt(24), want)  # both cdist paths, bit for bit
    # padded to a larger width (as batched with bigger frames), the valid block is unchanged
    if rows > stage.CDIST_MM_ROWS:
        padded = torch.cat([rows_idx, rows_idx[:, -1:].expand(1, 20)], dim=1)
        wide = stage.distances(values, sq, padded, TorchBackend(reuse_buffers=False))[0]
        assert torch.equal(wide[:rows, :rows] / math.sqrt(24), want)


def _cfg(**overrides):
    return flashvid.FlashVIDConfig(**overrides)


@pytest.mark.parametrize("case", range(8))
def test_batched_stage_equals_reference(case):
    """Frames of many sizes (1 to 90 candidates, both cdist paths) and cluster counts."""
    gen = torch.Generator().manual_seed(case)
    dim = [3, 16, 64, 5][case % 4]
    counts = [int(c) for c in torch.randint(1, 90, (7,), generator=gen)]
    counts[case % 7] = [1, 25, 26][case % 3]
    values = torch.randn(sum(counts), dim, generator=gen, dtype=torch.float64 if case == 7
                         else torch.float32)
    clusters = [max(1, math.ceil(c * r)) for c, r in
                zip(counts, torch.rand(7, generator=gen).tolist())]
    clusters[1] = 0  # a frame left alone
    cfg = _cfg(dpc_knn=[7, 1, 3, 7][case % 4])
    plan = stage.Plan(clusters, [c > stage.CDIST_MM_ROWS for c in counts], [k == 0 for k in
                                                                            clusters])
    got = stage.dpc(values, counts, plan, cfg, TorchBackend(reuse_buffers=False))
    want = reference.dpc(list(values.split(counts)), clusters, cfg.dpc_knn)
    row = cluster = 0
    for c, k, result in zip(counts, clusters, want):
        if k:
            assign, centres = result
            assert torch.equal(got.centres[cluster : cluster + k] - row, centres)
            assert torch.equal(got.assign[row : row + c] - cluster, assign)
        else:
            assert bool((got.assign[row : row + c] == -1).all())
        row += c
        cluster += k
