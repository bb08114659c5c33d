"""``flashvid.compress``: validation, backend dispatch and the public entry point."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from . import pipeline, reference
from .backends import get_backend
from .config import FlashVIDConfig
from .types import CompressedVideo
from .validation import check_inputs, check_structure


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
    check_structure(tokens, cls_attn)
    backend = resolve_backend(cfg.backend, tokens)
    if backend == "reference":
        check_inputs(tokens, cls_attn)
        return reference.compress(tokens, cls_attn, cfg)
    # the fast path checks the values with its first host synchronisation
    return pipeline.run(tokens, cls_attn, cfg, get_backend(backend))[0]


def compress_batch(tokens: Sequence[torch.Tensor], cls_attn: Sequence[torch.Tensor],
                   config: FlashVIDConfig | None = None,
                   **overrides: Any) -> list[CompressedVideo]:
    """Compress several videos in one call; returns one :class:`CompressedVideo` per video.

    Videos may differ in frame count. Videos with the same tokens per frame, dim, dtype and
    device run as one flat frame list (segments never cross videos), so the kernels launch once
    for all of them. Each result equals ``compress`` on that video alone.

    Args:
        tokens: a sequence of [F_i, N_i, D_i] tensors.
        cls_attn: a sequence of [F_i, N_i] importance tensors, one per video.
    """
    cfg = config if config is not None else FlashVIDConfig()
    if not isinstance(cfg, FlashVIDConfig):
        raise TypeError(f"config must be a FlashVIDConfig or None, got {type(cfg).__name__}")
    if overrides:
        cfg = cfg.replace(**overrides)
    if isinstance(tokens, torch.Tensor) or isinstance(cls_attn, torch.Tensor):
        raise TypeError("compress_batch takes sequences (lists) of per-video tensors; use "
                        "compress for a single [F, N, D] video")
    tokens, cls_attn = list(tokens), list(cls_attn)
    if len(tokens) != len(cls_attn) or not tokens:
        raise ValueError(f"compress_batch needs one cls_attn per video and at least one video, "
                         f"got {len(tokens)} token tensors and {len(cls_attn)} cls_attn tensors")
    for i, (x, a) in enumerate(zip(tokens, cls_attn)):
        try:
            check_inputs(x, a)
        except (TypeError, ValueError) as err:
            raise type(err)(f"video {i}: {err}") from None
    results: list[CompressedVideo | None] = [None] * len(tokens)
    groups: dict[tuple, list[int]] = {}
    for i, x in enumerate(tokens):
        groups.setdefault((x.shape[1], x.shape[2], x.dtype, x.device), []).append(i)
    for members in groups.values():
        x0 = tokens[members[0]]
        backend = resolve_backend(cfg.backend, x0)
        if backend == "reference":
            for i in members:
                results[i] = reference.compress(tokens[i], cls_attn[i], cfg)
            continue
        x = torch.cat([tokens[i] for i in members]) if len(members) > 1 else x0
        a = torch.cat([cls_attn[i] for i in members]) if len(members) > 1 else cls_attn[members[0]]
        outs = pipeline.run(x, a, cfg, get_backend(backend), [tokens[i].shape[0] for i in members])
        for i, out in zip(members, outs):
            results[i] = out
    return results  # type: ignore[return-value]


def resolve_backend(name: str, tokens: torch.Tensor) -> str:
    """The backend that runs. "auto" is triton on CUDA tensors (float16/bfloat16/float32, up to
    4096 tokens per frame, Triton installed) and torch otherwise."""
    if name == "auto":
        if not tokens.is_cuda:
            return "torch"
        from .backends.triton import usable

        return "triton" if usable(tokens)[0] else "torch"
    if name == "triton":
        from .backends.triton import usable

        ok, why = usable(tokens)
        if not ok:
            raise ValueError(f"backend 'triton' cannot run here: {why}")
    return name


