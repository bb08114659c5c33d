"""``flashvid.compress`` and ``compress_batch``: validation, backend dispatch, entry points."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from . import pipeline, reference
from .backends import get_backend
from .config import FlashVIDConfig
from .types import CompressedBatch, CompressedVideo
from .validation import check_structure, check_values, value_bounds


def compress(tokens: torch.Tensor, cls_attn: torch.Tensor, config: FlashVIDConfig | None = None,
             *, num_tokens: int | None = None, **overrides: Any) -> CompressedVideo:
    """Compress one video's visual tokens with FlashVID.

    Args:
        tokens: [F, N, D] float16/bfloat16/float32/float64 features of F frames with N tokens
            each (LLM-space: after the projector / merger / pooling), on any device.
        cls_attn: [F, N] non-negative importance of each token (the mean attention it receives in
            the last vision layer, docs/algorithm.md §1), same device.
        config: a :class:`FlashVIDConfig` (default: the published LLaVA-OneVision setting).
        num_tokens: exactly this many output rows, F <= num_tokens <= F * N (exact-count mode,
            implied; without it ``config.exact_count`` gives ``config.output_length(F, N)``).
        **overrides: config fields to change, e.g. ``retention_ratio=0.15, backend="torch"``.

    Returns:
        A :class:`CompressedVideo`; its ``tokens`` have the input dtype and device. The inputs are
        never modified.
    """
    cfg = _config(config, overrides)
    check_structure(tokens, cls_attn)
    backend = resolve_backend(cfg.backend, tokens)
    exact = cfg.exact_count or num_tokens is not None
    if exact:
        cfg.exact_budget(tokens.shape[0], tokens.shape[1], num_tokens)  # checks num_tokens
    if backend == "reference":
        check_values(value_bounds(tokens, cls_attn).tolist())
        return reference.compress(tokens, cls_attn, cfg, num_tokens)
    if exact:
        return pipeline.run_exact(tokens, cls_attn, cfg, get_backend(backend),
                                  num_tokens=[num_tokens])[0][0]
    # the fast path checks the values with its first host synchronisation
    return pipeline.run(tokens, cls_attn, cfg, get_backend(backend))[0]


def compress_batch(tokens: Sequence[torch.Tensor], cls_attn: Sequence[torch.Tensor],
                   config: FlashVIDConfig | None = None, *,
                   num_tokens: int | Sequence[int] | None = None,
                   **overrides: Any) -> CompressedBatch:
    """Compress several videos in one call.

    Videos may differ in frame count. Videos with the same tokens per frame, dim, dtype and
    device (and, in exact-count mode, the same ADTS count) run as one flat frame list (segments
    never cross videos), so the kernels launch once for all of them. Each result equals
    ``compress`` on that video alone.

    Args:
        tokens: a sequence of [F_i, N_i, D_i] tensors.
        cls_attn: a sequence of [F_i, N_i] importance tensors, one per video.
        num_tokens: exact-count mode (implied): one row count per video, or one for all.

    Returns:
        A :class:`CompressedBatch`: the list of results, plus ``.tokens`` [sum V_i, D] (all rows,
        video after video; in exact mode the pipeline's own output) and ``.offsets`` [B + 1].
    """
    cfg = _config(config, overrides)
    if isinstance(tokens, torch.Tensor) or isinstance(cls_attn, torch.Tensor):
        raise TypeError("compress_batch takes sequences (lists) of per-video tensors; use "
                        "compress for a single [F, N, D] video")
    tokens, cls_attn = list(tokens), list(cls_attn)
    if len(tokens) != len(cls_attn) or not tokens:
        raise ValueError(f"compress_batch needs one cls_attn per video and at least one video, "
                         f"got {len(tokens)} token tensors and {len(cls_attn)} cls_attn tensors")
    counts = _per_video(num_tokens, len(tokens))
    exact = cfg.exact_count or num_tokens is not None
    for i, (x, a) in enumerate(zip(tokens, cls_attn)):
        try:
            check_structure(x, a)
            if exact:
                cfg.exact_budget(x.shape[0], x.shape[1], counts[i])
        except (TypeError, ValueError) as err:
            raise type(err)(f"video {i}: {err}") from None
    if not exact or tokens[0].device.type == "cpu":  # values: one synchronisation for all
        bounds = torch.stack([value_bounds(x, a).cpu() for x, a in zip(tokens, cls_attn)])
        for i, b in enumerate(bounds.tolist()):
            try:
                check_values(b)
            except ValueError as err:
                raise ValueError(f"video {i}: {err}") from None
    results: list[CompressedVideo | None] = [None] * len(tokens)
    groups: dict[tuple, list[int]] = {}
    for i, x in enumerate(tokens):
        key = (x.shape[1], x.shape[2], x.dtype, x.device)
        if exact:
            key += (cfg.exact_budget(x.shape[0], x.shape[1], counts[i]).adts,)
        groups.setdefault(key, []).append(i)
    flat = None
    for members in groups.values():
        x0 = tokens[members[0]]
        backend = resolve_backend(cfg.backend, x0)
        if backend == "reference":
            for i in members:
                results[i] = reference.compress(tokens[i], cls_attn[i], cfg, counts[i])
            continue
        x = torch.cat([tokens[i] for i in members]) if len(members) > 1 else x0
        a = torch.cat([cls_attn[i] for i in members]) if len(members) > 1 else cls_attn[members[0]]
        frames = [tokens[i].shape[0] for i in members]
        if exact:
            outs, rows = pipeline.run_exact(x, a, cfg, get_backend(backend), frames,
                                            [counts[i] for i in members])
            flat = rows if len(groups) == 1 else None
        else:
            outs = pipeline.run(x, a, cfg, get_backend(backend), frames)
        for i, out in zip(members, outs):
            results[i] = out
    return CompressedBatch(results, flat)  # type: ignore[arg-type]


def validate(tokens: torch.Tensor, cls_attn: torch.Tensor) -> None:
    """Raise TypeError/ValueError naming the problem unless ``tokens`` [F, N, D] and
    ``cls_attn`` [F, N] are finite floating tensors on one device with non-negative importance
    (the checks ``compress`` runs; synchronises with the device)."""
    check_structure(tokens, cls_attn)
    check_values(value_bounds(tokens, cls_attn).tolist())


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


def _config(config: FlashVIDConfig | None, overrides: dict[str, Any]) -> FlashVIDConfig:
    cfg = config if config is not None else FlashVIDConfig()
    if not isinstance(cfg, FlashVIDConfig):
        raise TypeError(f"config must be a FlashVIDConfig or None, got {type(cfg).__name__}")
    return cfg.replace(**overrides) if overrides else cfg


def _per_video(num_tokens: int | Sequence[int] | None, videos: int) -> list[int | None]:
    if num_tokens is None:
        return [None] * videos
    if isinstance(num_tokens, (list, tuple)):
        if len(num_tokens) != videos:
            raise ValueError(f"num_tokens has {len(num_tokens)} entries for {videos} videos; "
                             "expected one per video (or one int for all)")
        return list(num_tokens)
    return [num_tokens] * videos
