"""FlashVID's vLLM plugin on vLLM's CPU build, with tiny random Qwen2.5-VL / Qwen3-VL models.

Each scenario (FlashVID off, FlashVID on, FlashVID keeping every token, vLLM's EVS) starts one
engine once per session and runs the same requests (harness.CLIPS): one video; three videos of
different sizes in one prompt; a control clip; two requests alone, then together.
"""

from __future__ import annotations

import math
import subprocess
import sys

import harness
import pytest
import reference
import tiny_models
import torch

import flashvid

FAMILIES = tiny_models.FAMILIES
SINGLE = ("A", "M", "C", "R1", "R2")
each_family = pytest.mark.parametrize("family", FAMILIES)
# Qwen3-VL-MoE, Qwen3.5 and Qwen3.5-MoE (Qwen3-VL's vision side): counts, positions, keep-all
every_family = pytest.mark.parametrize("family", tiny_models.ALL_FAMILIES)
ATOL = {"qwen3_5": 5e-2, "qwen3_5_moe": 5e-2}  # bfloat16 (vLLM's CPU GDN kernels)


# ---------------------------------------------------------------------- helpers
def grids(name: str) -> list[tuple[int, int, int]]:
    """(t, rows, cols) in merged tokens per video of a request."""
    return [(frames // tiny_models.TEMPORAL, rows, cols)
            for frames, rows, cols, _ in harness.CLIPS[name]]


def patch_grids(name: str) -> list[tuple[int, int, int]]:
    """video_grid_thw: (t, h, w) in patches."""
    m = tiny_models.MERGE
    return [(t, rows * m, cols * m) for t, rows, cols in grids(name)]


def flashvid_count(family: str, mode: str, t: int, n: int) -> int:
    """The exact count, from the published budget rule: per frame min(N, ceil(N * r * 1.25))."""
    fields = harness.SCENARIOS[mode][family]
    expansion = fields.get("expansion", 1.25)
    return t * min(n, math.ceil(n * fields["retention_ratio"] * expansion))


def pads(output, family: str) -> int:
    video_token = tiny_models.special_ids()["<|video_pad|>"]
    return sum(1 for tok in output.prompt_token_ids if tok == video_token)


def outputs_of(result, name: str) -> list:
    out = result.outputs[name]
    return list(out) if isinstance(out, list) else [out]


def names_of(name: str) -> list[str]:
    return ["R1", "R2"] if name == "R1+R2" else [name]


def config_of(family: str, mode: str) -> flashvid.FlashVIDConfig:
    return flashvid.FlashVIDConfig.preset(family, exact_count=True,
                                          **harness.SCENARIOS[mode][family])


def kept_mask(unpruned_ids: list[int], video_sizes: list[int],
              kept: list[torch.Tensor]) -> torch.Tensor:
    """[L] bool over the uncompressed prompt: every text token, and the video tokens whose
    index inside their video (t*N + n, in prompt order) FlashVID kept."""
    video_token = tiny_models.special_ids()["<|video_pad|>"]
    ids = torch.tensor(unpruned_ids)
    mask = ids != video_token
    slots = (ids == video_token).nonzero().flatten()
    assert slots.numel() == sum(video_sizes)
    offset = 0
    for size, indices in zip(video_sizes, kept):
        mask[slots[offset + indices.cpu()]] = True
        offset += size
    return mask


def assert_logprobs_close(a, b, atol=1e-4) -> None:
    assert a.outputs[0].token_ids == b.outputs[0].token_ids
    la, lb = harness.first_logprobs(a), harness.first_logprobs(b)
    assert la.keys() == lb.keys()
    for tok in la:
        assert abs(la[tok] - lb[tok]) <= atol, (tok, la[tok], lb[tok])


# ---------------------------------------------------------------------- FlashVID off
@every_family
def test_off_is_stock(scenario, family):
    off = scenario(family, "off")
    for name in SINGLE:
        (out,) = outputs_of(off, name)
        assert pads(out, family) == sum(t * r * c for t, r, c in grids(name))
        assert off.probes[name].compress == [] and off.probes[name].outputs == []
        assert len(out.outputs[0].token_ids) == 3


@each_family
def test_evs_still_works_when_flashvid_is_off(scenario, family):
    evs = scenario(family, "evs")
    for name in SINGLE:
        (out,) = outputs_of(evs, name)
        expected = sum(max(r * c, int(t * r * c * (1 - harness.EVS_RATE)))
                       for t, r, c in grids(name))
        assert pads(out, family) == expected
        assert evs.probes[name].compress == []  # FlashVID's hook never ran
        assert len(evs.probes[name].outputs) == len(grids(name))  # vLLM's EVS hook did
        assert len(out.outputs[0].token_ids) == 3


# ---------------------------------------------------------------------- counts
@every_family
@pytest.mark.parametrize("mode", ["flashvid", "keep_all"])
def test_prompt_length_is_the_exact_count(scenario, family, mode):
    on, off = scenario(family, mode), scenario(family, "off")
    for name in SINGLE + ("R1+R2",):
        for sub, out, stock in zip(names_of(name), outputs_of(on, name), outputs_of(off, name)):
            counts = [flashvid_count(family, mode, t, r * c) for t, r, c in grids(sub)]
            removed = sum(t * r * c for t, r, c in grids(sub)) - sum(counts)
            assert pads(out, family) == sum(counts)
            assert len(out.prompt_token_ids) == len(stock.prompt_token_ids) - removed
            assert len(out.outputs[0].token_ids) == 3


# ---------------------------------------------------------------------- the hook
@each_family
def test_rows_are_flashvid_compress_at_their_positions(scenario, family):
    fv = scenario(family, "flashvid")
    config = config_of(family, "flashvid")
    dim = 64  # out_hidden_size of the tiny models
    for name in ("A", "M", "R1+R2"):
        probe = fv.probes[name]
        expected_grids = [g for sub in names_of(name) for g in grids(sub)]
        calls = [(c, v, s, k, r) for c in probe.compress
                 for v, s, k, r in zip(c["videos"], c["scores"], c["counts"], c["results"])]
        hook_in = [x for call in probe.inputs for x in call]
        hook_out = [x for call in probe.outputs for x in call]
        exact = [x for call in probe.exact for x in call]
        flags = list(probe.flags)
        assert len(calls) == len(hook_out) == len(exact) == len(expected_grids)
        seen = sorted(tuple(v.shape[:2]) for _, v, _, _, _ in calls)
        assert seen == sorted((t, r * c) for t, r, c in expected_grids)
        for i, ((_, video, score, count, _), raw, out, positions) in enumerate(
                zip(calls, hook_in, hook_out, exact)):
            t, n = video.shape[:2]
            cols = next(c for tt, r, c in expected_grids if (tt, r * c) == (t, n))
            assert count == flashvid_count(family, "flashvid", t, n)
            ref = flashvid.compress(video, score, config, num_tokens=count)
            assert ref.tokens.shape[0] == count
            frame, pos = ref.indices // n, ref.indices % n
            # the rows carry their positions in COLUMNS exact columns (base-256 digits)
            assert out.shape[1] == raw.shape[1] + harness.COLUMNS
            if family == "qwen2_5_vl":
                # [K, D + COLUMNS]: rows, then (t * tokens_per_second * seconds_per_grid, h, w)
                assert out.shape == (count, dim + harness.COLUMNS)
                torch.testing.assert_close(out[:, :dim], ref.tokens, rtol=0, atol=0)
                want = torch.stack([frame * 2, pos // cols, pos % cols])
                assert torch.equal(positions.cpu(), want.cpu())
            else:
                # the whole run sequence; video rows flagged by vLLM's own last column
                video_rows = flags[i][:, -1] == 1
                assert int(video_rows.sum()) == count
                rows = out[video_rows]
                torch.testing.assert_close(rows[:, :dim], ref.tokens, rtol=0, atol=0)
                deep = raw[ref.indices.to(raw.device), dim:]  # representatives' deepstack rows
                torch.testing.assert_close(rows[:, dim:-harness.COLUMNS], deep, rtol=0, atol=0)
                per_frame = torch.bincount(frame, minlength=t)  # rows in each frame's run
                starts = (flags[i][:, -2] == 1).nonzero().flatten()  # <|vision_start|> per run
                assert starts.numel() == t
                for f in range(t):
                    run = video_rows[starts[f] + 1:starts[f] + 1 + int(per_frame[f])]
                    assert bool(run.all())


@each_family
def test_importance_is_the_last_blocks_attention(scenario, family):
    fv = scenario(family, "flashvid")
    window = 2 if family == "qwen2_5_vl" else None  # window_size / merge / patch
    for name in ("A", "M"):
        probe = fv.probes[name]
        scores = [s for call in probe.compress for s in call["scores"]]
        assert len(probe.qk) == len(scores) == len(grids(name))
        for (q, k), score, (t, rows, cols) in zip(probe.qk, scores, grids(name)):
            want = reference.explicit_importance(q, k, t, rows, cols, tiny_models.MERGE, window)
            torch.testing.assert_close(score, want, rtol=1e-4, atol=1e-7)
            assert not torch.allclose(score, torch.full_like(score, 1 / (rows * cols)))


# ---------------------------------------------------------------------- positions
@every_family
@pytest.mark.parametrize("mode", ["off", "flashvid", "keep_all", "chunked"])
def test_positions_are_those_of_the_uncompressed_prompt(scenario, family, mode):
    """The M-RoPE positions the LLM receives are the positions of the uncompressed prompt
    (reference.mrope_positions), taken at the tokens that remain (text, markers, timestamps,
    kept rows): a kept row sits at its representative's (t, h, w) and nothing else moves."""
    if mode == "chunked" and family not in FAMILIES:
        pytest.skip("engine time: chunked prefill runs on Qwen2.5-VL and Qwen3-VL, whose "
                    "vision side the other Qwen3-VL-family models share")
    on, off = scenario(family, mode), scenario(family, "off")
    video_token = tiny_models.special_ids()["<|video_pad|>"]
    for name in ("A", "M") if mode == "chunked" else ("A", "M", "R1+R2"):
        length = sum(len(o.prompt_token_ids) for o in outputs_of(on, name))
        steps = list(on.probes[name].positions)
        captured = steps.pop(0)
        while captured.shape[1] < length:  # prefill chunks (mode "chunked")
            captured = torch.cat([captured, steps.pop(0)], dim=1)
        chunks = len(on.probes[name].positions) - len(steps)
        if mode == "chunked":  # the scheduler cut the prompt (where it likes) into chunks
            assert chunks >= math.ceil(length / harness.CHUNK[family]) >= 2
        else:
            assert chunks == 1
        offset = 0
        results = [r for call in on.probes[name].compress for r in call["results"]]
        for sub, stock in zip(names_of(name), outputs_of(off, name)):
            full = reference.mrope_positions(family, stock.prompt_token_ids, grids(sub),
                                             video_token)
            sizes = [t * r * c for t, r, c in grids(sub)]
            if mode == "off":
                kept = [torch.arange(size) for size in sizes]
            else:  # hook calls are per video, in scheduling order: match them by size
                kept = []
                for size in sizes:
                    match = next(r for r in results if r.source.numel() == size)
                    results.remove(match)
                    kept.append(match.indices)
            want = full[:, kept_mask(stock.prompt_token_ids, sizes, kept)]
            got = captured[:, offset:offset + want.shape[1]]
            assert torch.equal(got.cpu(), want), (sub, got, want)
            offset += want.shape[1]
        assert offset == captured.shape[1]


def test_qwen3_reference_positions_agree_with_transformers(scenario, checkpoints):
    """The positions reference against transformers' own get_rope_index (Qwen3-VL, where
    transformers 5.x and vLLM follow the same rule)."""
    off = scenario("qwen3_vl", "off")
    video_token = tiny_models.special_ids()["<|video_pad|>"]
    for name in ("A", "M"):
        ids = outputs_of(off, name)[0].prompt_token_ids
        ours = reference.mrope_positions("qwen3_vl", ids, grids(name), video_token)
        theirs = reference.hf_positions(checkpoints["qwen3_vl"], ids, patch_grids(name))
        assert torch.equal(ours, theirs)


# ---------------------------------------------------------------------- outputs
@every_family
def test_keep_all_gives_stock_output(scenario, family):
    every, off = scenario(family, "keep_all"), scenario(family, "off")
    for name in ("A", "M", "C"):
        (a,), (b,) = outputs_of(every, name), outputs_of(off, name)
        assert_logprobs_close(a, b, atol=ATOL.get(family, 1e-4))
    # the control: another clip of the same size changes the output, so equality means
    # something
    la, lc = (harness.first_logprobs(outputs_of(off, n)[0]) for n in ("A", "C"))
    common = la.keys() & lc.keys()
    assert not common or max(abs(la[t] - lc[t]) for t in common) > 1e-3


@each_family
def test_chunked_prefill_gives_the_same_output(scenario, family):
    chunked, whole = scenario(family, "chunked"), scenario(family, "flashvid")
    for name in ("A", "M"):
        (a,), (b,) = outputs_of(chunked, name), outputs_of(whole, name)
        assert a.prompt_token_ids == b.prompt_token_ids
        assert_logprobs_close(a, b)


@each_family
def test_concurrent_requests(scenario, family):
    fv = scenario(family, "flashvid")
    together = outputs_of(fv, "R1+R2")
    alone = [outputs_of(fv, "R1")[0], outputs_of(fv, "R2")[0]]
    for a, b in zip(together, alone):
        assert a.prompt_token_ids == b.prompt_token_ids
        assert_logprobs_close(a, b)
    counts = sorted(k for call in fv.probes["R1+R2"].compress for k in call["counts"])
    assert counts == sorted(flashvid_count(family, "flashvid", t, r * c)
                            for sub in ("R1", "R2") for t, r, c in grids(sub))


# ---------------------------------------------------------------------- settings
@pytest.mark.parametrize("settings, extra, message", [
    ({"bogus": 1}, {}, "unknown key"),
    ({"llm_retention_ratio": 0.2}, {}, "inner-LLM stage"),
    ({"retention_ratio": 0.0}, {}, "retention_ratio"),
    ({"preset": "llava"}, {}, "preset"),
    ([0.1], {}, "JSON object"),
    ({}, {"video_pruning_rate": 0.5}, "FlashVID replaces it"),
])
@each_family
def test_bad_settings_are_rejected_at_start(checkpoints, family, settings, extra, message):
    from vllm.engine.arg_utils import EngineArgs

    args = EngineArgs(model=str(checkpoints[family]), load_format="dummy", max_model_len=1024,
                      additional_config={"flashvid": settings}, **extra)
    with pytest.raises((ValueError, TypeError), match=message):
        args.create_engine_config()


@each_family
def test_settings_turn_on_vllms_pruning_path(checkpoints, family):
    from vllm.engine.arg_utils import EngineArgs

    on = EngineArgs(model=str(checkpoints[family]), load_format="dummy", max_model_len=1024,
                    additional_config={"flashvid": {"retention_ratio": 0.2}})
    mm = on.create_engine_config().model_config.multimodal_config
    assert mm.is_multimodal_pruning_enabled()
    assert mm.flashvid_settings == {"preset": family, "retention_ratio": 0.2}
    off = EngineArgs(model=str(checkpoints[family]), load_format="dummy", max_model_len=1024)
    mm = off.create_engine_config().model_config.multimodal_config
    assert not mm.is_multimodal_pruning_enabled()
    assert getattr(mm, "flashvid_settings", None) is None


def test_import_is_light():
    code = ("import sys, flashvid.integrations.vllm; "
            "print(sorted(m for m in ('vllm', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
