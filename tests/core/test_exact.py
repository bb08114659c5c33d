"""Exact-count mode: the row count is known before the data, and the torch path is one static
graph.

* Counts exact on a seeded sweep of 2,000 random videos and configurations (F 1-64, N 1-300,
  every selection, alpha 0 and 1, single-frame segments, tiny budgets), and for every K from F
  to F*N on small videos; ADTS rows bit for bit the input, unique positions, every input token
  represented whenever there is a merge budget; torch and reference identical.
* torch.compile(fullgraph=True) traces compress without a graph break and gives eager's result.
* On CUDA: no host synchronisation, and a CUDA graph that replays on new inputs.
"""

from __future__ import annotations

import functools
import random

import pytest
import torch
from helpers import device, random_video

import flashvid
from flashvid import KIND_ADTS


def sweep_case(seed: int, big: bool = False):
    rng = random.Random(seed)
    if big:
        frames, n = rng.randint(1, 64), rng.randint(1, 300)
    else:
        frames, n = rng.randint(1, 12), rng.choice([1, 2, 3, 5, 8, 13, 30, 49])
    dim = rng.choice([1, 3, 8])
    x, a = random_video(frames, n, dim, seed=seed, rho=rng.choice([0.3, 0.9, 0.99]))
    cfg = flashvid.FlashVIDConfig(
        retention_ratio=rng.choice([0.01, 0.05, 0.1, 0.3, 0.7, 1.0]),
        alpha=rng.choice([0.0, 0.5, 0.7, 1.0]), selection=rng.choice(flashvid.config.SELECTIONS),
        min_segments=rng.choice([1, 2, 8, 64]), segment=rng.random() < 0.9,
        temporal_threshold=rng.choice([0.0, 0.8, 1.0]), aggregation=rng.choice(["official",
                                                                                 "mean"]),
        temporal_merge=rng.choice(["tstm", "tstm", "ttm"]), exact_count=True, backend="torch")
    k = rng.choice([None, None, frames, frames * n, rng.randint(frames, frames * n)])
    return x, a, cfg, k


def check_exact(x, a, cfg, k, out):
    frames, n, dim = x.shape
    want = cfg.output_length(frames, n) if k is None else k
    assert out.tokens.shape == (want, dim) and out.indices.shape == (want,)
    assert bool((out.indices[1:] > out.indices[:-1]).all()), "positions must be unique"
    split = cfg.exact_budget(frames, n, k)
    adts = out.kinds == KIND_ADTS
    assert int(adts.sum()) == frames * split.adts
    assert torch.equal(out.tokens[adts], x.reshape(-1, dim)[out.indices[adts]])
    assert bool(torch.isfinite(out.tokens).all())
    src = out.source.reshape(-1)
    if sum(split.merge) > 0:
        assert bool((src >= 0).all()) and bool((src < want).all())
        assert torch.equal(src[out.indices], torch.arange(want, device=src.device))
    else:
        assert int((src >= 0).sum()) == frames * split.adts


@pytest.mark.parametrize("block", range(10))
def test_counts_exact_on_a_seeded_sweep(block):
    """200 cases per block, 2,000 in all; every fourth also through the reference."""
    for seed in range(block * 200, block * 200 + 200):
        x, a, cfg, k = sweep_case(seed, big=seed % 10 == 0)
        out = flashvid.compress(x, a, cfg, num_tokens=k)
        check_exact(x, a, cfg, k, out)
        if seed % 4 == 0 and x.shape[0] * x.shape[1] <= 4000:
            ref = flashvid.compress(x, a, cfg, num_tokens=k, backend="reference")
            assert torch.equal(ref.indices, out.indices), seed
            assert torch.equal(ref.kinds, out.kinds) and torch.equal(ref.source, out.source)
            torch.testing.assert_close(ref.tokens, out.tokens, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (2, 5), (3, 4), (4, 9), (6, 6)])
def test_every_k_from_f_to_fn(shape):
    frames, n = shape
    x, a = random_video(frames, n, 4, seed=frames * 31 + n, rho=0.95)
    for selection in flashvid.config.SELECTIONS:
        cfg = flashvid.FlashVIDConfig(selection=selection, min_segments=2, backend="torch")
        for k in range(frames, frames * n + 1):
            out = flashvid.compress(x, a, cfg, num_tokens=k)
            check_exact(x, a, cfg, k, out)
            ref = flashvid.compress(x, a, cfg, num_tokens=k, backend="reference")
            assert torch.equal(ref.indices, out.indices) and torch.equal(ref.source, out.source)


