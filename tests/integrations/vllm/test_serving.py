"""The plugin as vLLM serves it: prefix caching and the processor cache on (vLLM's defaults),
mixed batches, faults.

Prefix caching (issue: a cached prefix that covers a video skips its encoder and its position
step). One engine per Qwen family with prefix caching on and FlashVID on; each case runs a
prompt once with an empty prefix cache (the reference: no hit, exactly as with caching off),
then the request that hits the cache, and compares the greedy tokens, the logprobs and the
M-RoPE positions of every token the LLM computes (the uncached tail of the prompt, then each
decoding step) with the reference. Cases: the same video request twice (the hit covers the
whole video, whose encoder then does not run), a follow-up turn that shares the video prefix,
and hits that end inside the video and right after it. The hit lengths are checked, so each
case is what it says.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil

import harness
import llava_harness
import numpy as np
import pytest
import tiny_models
import torch

FAMILIES = tiny_models.ALL_FAMILIES
RETENTION = 0.3
BLOCK = 32  # vLLM's CPU attention takes multiples of 32; hybrid Qwen3.5 picks its own (256)
FLOAT_ATOL = {"float32": 1e-4, "bfloat16": 5e-2}


def _image(family: str, seed: int = 9):
    from PIL import Image

    height, width = tiny_models.frame_size(family, 3, 2)
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8))


def video_request(family: str, pad: int, tail: str, seed: int = 1, frames: int = 8) -> dict:
    """One video of ``frames`` frames after ``pad`` filler characters (one token each), then
    ``tail``."""
    clip = harness.video(family, frames, 2, 3, seed)
    return {"prompt": "Describe" + "x" * pad + " v0:<|vision_start|><|video_pad|><|vision_end|>"
                      + tail, "multi_modal_data": {"video": [clip]}}


def image_request(family: str) -> dict:
    return {"prompt": "Look <|vision_start|><|image_pad|><|vision_end|> at it",
            "multi_modal_data": {"image": _image(family)}}


TEXT_REQUEST = {"prompt": "Only text, no media at all"}


class Served:
    """An in-process engine with prefix caching on and FlashVID on, with a probe."""

    def __init__(self, family: str, checkpoint) -> None:
        self.family = family
        self.dtype = tiny_models.DTYPE.get(family, "float32")
        args = dict(enable_prefix_caching=True, dtype=self.dtype, mm_processor_cache_gb=1,
                    limit_mm_per_prompt={"image": 1, "video": 1},
                    additional_config={"flashvid": {"retention_ratio": RETENTION}})
        if family not in tiny_models.DTYPE:  # hybrid models choose their block size
            args["block_size"] = BLOCK
        self.engine = harness.Engine(family, checkpoint, **args)
        self.block = self.engine.llm.llm_engine.vllm_config.cache_config.block_size
        self.video_token = tiny_models.special_ids()["<|video_pad|>"]
        self.end_token = tiny_models.special_ids()["<|vision_end|>"]

    def run(self, requests: list[dict], fresh: bool) -> tuple[list, harness.Probe]:
        if fresh:
            assert self.engine.llm.reset_prefix_cache()
        outputs = self.engine.generate(copy.deepcopy(requests))
        return outputs, self.engine.probe.take()

    def layout(self, tail: str, frames: int) -> tuple[int, int, int, int]:
        """(prompt length, first and last video pad, the token after the video's run) of
        ``video_request(pad=0, tail)``."""
        (out,), _ = self.run([video_request(self.family, 0, tail, frames=frames)], fresh=True)
        ids = out.prompt_token_ids
        pads = [i for i, t in enumerate(ids) if t == self.video_token]
        after = max(i for i, t in enumerate(ids) if t == self.end_token)
        return len(ids), pads[0], pads[-1], after

    def pad_for(self, tail: str, where: str, frames: int = 8) -> tuple[int, int]:
        """(pad, expected hit) such that the second run of ``video_request(pad, tail)`` hits
        the prefix cache ``where``: "inside" the video's run, right "after" it, or "beyond" it
        (the hit covers the whole video)."""
        length, first, last, after = self.layout(tail, frames)
        for pad in range(3 * self.block):
            hit = (length + pad - 1) // self.block * self.block
            if ((where == "inside" and first + pad < hit <= last + pad)
                    or (where == "after" and hit == after + pad)
                    or (where == "beyond" and hit > after + pad)):
                return pad, hit
        raise AssertionError(f"no filler puts a {self.block}-token block boundary {where} the "
                             "video")

    def close(self) -> None:
        self.engine.close()


@pytest.fixture(scope="module", params=FAMILIES)
def served(request, checkpoints):
    engine = Served(request.param, checkpoints[request.param])
    yield engine
    engine.close()


def assert_same(hit_out, hit_probe, ref_out, ref_probe, dtype: str) -> None:
    """Same greedy tokens, close logprobs, and the same positions for every computed token."""
    assert hit_out.prompt_token_ids == ref_out.prompt_token_ids
    assert hit_out.outputs[0].token_ids == ref_out.outputs[0].token_ids
    la, lb = harness.first_logprobs(hit_out), harness.first_logprobs(ref_out)
    for tok in la.keys() & lb.keys():
        assert abs(la[tok] - lb[tok]) <= FLOAT_ATOL[dtype], (tok, la[tok], lb[tok])
    cached = hit_out.num_cached_tokens
    length = len(ref_out.prompt_token_ids)
    ref_steps = prefill_then_decode(ref_probe.positions, length)
    hit_steps = prefill_then_decode(hit_probe.positions, length - cached)
    assert len(ref_steps) == len(hit_steps)
    assert torch.equal(hit_steps[0], ref_steps[0][:, cached:]), (hit_steps[0], ref_steps[0])
    for a, b in zip(hit_steps[1:], ref_steps[1:]):  # decoding steps
        assert torch.equal(a, b), (a, b)
    assert int(ref_steps[0].min()) >= 0  # no placeholder position ever reaches the LLM


def prefill_then_decode(steps: list[torch.Tensor], prefill: int) -> list[torch.Tensor]:
    """The positions of one request's forwards as [whole prefill, decode 1, decode 2, ...]
    (the hybrid Qwen3.5 models prefill in block-sized chunks)."""
    steps = list(steps)
    first = steps.pop(0)
    while first.shape[1] < prefill:
        first = torch.cat([first, steps.pop(0)], dim=1)
    assert first.shape[1] == prefill
    return [first] + steps


@pytest.mark.parametrize("where", ["beyond", "after", "inside"])
def test_same_video_twice(served, where):
    tail = " end of the question, asked with enough words to fill a block" * (
        served.block // 32) if where == "beyond" else " end"
    # Qwen3's run sequence goes on after the pads (the later frames' timestamps and markers):
    # with 2 temporal patches a block boundary can fall among the pads
    frames = 4 if where == "inside" else 8
    pad, hit = served.pad_for(tail, where, frames)
    request = video_request(served.family, pad, tail, frames=frames)
    (ref,), ref_probe = served.run([request], fresh=True)
    (again,), probe = served.run([request], fresh=False)
    assert again.num_cached_tokens == hit
    if where == "inside":
        assert len(probe.compress) == 1  # the video's tail is computed: its encoder ran
    else:
        assert probe.compress == []  # the hit covers the video: its encoder did not run
    assert_same(again, probe, ref, ref_probe, served.dtype)


def test_follow_up_turn_shares_the_video_prefix(served):
    first_tail = " what happens here? Describe it in detail please" * (served.block // 16)
    first = video_request(served.family, 3, first_tail)
    follow = video_request(served.family, 3, first_tail + " And then, what comes next?")
    (ref,), ref_probe = served.run([follow], fresh=True)
    served.run([first], fresh=True)
    (hit,), probe = served.run([follow], fresh=False)
    after = max(i for i, t in enumerate(hit.prompt_token_ids) if t == served.end_token)
    assert hit.num_cached_tokens > after
    assert probe.compress == []
    assert_same(hit, probe, ref, ref_probe, served.dtype)


def test_mixed_batch_with_prefix_hits(served):
    """A video request (its prefix cached), an image request and a text request in one batch
    give the outputs each gives alone."""
    tail = " end of the question, asked with enough words to fill a block" * (
        served.block // 32)
    pad, _ = served.pad_for(tail, "beyond")
    batch = [video_request(served.family, pad, tail), image_request(served.family),
             TEXT_REQUEST]
    alone = [served.run([r], fresh=True)[0][0] for r in batch]
    served.run([batch[0]], fresh=True)
    together, _ = served.run(batch, fresh=False)
    assert together[0].num_cached_tokens > 0
    for a, b in zip(together, alone):
        assert a.prompt_token_ids == b.prompt_token_ids
        if served.dtype == "float32":
            assert a.outputs[0].token_ids == b.outputs[0].token_ids
        else:  # bfloat16 batches round differently: the first token's candidates agree
            assert a.outputs[0].token_ids[0] in harness.first_logprobs(b)


def test_a_prompt_ending_with_a_video_is_refused_for_that_request_only(served):
    if served.family != "qwen2_5_vl":
        pytest.skip("a Qwen2.5-VL restriction (Qwen3's video runs end with <|vision_end|>)")
    request = video_request(served.family, 0, "")
    request["prompt"] = request["prompt"].removesuffix("<|vision_end|>")
    with pytest.raises(ValueError, match="must not end with a video"):
        served.run([request], fresh=True)
    (out,), _ = served.run([TEXT_REQUEST], fresh=True)  # the engine goes on
    assert len(out.outputs[0].token_ids) == 3


def test_prefix_caching_on_equals_off(served, checkpoints):
    """The hits of the cases above against an engine with prefix caching off (vLLM's
    ``enable_prefix_caching=False``): same tokens, same positions. (The last test of a family's
    served engine: shutting a second in-process engine down leaves the first unusable.)"""
    short, long_tail = " end", " end of the question, asked with enough words to fill a block" * (
        served.block // 32)
    cases = []
    for where, tail in (("inside", short), ("after", short), ("beyond", long_tail)):
        frames = 4 if where == "inside" else 8
        pad, _ = served.pad_for(tail, where, frames)
        cases.append(video_request(served.family, pad, tail, frames=frames))
    hits = []
    for request in cases:
        served.run([request], fresh=True)
        hits.append(served.run([request], fresh=False))
    assert all(out[0].num_cached_tokens > 0 for out, _ in hits)
    off = harness.Engine(served.family, checkpoints[served.family], enable_prefix_caching=False,
                         dtype=served.dtype, mm_processor_cache_gb=1,
                         limit_mm_per_prompt={"image": 1, "video": 1},
                         additional_config={"flashvid": {"retention_ratio": RETENTION}})
    try:
        assert not off.llm.llm_engine.vllm_config.cache_config.enable_prefix_caching
        for request, (hit_out, hit_probe) in zip(cases, hits):
            ref_out = off.generate([copy.deepcopy(request)])[0]
            assert_same(hit_out[0], hit_probe, ref_out, off.probe.take(), served.dtype)
    finally:
        off.close(cleanup=False)


# ---------------------------------------------------------------------- settings at start
def _config(checkpoint, **kwargs):
    from vllm.engine.arg_utils import EngineArgs

    return EngineArgs(model=str(checkpoint), load_format="dummy", max_model_len=1024,
                      **kwargs).create_engine_config()


@pytest.fixture
def flashvid_log():
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = Keep(level=logging.DEBUG)
    logger = logging.getLogger("vllm.flashvid")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def test_unserved_architecture_with_settings_is_refused(checkpoints, tmp_path):
    relabelled = tmp_path / "qwen2_vl"
    shutil.copytree(checkpoints["qwen2_5_vl"], relabelled)
    config = json.loads((relabelled / "config.json").read_text())
    config["architectures"] = ["Qwen2VLForConditionalGeneration"]
    (relabelled / "config.json").write_text(json.dumps(config))
    for settings in ({"retention_ratio": 0.1}, {"retention_ratio": 0}):
        with pytest.raises(ValueError, match="does not serve the architecture "
                                             "Qwen2VLForConditionalGeneration") as err:
            _config(relabelled, additional_config={"flashvid": settings})
        for served in ("Qwen2_5_VLForConditionalGeneration", "Qwen3_5ForConditionalGeneration",
                       "LlavaOnevisionForConditionalGeneration"):
            assert served in str(err.value)
    _config(relabelled)  # without the setting the model is served as usual


@pytest.mark.parametrize("key", ["FlashVID", "flashvidd", "flash_vid", "Flash-VID"])
def test_misspelt_key_is_warned_about(checkpoints, flashvid_log, key):
    mm = _config(checkpoints["qwen2_5_vl"], additional_config={key: {"retention_ratio": 0.1}}
                 ).model_config.multimodal_config
    assert getattr(mm, "flashvid_settings", None) is None  # off, as asked (by the right key)
    warnings = [r.getMessage() for r in flashvid_log if r.levelno == logging.WARNING]
    assert any(repr(key) in w and "'flashvid'" in w for w in warnings), warnings


def test_one_start_line_says_on_or_off(checkpoints, flashvid_log):
    _config(checkpoints["qwen3_vl"], additional_config={"flashvid": {"retention_ratio": 0.2}})
    _config(checkpoints["qwen2_5_vl"])
    lines = [r.getMessage() for r in flashvid_log if r.levelno == logging.INFO]
    assert lines == [
        'FlashVID: on for Qwen3VLForConditionalGeneration with settings {"preset": '
        '"qwen3_vl", "retention_ratio": 0.2} (exact-count mode, vision side)',
        "FlashVID: off for Qwen2_5_VLForConditionalGeneration (no 'flashvid' in "
        "additional_config)"]


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_triton_backend_on_a_cpu_engine_is_refused_at_start(checkpoints, family):
    with pytest.raises(ValueError, match="'triton' needs a CUDA"):
        _config(checkpoints[family], additional_config={"flashvid": {"backend": "triton"}})


# ---------------------------------------------------------------------- faults
def _nan_vision(checkpoint, out):
    """A copy of ``checkpoint`` whose vision merger outputs NaN (the LLM is untouched)."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(checkpoint, out)
    for path in out.glob("*.safetensors"):
        tensors = load_file(str(path))
        hit = [n for n in tensors if "visual.merger" in n and n.endswith("weight")]
        assert hit
        for name in hit:
            tensors[name] = torch.full_like(tensors[name], float("nan"))
        save_file(tensors, str(path), metadata={"format": "pt"})
    return out


@pytest.mark.parametrize("family, multi_process", [("qwen2_5_vl", True),
                                                   ("qwen3_vl", False)])
def test_a_fault_in_compression_does_not_stop_the_served_engine(checkpoints, tmp_path, capfd,
                                                                flashvid_log, family,
                                                                multi_process):
    """Prefix caching and the processor cache on, and for Qwen2.5-VL vLLM's multi-process
    engine (as ``vllm serve`` runs it): a video whose features are NaN makes FlashVID fail
    inside the request; the error is logged, the request completes (with an evenly spaced
    selection of the announced count), and the engine goes on serving text, image and video
    requests."""
    import contextlib
    import gc

    from vllm import LLM, SamplingParams

    broken = _nan_vision(checkpoints[family], tmp_path / "nan")
    args = dict(harness.ENGINE_ARGS, enable_prefix_caching=True, mm_processor_cache_gb=1,
                limit_mm_per_prompt={"image": 1, "video": 1},
                additional_config={"flashvid": {"retention_ratio": RETENTION}})
    if multi_process:
        args.pop("distributed_executor_backend")
        args["gpu_memory_utilization"] = 0.1
    params = SamplingParams(max_tokens=3, temperature=0.0)
    mode = llava_harness.multi_process() if multi_process else contextlib.nullcontext()
    with mode:
        llm = LLM(model=str(broken), **args)
        try:
            before = llm.generate([TEXT_REQUEST], params, use_tqdm=False)[0]
            faulty = llm.generate([video_request(family, 0, " end"), TEXT_REQUEST,
                                   image_request(family)], params, use_tqdm=False)
            after = llm.generate([TEXT_REQUEST, video_request(family, 0, " end", seed=2)],
                                 params, use_tqdm=False)
        finally:
            del llm  # in-process: the process groups stay for the served engines
            gc.collect()
    assert all(len(o.outputs[0].token_ids) == 3 for o in faulty + after)
    assert faulty[1].outputs[0].token_ids == before.outputs[0].token_ids
    assert after[0].outputs[0].token_ids == before.outputs[0].token_ids
    logged = capfd.readouterr()
    text = logged.out + logged.err + "\n".join(r.getMessage() for r in flashvid_log)
    assert "FlashVID: compression failed" in text
    assert "Multi-modal warmup failed" not in text
    if multi_process:
        engine_core = [ln for ln in text.splitlines() if ln.startswith("(EngineCore")]
        assert engine_core and not any("FlashVID: on for" in ln for ln in engine_core)
