"""``flashvid.compress`` and ``compress_batch``: validation, backend dispatch, entry points."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from . import pipeline, reference
from .backends import get_backend
from .config import FlashVIDConfig, with_overrides
from .plan import exact_mode, resolve
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
    cfg = with_overrides(config, overrides)
    check_structure(tokens, cls_attn)
    frames, n, dim = _shape(tokens)
    backend = resolve_backend(cfg.backend, tokens)
    if backend == "reference":
        resolve(cfg, [frames], n, dim, tokens.dtype, tokens.device, [num_tokens])  # checks K
        check_values(value_bounds(tokens, cls_attn).tolist())
        return reference.compress(tokens, cls_attn, cfg, num_tokens)
    plan = resolve(cfg, [frames], n, dim, tokens.dtype, tokens.device, [num_tokens])
    # the pipeline checks the values with its first host synchronisation (or on the device)
    return pipeline.run(tokens, cls_attn, plan, get_backend(backend)).videos[0]


def compress_batch(tokens: Sequence[torch.Tensor], cls_attn: Sequence[torch.Tensor],
                   config: FlashVIDConfig | None = None, *,
                   num_tokens: int | Sequence[int] | None = None,
                   **overrides: Any) -> CompressedBatch:
    """Compress several videos in one call.

    Videos may differ in frame count and in tokens per frame; they must share the feature width
    D, the dtype and the device (one batch feeds one model). Videos with the same tokens per
    frame (and, in exact-count mode, the same ADTS count) run as one flat frame list (segments
    never cross videos), so the kernels launch once for all of them. Each result equals
    ``compress`` on that video alone.

    Args:
        tokens: a sequence of [F_i, N_i, D] tensors.
        cls_attn: a sequence of [F_i, N_i] importance tensors, one per video.
        num_tokens: exact-count mode (implied): one row count per video, or one for all.

    Returns:
        A :class:`CompressedBatch`: the list of results, plus ``.tokens`` [sum V_i, D] (all rows,
        video after video) and ``.offsets`` [B + 1].
    """
    cfg = with_overrides(config, overrides)
    if isinstance(tokens, torch.Tensor) or isinstance(cls_attn, torch.Tensor):
        raise TypeError("compress_batch takes sequences (lists) of per-video tensors; use "
                        "compress for a single [F, N, D] video")
    tokens, cls_attn = list(tokens), list(cls_attn)
    if len(tokens) != len(cls_attn) or not tokens:
        raise ValueError(f"compress_batch needs one cls_attn per video and at least one video, "
                         f"got {len(tokens)} token tensors and {len(cls_attn)} cls_attn tensors")
    counts = _per_video(num_tokens, len(tokens))
    exact = exact_mode(cfg, counts)
    shapes = []
    for i, (x, a) in enumerate(zip(tokens, cls_attn)):
        try:
            check_structure(x, a)
            shapes.append(_shape(x))
            if exact:
                cfg.exact_budget(shapes[-1][0], shapes[-1][1], counts[i])
        except (TypeError, ValueError) as err:
            raise type(err)(f"video {i}: {err}") from None
    _check_uniform(tokens, shapes)
    groups: dict[tuple, list[int]] = {}
    for i, (frames, n, _) in enumerate(shapes):
        key = (n, cfg.exact_budget(frames, n, counts[i]).adts if exact else None)
        groups.setdefault(key, []).append(i)
    results: list[CompressedVideo | None] = [None] * len(tokens)
    backend = resolve_backend(cfg.backend, tokens[0])
    flat = None
    for members in groups.values():
        if backend == "reference":
            for i in members:
                try:
                    check_values(value_bounds(tokens[i], cls_attn[i]).tolist())
                except ValueError as err:
                    raise ValueError(f"video {i}: {err}") from None
                results[i] = reference.compress(tokens[i], cls_attn[i], cfg, counts[i])
            continue
        x = torch.cat([tokens[i] for i in members]) if len(members) > 1 else tokens[members[0]]
        a = torch.cat([cls_attn[i] for i in members]) if len(members) > 1 else \
            cls_attn[members[0]]
        plan = resolve(cfg, [shapes[i][0] for i in members], shapes[members[0]][1],
                       shapes[members[0]][2], x.dtype, x.device, [counts[i] for i in members])
        try:
            out = pipeline.run(x, a, plan, get_backend(backend))
        except ValueError:
            _name_bad_video(tokens, cls_attn, members)
            raise
        flat = out.rows if len(groups) == 1 else None
        for i, video in zip(members, out.videos):
            results[i] = video
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


def _shape(tokens: torch.Tensor) -> tuple[int, int, int]:
    """(F, N, D) as plain ints. The budgets are float arithmetic on the shape rounded up
    (``math.ceil(N * r * e)``, as published), which symbolic shapes cannot trace; under
    torch.compile ``len(range(s))`` makes dynamo specialise the graph on each dimension (a guard
    per value: a new shape compiles a graph of its own) instead of tracing it symbolically."""
    return tuple(len(range(s)) for s in tokens.shape)  # type: ignore[return-value]


def _check_uniform(tokens: list[torch.Tensor], shapes: list[tuple[int, int, int]]) -> None:
    """One width, dtype and device for the whole batch (their rows form one flat tensor)."""
    for what, values in (("feature width D", [s[2] for s in shapes]),
                         ("dtype", [x.dtype for x in tokens]),
                         ("device", [x.device for x in tokens])):
        if any(v != values[0] for v in values):
            other = next(i for i, v in enumerate(values) if v != values[0])
            raise ValueError(f"compress_batch: every video must have the same {what}; video 0 "
                             f"has {values[0]} and video {other} has {values[other]} (compress "
                             "them in separate calls, or convert them first)")


def _name_bad_video(tokens: list[torch.Tensor], cls_attn: list[torch.Tensor],
                    members: list[int]) -> None:
    """Re-raise a value error of a flat batch naming the first video that causes it."""
    for i in members:
        try:
            check_values(value_bounds(tokens[i], cls_attn[i]).tolist())
        except ValueError as err:
            raise ValueError(f"video {i}: {err}") from None


def _per_video(num_tokens: int | Sequence[int] | None, videos: int) -> list[int | None]:
    if num_tokens is None:
        return [None] * videos
    if isinstance(num_tokens, (list, tuple)):
        if len(num_tokens) != videos:
            raise ValueError(f"num_tokens has {len(num_tokens)} entries for {videos} videos; "
                             "expected one per video (or one int for all)")
        return list(num_tokens)
    return [num_tokens] * videos