def test_default_exact_count_is_output_length_and_keeps_the_published_split():
    x, a = random_video(32, 196, 16, seed=0)
    cfg = flashvid.FlashVIDConfig(exact_count=True)
    out = flashvid.compress(x, a, cfg)
    assert out.tokens.shape[0] == cfg.output_length(32, 196) == 32 * 25
    assert cfg.exact_budget(32, 196) == (cfg.exact_budget(32, 196).frame_budgets, 18, [7] * 32)
    assert int((out.kinds == KIND_ADTS).sum()) == 32 * 18
    default = flashvid.compress(x, a)
    assert 32 * 25 <= default.tokens.shape[0] <= 32 * 26  # the data-dependent default


def test_keeping_every_token_returns_the_input():
    x, a = random_video(5, 12, 6, seed=3)
    out = flashvid.compress(x, a, num_tokens=60)
    assert torch.equal(out.indices, torch.arange(60, device=x.device))
    assert torch.equal(out.tokens, x.reshape(60, 6))


def test_num_tokens_errors():
    x, a = random_video(4, 10, 3, seed=0)
    for bad in (3, 41, 0):
        with pytest.raises(ValueError, match=r"num_tokens must be in \[4, 40\]"):
            flashvid.compress(x, a, num_tokens=bad)
    with pytest.raises(TypeError, match="num_tokens must be an int"):
        flashvid.compress(x, a, num_tokens=7.5)
    with pytest.raises(ValueError, match="exact_count=True needs spatial_merge=True"):
        flashvid.FlashVIDConfig(exact_count=True, spatial_merge=False)


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_compress_batch_flat_rows_and_offsets(backend):
    videos = [random_video(f, 20, 6, seed=10 + f) for f in (3, 7, 1, 5)]
    ks = [9, 70, 4, 33]
    outs = flashvid.compress_batch([v[0] for v in videos], [v[1] for v in videos],
                                   backend=backend, num_tokens=ks)
    assert outs.offsets.tolist() == [0, 9, 79, 83, 116]
    assert outs.tokens.shape == (116, 6)
    for (x, a), k, out, lo, hi in zip(videos, ks, outs, outs.offsets[:-1], outs.offsets[1:]):
        alone = flashvid.compress(x, a, backend=backend, num_tokens=k)
        assert torch.equal(out.indices, alone.indices) and torch.equal(out.tokens, alone.tokens)
        assert torch.equal(outs.tokens[lo:hi], alone.tokens)


def test_torch_compile_fullgraph_aot_eager_equals_eager():
    """The whole exact-mode compress traces as one graph (no graph break, no data-dependent
    shape; frames of more and of fewer than 25 candidates, so both distance paths); with the
    aot_eager backend it gives eager's result, and a second input of the same shape reuses the
    graph."""
    cfg = flashvid.FlashVIDConfig(exact_count=True, backend="torch", retention_ratio=0.3)
    compiled = torch.compile(functools.partial(flashvid.compress, config=cfg), fullgraph=True,
                             backend="aot_eager")
    for seed in (1, 2):
        x, a = random_video(6, 40, 8, seed=seed, dev=torch.device("cpu"))
        got, want = compiled(x, a), flashvid.compress(x, a, cfg)
        assert torch.equal(got.indices, want.indices) and torch.equal(got.tokens, want.tokens)
        assert torch.equal(got.source, want.source)


def test_torch_compile_fullgraph_with_the_symmetric_gram():
    """N >= SYMMETRIC_MIN_TOKENS: the Gram from its three distinct blocks also traces as one
    graph (dynamo takes no out= views) and gives eager's result, bit for bit."""
    from flashvid.backends.pytorch import SYMMETRIC_MIN_TOKENS

    cfg = flashvid.FlashVIDConfig(exact_count=True, backend="torch", retention_ratio=0.2)
    compiled = torch.compile(functools.partial(flashvid.compress, config=cfg), fullgraph=True,
                             backend="aot_eager")
    x, a = random_video(3, SYMMETRIC_MIN_TOKENS + 9, 8, seed=3, dev=torch.device("cpu"))
    got, want = compiled(x, a), flashvid.compress(x, a, cfg)
    assert torch.equal(got.indices, want.indices) and torch.equal(got.tokens, want.tokens)
    assert torch.equal(got.source, want.source)


COMPILE_SCRIPT = r"""
import functools, json, sys, torch, flashvid
graphs = []

def counting(gm, example_inputs):  # a backend that counts the graphs dynamo hands it
    graphs.append(len(gm.graph.nodes))
    return gm.forward

cfg = flashvid.FlashVIDConfig(exact_count=True, backend="torch")
compiled = torch.compile(functools.partial(flashvid.compress, config=cfg), fullgraph=True,
                         backend=counting)
out = []
for f, n, d, seed in json.loads(sys.argv[1]):
    gen = torch.Generator().manual_seed(seed)
    x, a = torch.randn(f, n, d, generator=gen), torch.rand(f, n, generator=gen)
    got, want = compiled(x, a), flashvid.compress(x, a, cfg)
    out.append(torch.equal(got.indices, want.indices) and torch.equal(got.tokens, want.tokens))
print(json.dumps({"graphs": len(graphs), "equal": out}))
"""


