"""FlashVID's vLLM plugin for LLaVA-OneVision / LLaVA-Video on a tiny random checkpoint.

Five engines, each started once per module (llava_harness.run): stock (FlashVID off); FlashVID
(OneVision variant); FlashVID keeping every token; FlashVID on a checkpoint whose name says
LLaVA-Video (so the LLaVA-Video variant, by default); and FlashVID as served: vLLM's
multi-process engine with prefix caching on (vLLM's default) and small prefill chunks. Each runs
the requests of llava_harness.REQUESTS one at a time, then a video, an image, a text-only and
an image + video request together in one batch.
"""

from __future__ import annotations

import math

import llava_harness as lh
import pytest
import tiny_llava
import torch
import torch.nn.functional as nnf

import flashvid

IDS = tiny_llava.special_ids()
VIDEO, IMAGE = IDS["<video>"], IDS["<image>"]
SETTINGS = {"flashvid": {"retention_ratio": 0.3}, "keep_all": {"retention_ratio": 1.0},
            "video": {"retention_ratio": 0.3}, "served": {"retention_ratio": 0.3}}
VARIANT = {"flashvid": "llava_onevision", "keep_all": "llava_onevision", "video": "llava_video",
           "served": "llava_onevision"}
CHUNK = 32  # prefill chunk of the served engine: videos are cut across chunks
BLOCK = 32  # its KV block size (the CPU default, 128, is longer than the tiny prompts)
ALL = tuple(lh.REQUESTS)
WITH_VIDEO = tuple(n for n in ALL if lh.frames_of(n))


# ---------------------------------------------------------------------- engines
@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("llava")
    onevision = tiny_llava.build(root / "tiny-llava-onevision")
    video = root / "tiny-LLaVA-Video-Qwen2"  # same files; the name selects the variant
    video.symlink_to(onevision, target_is_directory=True)
    return {"onevision": onevision, "video": video}


_results: dict[str, lh.Result] = {}


@pytest.fixture(scope="module")
def scenario(checkpoints):
    def get(mode: str) -> lh.Result:
        if mode in _results:
            return _results[mode]
        extra = {} if mode == "off" else {"additional_config": {"flashvid": SETTINGS[mode]}}
        checkpoint = checkpoints["video" if mode == "video" else "onevision"]
        if mode == "served":
            extra.update(enable_prefix_caching=True, max_num_batched_tokens=CHUNK,
                         block_size=BLOCK, mm_processor_cache_gb=4)
            with lh.multi_process():
                result = lh.run(checkpoint, ("A", "A2", "M"), mixed=True, probe=False, **extra)
        else:
            names = {"keep_all": ("A", "C", "M", "IV", "A2"), "video": ("A", "M", "IV")}
            result = lh.run(checkpoint, names.get(mode, ALL), mixed=True, **extra)
        _results[mode] = result
        return result

    return get


# ---------------------------------------------------------------------- helpers
def per_frame(variant: str) -> int:
    return tiny_llava.tokens_per_frame(variant)


def expected_count(mode: str, frames: int) -> int:
    """FlashVID's exact count by the published budget rule, per frame
    min(N, ceil(N * r * 1.25)), plus the variant's newline(s)."""
    n = per_frame(VARIANT[mode])
    kept = frames * min(n, math.ceil(n * SETTINGS[mode]["retention_ratio"] * 1.25))
    return kept + (1 if VARIANT[mode] == "llava_onevision" else frames)


def stock_count(frames: int) -> int:
    return frames * per_frame("llava_onevision") + 1


def outputs(result: lh.Result, name: str) -> list:
    return list(result.outputs[name])


def names_of(name: str) -> tuple[str, ...]:
    return lh.MIXED if name == "mixed" else (name,)


def assert_same_output(a, b, atol: float = 1e-4) -> None:
    assert a.prompt_token_ids == b.prompt_token_ids
    assert a.outputs[0].token_ids == b.outputs[0].token_ids
    for la, lb in zip(a.outputs[0].logprobs, b.outputs[0].logprobs):
        assert la.keys() == lb.keys()
        for tok in la:
            assert abs(la[tok].logprob - lb[tok].logprob) <= atol, (tok, la[tok], lb[tok])


def config_of(mode: str) -> flashvid.FlashVIDConfig:
    return flashvid.FlashVIDConfig.preset(VARIANT[mode], exact_count=True, **SETTINGS[mode])


def calls(probe: lh.Probe) -> list[tuple]:
    """(video [F, N, D], score [F, N], count, result, rows [L, D]) per video, in call order."""
    out = []
    for call, rows in zip(probe.compress, probe.rows):
        out += list(zip(call["videos"], call["scores"], call["counts"], call["results"], rows))
    return out


