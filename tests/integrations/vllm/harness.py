"""Engines, videos, prompts and probes for the vLLM plugin tests (vLLM's CPU build, in-process).

Engines run in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, executor "uni"), so
``llm.apply_model`` hands the test the live model: :class:`Probe` records what the FlashVID hook
received and returned and the positions the LLM was given.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tiny_models
import torch

from flashvid.integrations.vllm.positions import COLUMNS, decode

ENGINE_ARGS = dict(max_model_len=4096, max_num_batched_tokens=4096,
                   max_num_seqs=4, enforce_eager=True, dtype="float32",
                   enable_prefix_caching=False,
                   limit_mm_per_prompt={"image": 0, "video": 3}, mm_processor_cache_gb=0,
                   distributed_executor_backend="uni", seed=0)


def video(family: str, frames: int, rows: int, cols: int, seed: int = 0) -> tuple:
    """A random clip as vLLM takes it: (uint8 [frames, H, W, 3], metadata); rows x cols merged
    tokens per temporal patch, frames / 2 temporal patches."""
    height, width = tiny_models.frame_size(family, rows, cols)
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(1, height, width, 3))
    drift = rng.integers(-40, 41, size=(frames, height, width, 3))
    clip = np.clip(base + drift, 0, 255).astype(np.uint8)  # frames alike, as in real video
    meta = {"fps": 2.0, "duration": frames / 2.0, "total_num_frames": frames,
            "frames_indices": list(range(frames)), "video_backend": "opencv",
            "do_sample_frames": False}
    return clip, meta


def prompt(videos: list[tuple], text: str = "Describe") -> dict[str, Any]:
    """A raw prompt with one ``<|vision_start|><|video_pad|><|vision_end|>`` per video."""
    body = "".join(f"v{i}:<|vision_start|><|video_pad|><|vision_end|>"
                   for i in range(len(videos)))
    return {"prompt": f"{text} {body} end", "multi_modal_data": {"video": list(videos)}}


@dataclass
class Probe:
    """What one engine's FlashVID hook and LLM saw; filled while requests run."""

    compress: list[dict[str, Any]] = field(default_factory=list)  # per hook call
    inputs: list[tuple[torch.Tensor, ...]] = field(default_factory=list)  # hook inputs
    outputs: list[tuple[torch.Tensor, ...]] = field(default_factory=list)  # hook return values
    exact: list[tuple[Any, ...]] = field(default_factory=list)  # their int64 positions
    qk: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)  # last block
    positions: list[torch.Tensor] = field(default_factory=list)  # [3, tokens] per forward
    flags: list[torch.Tensor] = field(default_factory=list)  # Qwen3: per video run sequence

    def clear(self) -> None:
        for value in (self.compress, self.inputs, self.outputs, self.exact, self.qk,
                      self.positions, self.flags):
            value.clear()

    def take(self) -> Probe:
        """What was recorded since the last take (a copy); the probe starts empty again."""
        taken = Probe(list(self.compress), list(self.inputs), list(self.outputs),
                      list(self.exact), list(self.qk), list(self.positions), list(self.flags))
        self.clear()
        return taken


def install_probe(model: torch.nn.Module) -> Probe:
    """Wrap the model instance's FlashVID calls and hook its forward (test-side only)."""
    probe = Probe()
    compress = model._flashvid_compress

    def recorded_compress(videos, scores, counts):
        results = compress(videos, scores, counts)
        probe.compress.append({"videos": [v.detach().clone() for v in videos],
                               "scores": [s.detach().clone() for s in scores],
                               "counts": list(counts), "results": results})
        return results

    model._flashvid_compress = recorded_compress
    postprocess = model._postprocess_video_embeds_evs

    def recorded_postprocess(split, video_input):
        probe.inputs.append(tuple(x.detach().clone() for x in split))
        out = postprocess(split, video_input)
        probe.outputs.append(tuple(o.detach().clone() for o in out))
        if model.flashvid_config is not None:
            probe.exact.append(tuple(decode(o[:, -COLUMNS:]).to(torch.long) for o in out))
        return out

    model._postprocess_video_embeds_evs = recorded_postprocess
    if hasattr(model, "_create_final_video_embeddings"):  # Qwen3 family: keep vLLM's flags
        final = model._create_final_video_embeddings

        def recorded_final(*args, **kwargs):
            out = final(*args, **kwargs)
            probe.flags.append(out[:, -2:].detach().clone())  # is_vision_start, is_video
            return out

        model._create_final_video_embeddings = recorded_final

    def qk_hook(module, args, kwargs):
        q, k = kwargs["query"], kwargs["key"]
        probe.qk.append((q.detach().reshape(-1, *q.shape[-2:]).clone(),
                         k.detach().reshape(-1, *k.shape[-2:]).clone()))

    model.visual.blocks[-1].attn.attn.register_forward_pre_hook(qk_hook, with_kwargs=True)

    def forward_hook(module, args, kwargs):
        positions = kwargs.get("positions", args[1] if len(args) > 1 else None)
        probe.positions.append(positions.detach().clone())

    model.register_forward_pre_hook(forward_hook, with_kwargs=True)
    return probe


