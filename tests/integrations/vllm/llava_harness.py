"""Engines, requests and probes for the LLaVA-OneVision plugin tests (vLLM's CPU build).

In-process engines (``harness.in_process()``, set by conftest.py) hand the test the live model
through ``llm.apply_model``: :class:`Probe` records, for every video batch, what the projector
returned (unpooled), the last SigLIP layer's q and k (recomputed here from that layer's input
with the layer's own modules, not through the plugin's hook), what FlashVID was given and
returned, and the rows the model handed vLLM. One multi-process engine (vLLM's default mode, as
``vllm serve`` runs it) is started with :func:`multi_process`.
"""

from __future__ import annotations

import contextlib
import gc
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

ENGINE_ARGS = dict(max_model_len=4096, max_num_batched_tokens=4096, max_num_seqs=4,
                   enforce_eager=True, dtype="float32", enable_prefix_caching=False,
                   limit_mm_per_prompt={"image": 1, "video": 2}, mm_processor_cache_gb=0,
                   distributed_executor_backend="uni", seed=0)


def clip(frames: int, height: int, width: int, seed: int) -> np.ndarray:
    """A random clip, uint8 [frames, height, width, 3], frames alike as in real video (the
    processor resizes every frame to the tower's 36 x 36)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(1, height, width, 3))
    drift = rng.integers(-40, 41, size=(frames, height, width, 3))
    return np.clip(base + drift, 0, 255).astype(np.uint8)


def image(height: int, width: int, seed: int) -> Any:
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8))


# name -> (text with <image>/<video> placeholders, images [(h, w, seed)], videos [(F, h, w, seed)])
REQUESTS = {
    "A": ("Describe <video> briefly", [], [(6, 40, 52, 1)]),
    "A2": ("Describe <video> in other words", [], [(6, 40, 52, 1)]),  # A's video: prefix hit
    "C": ("Describe <video> briefly", [], [(6, 40, 52, 2)]),  # A's shape, other content
    "M": ("First <video> then <video> compare", [], [(4, 36, 36, 3), (7, 44, 30, 4)]),
    "I": ("Look <image> here", [(50, 80, 5)], []),
    "IV": ("Image <image> and video <video> now", [(30, 60, 6)], [(5, 36, 48, 7)]),
    "T": ("Only text, no media at all", [], []),
}
MIXED = ("A", "I", "T", "IV")  # one generate() call: video, image, text, image + video


def request(name: str) -> dict[str, Any]:
    text, images, videos = REQUESTS[name]
    data: dict[str, Any] = {}
    if images:
        data["image"] = [image(*spec) for spec in images]
    if videos:
        data["video"] = [clip(*spec) for spec in videos]
    out: dict[str, Any] = {"prompt": text}
    if data:
        out["multi_modal_data"] = {k: v if len(v) > 1 else v[0] for k, v in data.items()}
    return out


def frames_of(name: str) -> list[int]:
    return [spec[0] for spec in REQUESTS[name][2]]


@dataclass
class Probe:
    """What one engine's video path saw; filled while requests run."""

    projected: list[torch.Tensor] = field(default_factory=list)  # [S, side*side, D] per batch
    qk: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)  # [S, T, H*d]
    compress: list[dict[str, Any]] = field(default_factory=list)
    rows: list[list[torch.Tensor]] = field(default_factory=list)  # per batch, per video [L, D]
    newline: torch.Tensor | None = None  # the model's image_newline [D]
    built_layers: int = 0  # SigLIP layers vLLM built

    def take(self) -> Probe:
        taken = Probe(list(self.projected), list(self.qk), list(self.compress), list(self.rows),
                      self.newline, self.built_layers)
        for value in (self.projected, self.qk, self.compress, self.rows):
            value.clear()
        return taken


