"""``flashvid.compress``: validation, backend dispatch and the public entry point."""

from __future__ import annotations

from typing import Any

import torch

from . import pipeline, reference
from .config import FlashVIDConfig
from .types import CompressedVideo
from .validation import check_inputs


def compress(tokens: torch.Tensor, cls_attn: torch.Tensor, config: FlashVIDConfig | None = None,
             **overrides: Any) -> CompressedVideo:
    """Compress one video's visual tokens with FlashVID.

    Args:
        tokens: [F, N, D] float16/bfloat16/float32/float64 features of F frames with N tokens
            each (LLM-space: after the projector / merger / pooling), on any device.
        cls_attn: [F, N] non-negative importance of each token (the mean attention it receives in
            the last vision layer, SPEC §3), same device.
        config: a :class:`FlashVIDConfig` (default: the published LLaVA-OneVision setting).
        **overrides: config fields to change, e.g. ``retention_ratio=0.15, backend="torch"``.

    Returns:
        A :class:`CompressedVideo`; its ``tokens`` have the input dtype and device. The inputs are
        never modified.
    """
    cfg = config if config is not None else FlashVIDConfig()
    if not isinstance(cfg, FlashVIDConfig):
        raise TypeError(f"config must be a FlashVIDConfig or None, got {type(cfg).__name__}")
    if overrides:
        cfg = cfg.replace(**overrides)
    check_inputs(tokens, cls_attn)
    backend = resolve_backend(cfg.backend, tokens)
    if backend == "reference":
        return reference.compress(tokens, cls_attn, cfg)
    return pipeline.run(tokens, cls_attn, cfg, stage_ops(backend))[0]


def stage_ops(backend: str) -> pipeline.StageOps:
    """The heavy-stage implementation of a fast backend."""
    if backend == "torch":
        return pipeline.TorchOps()
    raise ValueError(f"backend {backend!r} is not available yet")


def resolve_backend(name: str, tokens: torch.Tensor) -> str:
    """The backend that runs: "auto" is triton on CUDA tensors and torch otherwise."""
    if name == "auto":
        return "torch"
    if name == "triton":
        raise ValueError("backend 'triton' is not available yet; use 'torch' or 'reference'")
    return name