class Engine:
    """One vLLM engine (LLM) on a tiny random checkpoint, with a probe."""

    def __init__(self, family: str, checkpoint: Path, **engine_args: Any) -> None:
        from vllm import LLM

        self.family = family
        args = dict(ENGINE_ARGS, **engine_args)
        self.llm = LLM(model=str(checkpoint), **args)
        self.probe = self.llm.apply_model(install_probe)[0]

    def generate(self, requests: list[dict[str, Any]], max_tokens: int = 3,
                 logprobs: int = 5) -> list[Any]:
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=max_tokens, temperature=0.0, logprobs=logprobs)
        self.llm.llm_engine.reset_encoder_cache()  # every run encodes its videos afresh
        return self.llm.generate(requests, params, use_tqdm=False)

    def close(self, cleanup: bool = True) -> None:
        """Shut the engine down; ``cleanup=False`` keeps torch.distributed's groups, which
        another in-process engine that is still open shares."""
        from vllm.distributed import cleanup_dist_env_and_memory

        del self.llm
        gc.collect()
        if cleanup:
            cleanup_dist_env_and_memory()


def first_logprobs(output: Any) -> dict[int, float]:
    """{token id: logprob} of the first generated token's top candidates."""
    return {tok: lp.logprob for tok, lp in output.outputs[0].logprobs[0].items()}


def in_process() -> None:
    """Environment for in-process engines; call before importing vLLM."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.pop("TRITON_INTERPRET", None)  # the main suite's kernel setting; not for vLLM


# The requests every scenario runs: (frames, rows, cols, seed) per video. Frames are video
# frames (2 per temporal patch); rows x cols merged tokens per temporal patch.
CLIPS = {
    "A": [(8, 2, 3, 1)],
    "C": [(8, 2, 3, 2)],  # A's size, other content: the control for sensitivity
    "M": [(4, 3, 4, 3), (6, 2, 2, 4), (2, 4, 3, 5)],  # several videos in one prompt
    "R1": [(10, 2, 3, 6)],
    "R2": [(4, 3, 3, 7)],
}
SCENARIOS = {
    "off": {},
    "flashvid": {"qwen2_5_vl": {"retention_ratio": 0.3, "alpha": 0.5},
                 "qwen3_vl": {"retention_ratio": 0.1, "temporal_threshold": 0.9}},
    "keep_all": {"qwen2_5_vl": {"retention_ratio": 1.0}, "qwen3_vl": {"retention_ratio": 1.0}},
    # FlashVID as above, with small prefill chunks (CHUNK): videos cut across chunks
    "chunked": {"qwen2_5_vl": {"retention_ratio": 0.3, "alpha": 0.5},
                "qwen3_vl": {"retention_ratio": 0.1, "temporal_threshold": 0.9}},
    "evs": {},
}
for _family in tiny_models.QWEN3_FAMILY[1:]:  # Qwen3-VL-MoE, Qwen3.5, Qwen3.5-MoE: as Qwen3-VL
    for _mode in ("flashvid", "keep_all", "chunked"):
        SCENARIOS[_mode][_family] = dict(SCENARIOS[_mode]["qwen3_vl"])
EVS_RATE = 0.5
# prefill chunk (max_num_batched_tokens) of mode "chunked": small enough to cut videos, and
# for Qwen3-VL no smaller than a whole video's run (vLLM sizes its encoder cache from
# max(max_num_batched_tokens, one temporal patch's tokens) and refuses longer videos)
CHUNK = {"qwen2_5_vl": 24, "qwen3_vl": 64}


def engine_args(family: str, mode: str) -> dict[str, Any]:
    if family in tiny_models.DTYPE:
        return dict(_engine_args(family, mode), dtype=tiny_models.DTYPE[family])
    return _engine_args(family, mode)


def _engine_args(family: str, mode: str) -> dict[str, Any]:
    if mode == "evs":
        return {"video_pruning_rate": EVS_RATE}
    if mode in ("flashvid", "keep_all", "chunked"):
        args = {"additional_config": {"flashvid": dict(SCENARIOS[mode][family])}}
        if mode == "chunked":
            args.update(max_num_batched_tokens=CHUNK[family], max_num_seqs=1)
        return args
    return {}


def request(family: str, name: str) -> dict[str, Any]:
    return prompt([video(family, *clip) for clip in CLIPS[name]])


@dataclass
class Result:
    """A scenario's outputs: per request name, the RequestOutput and what the probe saw."""

    outputs: dict[str, Any]
    probes: dict[str, Probe]
    seconds: dict[str, float]


def run_scenario(family: str, mode: str, checkpoint: Path) -> Result:
    """Start one engine, run the request battery one request at a time (then R1 and R2
    together), close it."""
    import time

    start = time.perf_counter()
    engine = Engine(family, checkpoint, **engine_args(family, mode))
    seconds = {"start": time.perf_counter() - start}
    outputs, probes = {}, {}
    engine.probe.clear()
    names = ("A", "M") if mode == "chunked" else ("A", "M", "C", "R1", "R2")
    try:
        for name in names:
            start = time.perf_counter()
            outputs[name] = engine.generate([request(family, name)])[0]
            seconds[name] = time.perf_counter() - start
            probes[name] = engine.probe.take()
        if mode != "chunked":
            both = engine.generate([request(family, "R1"), request(family, "R2")])
            outputs["R1+R2"] = both
            probes["R1+R2"] = engine.probe.take()
    finally:
        engine.close()
    return Result(outputs, probes, seconds)