def install_probe(model: torch.nn.Module) -> Probe:
    """Wrap the model instance's video path and FlashVID call (test side only)."""
    probe = Probe(newline=model.image_newline.detach().clone())
    layers = model.vision_tower.vision_model.encoder.layers
    probe.built_layers = len(layers)
    last = layers[-1]
    in_video = [False]

    def layer_input(module, args, kwargs):
        if not in_video[0]:
            return
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        with torch.no_grad():
            qkv, _ = last.self_attn.qkv_proj(last.layer_norm1(hidden))
            q, k, _ = qkv.chunk(3, dim=-1)
        probe.qk.append((q.detach().clone(), k.detach().clone()))

    last.register_forward_pre_hook(layer_input, with_kwargs=True)

    def projector_output(module, args, output):
        if in_video[0]:
            probe.projected.append(output.detach().clone())

    model.multi_modal_projector.register_forward_hook(projector_output)
    video_path = model._process_video_pixels

    def recorded_video_path(inputs):
        in_video[0] = True
        try:
            out = video_path(inputs)
        finally:
            in_video[0] = False
        probe.rows.append([o.detach().clone().reshape(-1, o.shape[-1]) for o in out])
        return out

    model._process_video_pixels = recorded_video_path
    if getattr(model, "flashvid_config", None) is not None:
        compress = model._flashvid_compress

        def recorded_compress(videos, scores, counts):
            results = compress(videos, scores, counts)
            probe.compress.append({"videos": [v.detach().clone() for v in videos],
                                   "scores": [s.detach().clone() for s in scores],
                                   "counts": list(counts), "results": results})
            return results

        model._flashvid_compress = recorded_compress
    return probe


class Engine:
    """One vLLM engine (LLM) on the tiny checkpoint; a probe when in-process."""

    def __init__(self, checkpoint: Path, probe: bool = True, **engine_args: Any) -> None:
        from vllm import LLM

        start = time.perf_counter()
        self.llm = LLM(model=str(checkpoint), **dict(ENGINE_ARGS, **engine_args))
        self.start_seconds = time.perf_counter() - start
        self.probe = self.llm.apply_model(install_probe)[0] if probe else None

    def generate(self, names: list[str], max_tokens: int = 3, logprobs: int = 5) -> list[Any]:
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=max_tokens, temperature=0.0, logprobs=logprobs)
        return self.llm.generate([request(n) for n in names], params, use_tqdm=False)

    def close(self) -> None:
        from vllm.distributed import cleanup_dist_env_and_memory

        self.llm.llm_engine.engine_core.shutdown()
        del self.llm
        gc.collect()
        cleanup_dist_env_and_memory()


@contextlib.contextmanager
def multi_process():
    """vLLM's default multi-process mode (engine core in its own process) for the engines
    started inside; the test session runs in-process otherwise (conftest.py)."""
    import vllm.envs as envs

    saved = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING")
    envs.disable_envs_cache()  # an in-process engine cached the in-process setting
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
        else:
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = saved
        envs.disable_envs_cache()


@dataclass
class Result:
    """A scenario's outputs: per request name (or "mixed"), the RequestOutputs and probes."""

    outputs: dict[str, list[Any]]
    probes: dict[str, Probe]
    start_seconds: float
    newline: torch.Tensor | None = None
    built_layers: int = 0


def run(checkpoint: Path, names: tuple[str, ...], mixed: bool, probe: bool = True,
        **engine_args: Any) -> Result:
    """Start one engine, run ``names`` one request at a time, then (``mixed``) MIXED together
    in one call; close it."""
    engine = Engine(checkpoint, probe=probe, **engine_args)
    outputs, probes = {}, {}
    try:
        if engine.probe is not None:
            engine.probe.take()
        for name in names:
            outputs[name] = engine.generate([name])
            if engine.probe is not None:
                probes[name] = engine.probe.take()
        if mixed:
            outputs["mixed"] = engine.generate(list(MIXED))
            if engine.probe is not None:
                probes["mixed"] = engine.probe.take()
        newline = engine.probe.newline if engine.probe is not None else None
        layers = engine.probe.built_layers if engine.probe is not None else 0
    finally:
        engine.close()
    return Result(outputs, probes, engine.start_seconds, newline, layers)