def reference_pool(x: torch.Tensor, variant: str) -> torch.Tensor:
    """[S, side*side, C] -> [S, N, C]: bilinear to ceil(side / 2) (LLaVA-OneVision, as
    LLaVA-NeXT's get_2dPool) or a 2x2 average pool (LLaVA-Video)."""
    side = tiny_llava.SIDE
    grid = x.view(x.shape[0], side, side, -1).permute(0, 3, 1, 2)
    if variant == "llava_onevision":
        size = math.ceil(side / 2)
        pooled = nnf.interpolate(grid, size=(size, size), mode="bilinear")
    else:
        pooled = nnf.avg_pool2d(grid, 2)
    return pooled.permute(0, 2, 3, 1).reshape(x.shape[0], -1, x.shape[-1])


def explicit_importance(q: torch.Tensor, k: torch.Tensor, heads: int) -> torch.Tensor:
    """[S, T] mean attention each patch receives from its frame's patches (SPEC §3.1): the
    whole softmax(q kᵀ / sqrt(d)) matrix per frame and head, mean over heads and queries."""
    s, t, width = q.shape
    qh = q.double().view(s, t, heads, -1).transpose(1, 2)
    kh = k.double().view(s, t, heads, -1).transpose(1, 2)
    attn = torch.softmax(qh @ kh.transpose(-1, -2) / math.sqrt(width // heads), dim=-1)
    return attn.mean(dim=(1, 2)).float()


# ---------------------------------------------------------------------- FlashVID off
def test_off_is_stock(scenario):
    off = scenario("off")
    for name in ALL:
        (out,) = outputs(off, name)
        assert out.prompt_token_ids.count(VIDEO) == sum(stock_count(f) for f in lh.frames_of(name))
        assert off.probes[name].compress == []
        assert len(out.outputs[0].token_ids) == 3
    # two videos of different lengths in one prompt: vLLM 0.32 returns them as [1, L, D],
    # which its runner rejects; the plugin's class hands them on as [L, D]
    assert [r.shape for r in off.probes["M"].rows[0]] == [
        (stock_count(f), tiny_llava.HIDDEN) for f in lh.frames_of("M")]


# ---------------------------------------------------------------------- counts
@pytest.mark.parametrize("mode", ["flashvid", "keep_all", "video", "served"])
def test_prompt_holds_the_exact_count(scenario, mode):
    on, off = scenario(mode), scenario("off")
    for name in on.outputs:
        for sub, out in zip(names_of(name), outputs(on, name)):
            (stock,) = outputs(off, sub)
            frames = lh.frames_of(sub)
            removed = sum(stock_count(f) - expected_count(mode, f) for f in frames)
            assert out.prompt_token_ids.count(VIDEO) == sum(expected_count(mode, f)
                                                            for f in frames)
            assert len(out.prompt_token_ids) == len(stock.prompt_token_ids) - removed
            assert out.prompt_token_ids.count(IMAGE) == stock.prompt_token_ids.count(IMAGE)
            assert len(out.outputs[0].token_ids) == 3
    if mode != "served":  # the embedding step returned exactly that many rows per video
        for name, probe in on.probes.items():
            frames = [f for sub in names_of(name) for f in lh.frames_of(sub)]
            got = sorted(r.shape[0] for rows in probe.rows for r in rows)
            assert got == sorted(expected_count(mode, f) for f in frames)


# ---------------------------------------------------------------------- the embedding step
@pytest.mark.parametrize("mode", ["flashvid", "video"])
def test_rows_are_flashvid_compress_with_newlines(scenario, mode):
    fv = scenario(mode)
    config, variant = config_of(mode), VARIANT[mode]
    n = per_frame(variant)
    newline = fv.newline
    seen = 0
    for probe in fv.probes.values():
        for video, score, count, _, rows in calls(probe):
            frames = video.shape[0]
            assert video.shape[1] == n
            assert rows.shape[0] == expected_count(mode, frames)
            assert count == rows.shape[0] - (1 if variant == "llava_onevision" else frames)
            ref = flashvid.compress(video, score, config, num_tokens=count)
            if variant == "llava_onevision":  # one newline after the video
                want = torch.cat([ref.tokens, newline[None]])
            else:  # a newline after each frame's rows, also after a frame that kept none
                pieces = []
                for f in range(frames):
                    pieces += [ref.tokens[ref.indices // n == f], newline[None]]
                want = torch.cat(pieces)
            torch.testing.assert_close(rows, want, rtol=0, atol=0)
            seen += 1
    assert seen == sum(len(lh.frames_of(s)) for name in fv.probes for s in names_of(name))


@pytest.mark.parametrize("mode", ["flashvid", "video"])
def test_features_are_the_pooled_projection(scenario, mode):
    fv, off = scenario(mode), scenario("off")
    for name in ("A", "M", "IV"):
        probe = fv.probes[name]
        (projected,) = probe.projected  # one tower call for all videos of the batch
        want = reference_pool(projected, VARIANT[mode])
        got = torch.cat([v for v, *_ in calls(probe)])
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        if VARIANT[mode] == "llava_onevision":  # and they are stock vLLM's video rows
            stock = torch.cat([r[:-1] for r in off.probes[name].rows[0]])
            torch.testing.assert_close(got.reshape(-1, got.shape[-1]), stock, rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["flashvid", "video"])
def test_importance_is_the_last_siglip_layers_attention(scenario, mode):
    fv = scenario(mode)
    # vision_feature_layer -2 of 3: vLLM builds two layers, the features are the second's
    assert fv.built_layers == tiny_llava.LAYERS + tiny_llava.FEATURE_LAYER + 1
    heads = 2
    for name in ("A", "M", "IV"):
        probe = fv.probes[name]
        (q, k), = probe.qk
        column = explicit_importance(q, k, heads)  # [S, 81]
        want = reference_pool(column[..., None], VARIANT[mode])[..., 0]
        got = torch.cat([s for _, s, *_ in calls(probe)])
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)
        n = per_frame(VARIANT[mode])
        assert not torch.allclose(got, torch.full_like(got, 1 / n), atol=1e-4)


# ---------------------------------------------------------------------- outputs
def test_keep_all_gives_stock_output(scenario):
    every, off = scenario("keep_all"), scenario("off")
    for name in every.outputs:
        for sub, out in zip(names_of(name), outputs(every, name)):
            assert_same_output(out, outputs(off, sub)[0])
    # the control: another clip of the same size changes the output, so equality means
    # something
    la, lc = (outputs(off, n)[0].outputs[0].logprobs[0] for n in ("A", "C"))
    common = la.keys() & lc.keys()
    assert not common or max(abs(la[t].logprob - lc[t].logprob) for t in common) > 1e-3


@pytest.mark.parametrize("mode", ["flashvid", "video"])
def test_mixed_batch_equals_single_requests(scenario, mode):
    on, off = scenario(mode), scenario("off")
    for name, out in zip(lh.MIXED, outputs(on, "mixed")):
        alone = outputs(on, name)[0] if name in on.outputs else outputs(off, name)[0]
        assert_same_output(out, alone)


def test_images_and_text_are_untouched(scenario):
    on, off = scenario("flashvid"), scenario("off")
    for name in ("I", "T"):
        assert_same_output(outputs(on, name)[0], outputs(off, name)[0])
        assert on.probes[name].compress == [] and on.probes[name].rows == []


def test_served_engine_with_prefix_caching_gives_the_same_outputs(scenario):
    """vLLM's multi-process engine, prefix caching on (A2 reuses A's video blocks) and videos
    cut across prefill chunks, against the in-process engine with caching off."""
    served, single = scenario("served"), scenario("flashvid")
    for name in served.outputs:
        for sub, out in zip(names_of(name), outputs(served, name)):
            assert_same_output(out, outputs(single, sub)[0])
    (a2,) = outputs(served, "A2")
    prefix = a2.prompt_token_ids.index(VIDEO) + expected_count("served", lh.frames_of("A2")[0])
    assert a2.num_cached_tokens >= prefix // BLOCK * BLOCK > 0  # the video's full blocks reused
    assert max(len(outputs(served, n)[0].prompt_token_ids) for n in ("A", "M")) > CHUNK


# ---------------------------------------------------------------------- settings
def _engine_config(checkpoint, settings, **extra):
    from vllm.engine.arg_utils import EngineArgs

    args = EngineArgs(model=str(checkpoint), load_format="dummy", max_model_len=1024,
                      additional_config={"flashvid": settings}, **extra)
    return args.create_engine_config()


@pytest.mark.parametrize("settings, extra, message", [
    ({"preset": "qwen2_5_vl"}, {}, "does not fit LlavaOnevisionForConditionalGeneration"),
    ({"llm_retention_ratio": 0.2}, {}, "inner-LLM stage"),
    ({"retention_ratio": 1.5}, {}, "retention_ratio"),
    ({"bogus": 1}, {}, "unknown key"),
    ({}, {"video_pruning_rate": 0.5}, "remove --video-pruning-rate"),
    ({}, {"compilation_config": {"compile_mm_encoder": True}}, "eager vision encoder"),
    ({"backend": "triton"}, {}, "'triton' needs a CUDA"),  # a CPU engine: refused at start
])
def test_bad_settings_are_rejected_at_start(checkpoints, settings, extra, message):
    with pytest.raises((ValueError, TypeError), match=message):
        _engine_config(checkpoints["onevision"], settings, **extra)


def test_settings_pick_the_variant_and_leave_vllms_pruning_off(checkpoints):
    mm = _engine_config(checkpoints["onevision"], {"retention_ratio": 0.2}).model_config \
        .multimodal_config
    assert mm.flashvid_settings == {"preset": "llava_onevision", "retention_ratio": 0.2}
    assert not mm.is_multimodal_pruning_enabled()  # 1-D positions: vLLM's path not needed
    mm = _engine_config(checkpoints["video"], {}).model_config.multimodal_config
    assert mm.flashvid_settings == {"preset": "llava_video"}
    mm = _engine_config(checkpoints["video"], {"preset": "llava_onevision"}).model_config \
        .multimodal_config
    assert mm.flashvid_settings == {"preset": "llava_onevision"}