def compiled_graphs(calls: list[tuple[int, int, int, int]]) -> dict:
    """Run exact-mode compress compiled with dynamo's default settings (dynamic=None) in a
    fresh process on the (F, N, D, seed) calls; the number of graphs compiled and whether each
    call equals eager."""
    import json
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-c", COMPILE_SCRIPT, json.dumps(calls)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_torch_compile_one_graph_per_shape_in_a_fresh_process():
    """The same shape twice: one graph (no recompilation on module state filled by the first
    trace); a second shape: a graph of its own, no crash on the budget arithmetic (the
    reproducer (4, 30, 16) then (5, 24, 16)); and back to the first shape: no new graph."""
    got = compiled_graphs([(4, 30, 16, 0), (4, 30, 16, 1)])
    assert got == {"graphs": 1, "equal": [True, True]}
    got = compiled_graphs([(4, 30, 16, 0), (5, 24, 16, 1), (6, 17, 16, 2), (4, 30, 16, 3)])
    assert got["equal"] == [True] * 4
    assert got["graphs"] == 3


def test_static_plan_on_the_cpu_equals_the_host_sized_plan():
    """Exact-count mode on the CPU fetches its sizes (free there); the static plan that CUDA
    and compiled calls run keeps them on the device. Both give the same rows, bit for bit, on
    videos with single-frame segments, kept segments and both distance paths."""
    from flashvid import pipeline
    from flashvid.backends import get_backend
    from flashvid.plan import resolve

    for seed in range(12):
        rng = random.Random(seed)
        frames, n, dim = rng.choice([1, 2, 5, 9, 16]), rng.choice([3, 20, 49, 60]), 8
        x, a = random_video(frames, n, dim, seed=seed, dev=torch.device("cpu"))
        cfg = flashvid.FlashVIDConfig(exact_count=True, backend="torch",
                                      retention_ratio=rng.choice([0.05, 0.1, 0.3, 0.6]),
                                      selection=rng.choice(["adts", "adts_v1"]),
                                      min_segments=rng.choice([1, 4, 8]))
        k = rng.choice([None, frames, frames * n, max(frames, frames * n // 3)])
        want = flashvid.compress(x, a, cfg, num_tokens=k)
        plan = resolve(cfg, [frames], n, dim, x.dtype, x.device, [k], static=True)
        got = pipeline.run(x, a, plan, get_backend("torch")).videos[0]
        for name in ("indices", "kinds", "tokens", "source", "parents", "segment_starts"):
            assert torch.equal(getattr(got, name), getattr(want, name)), (seed, name)


@pytest.mark.slow
def test_torch_compile_fullgraph_inductor():
    """The default inductor backend (C++ code generation on the CPU): same decisions as eager;
    values within float32 rounding (generated reductions sum in another order)."""
    cfg = flashvid.FlashVIDConfig(exact_count=True, backend="torch", retention_ratio=0.3)
    compiled = torch.compile(functools.partial(flashvid.compress, config=cfg), fullgraph=True)
    for seed in (1, 2):
        x, a = random_video(6, 40, 8, seed=seed, dev=torch.device("cpu"))
        got, want = compiled(x, a), flashvid.compress(x, a, cfg)
        assert torch.equal(got.indices, want.indices) and torch.equal(got.source, want.source)
        torch.testing.assert_close(got.tokens, want.tokens, atol=1e-5, rtol=1e-5)


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@needs_cuda
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_no_host_synchronisation_on_cuda(backend):
    from flashvid.synthetic import synthetic_clip

    x, a = synthetic_clip(32, 196, 1024, dtype=torch.bfloat16)
    x, a = x.to(device()), a.to(device())
    cfg = flashvid.FlashVIDConfig(exact_count=True, backend=backend)
    flashvid.compress(x, a, cfg)  # warm-up: compilation, allocator
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        flashvid.compress(x, a, cfg)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@needs_cuda
def test_cuda_graph_capture_and_replay_on_new_inputs():
    from flashvid.synthetic import synthetic_clip

    cfg = flashvid.FlashVIDConfig(exact_count=True, backend="triton")
    x, a = (t.to(device()) for t in synthetic_clip(16, 196, 512, dtype=torch.bfloat16, seed=0))
    static_x, static_a = x.clone(), a.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        flashvid.compress(static_x, static_a, cfg)  # warm-up outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = flashvid.compress(static_x, static_a, cfg)
    for seed in (1, 2):
        nx, na = (t.to(device()) for t in synthetic_clip(16, 196, 512, dtype=torch.bfloat16,
                                                          seed=seed))
        static_x.copy_(nx)
        static_a.copy_(na)
        graph.replay()
        torch.cuda.synchronize()
        want = flashvid.compress(nx, na, cfg)
        assert torch.equal(static_out.indices, want.indices)
        assert torch.equal(static_out.tokens, want.tokens)
