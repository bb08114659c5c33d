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
from flashvid.stages import dpc as stage
from flashvid.workspace import Workspace


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
    values = torch.cat([big, z])
    rows_idx = torch.arange(60, 60 + rows)[None]
    sq = values.pow(2).sum(-1)
    with Workspace(values.device) as ws:
        got = stage.distances(values, sq, rows_idx, ws)[0]
        assert torch.equal(got / math.sqrt(24), want)  # both cdist paths, bit for bit
        # padded to a larger width (as batched with bigger frames), the valid block is unchanged
        if rows > stage.CDIST_MM_ROWS:
            padded = torch.cat([rows_idx, rows_idx[:, -1:].expand(1, 20)], dim=1)
            wide = stage.distances(values, sq, padded, ws, "wide")[0]
            assert torch.equal(wide[:rows, :rows] / math.sqrt(24), want)


def _cfg(**overrides):
    return flashvid.FlashVIDConfig(**overrides)


@pytest.mark.parametrize("case", range(10))
def test_batched_stage_equals_reference(case):
    """Frames of many sizes (1 to 90 candidates, both cdist paths) and cluster counts, as many
    clusters as candidates among them (cases 8, 9: every candidate is a centre of its own,
    taken without distances; identical candidates included). Rows are compared up to their
    numbering within a frame (the output is sorted by position): each row's centre and
    members."""
    gen = torch.Generator().manual_seed(case)
    dim = [3, 16, 64, 5][case % 4]
    counts = [int(c) for c in torch.randint(1, 90, (7,), generator=gen)]
    counts[case % 7] = [1, 25, 26][case % 3]
    values = torch.randn(sum(counts), dim, generator=gen, dtype=torch.float64 if case == 7
                         else torch.float32)
    clusters = [max(1, math.ceil(c * r)) for c, r in
                zip(counts, torch.rand(7, generator=gen).tolist())]
    clusters[1] = 0  # a frame left alone
    if case >= 8:  # as many clusters as candidates in three frames, one of them with repeats
        for t in (2, 4, 6):
            clusters[t] = counts[t]
        first = sum(counts[:4])
        values[first + 1 : first + counts[4]] = values[first]
    knn = [7, 1, 3, 7][case % 4]
    keep = [False] * len(counts)
    targets = torch.arange(sum(counts)) * 3  # any ascending positions
    with Workspace(values.device) as ws:
        got = stage.dpc(values, targets, counts, clusters, keep, knn, ws)
    want = reference.dpc(list(values.split(counts)), clusters, knn)
    row = cluster = 0
    for c, k, result in zip(counts, clusters, want):
        if k:
            assign, centres = result
            frame = targets[row : row + c]
            want_rows = {int(targets[row + centres[j]]): frame[assign == j].tolist()
                         for j in range(k)}
            got_rows = {int(got.centres[r]): frame[got.row[row : row + c] == r].tolist()
                        for r in range(cluster, cluster + k)}
            assert got_rows == want_rows
            if k < c:  # clustered: the rows in the reference's (descending score) order
                assert torch.equal(got.centres[cluster : cluster + k], targets[row + centres])
        else:
            assert bool((got.row[row : row + c] == -1).all())
        row += c
        cluster += k
    assert got.centres.numel() == cluster
    assert bool((got.kinds == flashvid.KIND_CLUSTER).all())


@pytest.mark.parametrize("case", range(6))
def test_static_stage_equals_host_sized_stage(case):
    """The static layout (one batch of every frame padded to a bound, sizes on the device)
    gives the host-sized stage's rows, centres and kinds, kept frames included."""
    gen = torch.Generator().manual_seed(100 + case)
    frames, n, dim = 6, 40, [3, 16, 64][case % 3]
    candidates = torch.rand(frames, n, generator=gen) < [0.2, 0.5, 0.9][case % 3]
    candidates[case % frames] = True  # a wide frame (matmul path)
    candidates[(case + 1) % frames, 1:] = False  # a frame of one candidate
    counts = candidates.sum(1).tolist()
    clusters = [max(1, math.ceil(c * 0.3)) if c else 0 for c in counts]
    keep = [False] * frames
    keep[(case + 2) % frames] = True  # kept as it is: every candidate its own row
    clusters[(case + 2) % frames] = counts[(case + 2) % frames]
    values = torch.randn(frames * n, dim, generator=gen)
    targets = candidates.reshape(-1).nonzero().flatten()
    with Workspace(values.device) as ws:
        host = stage.dpc(values[targets], targets, counts, clusters, keep, 7, ws)
    with Workspace(values.device) as ws:
        static = stage.dpc_static(values, candidates, torch.tensor(clusters), torch.tensor(keep),
                                  sum(clusters), n, 7, ws)
    # the same rows, up to their numbering: compare (centre, kind, members) per row
    def rows(result, positions):
        out = {}
        for r in range(result.centres.numel()):
            members = positions[result.row == r].tolist()
            out[int(result.centres[r])] = (int(result.kinds[r]), members)
        return out

    assert rows(host, targets) == rows(static, torch.arange(frames * n))
