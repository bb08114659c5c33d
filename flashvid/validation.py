"""Input checks shared by every backend: bad input raises, it never produces silent garbage."""

from __future__ import annotations

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# FlashVID computes norms, Gram matrices and squared distances in float32; features larger than
# this would overflow there. Importance is a mean attention (normally <= 1) scaled by 1e6.
MAX_ABS_TOKEN = 1e8
MAX_IMPORTANCE = 1e6


def check_inputs(tokens: object, cls_attn: object) -> None:
    """Raise TypeError/ValueError naming the problem unless ``tokens`` [F, N, D] and ``cls_attn``
    [F, N] are finite floating tensors on one device with non-negative importance."""
    check_structure(tokens, cls_attn)
    check_values(value_bounds(tokens, cls_attn).tolist())  # type: ignore[arg-type]


def check_structure(tokens: object, cls_attn: object) -> None:
    """The checks that need no device values: types, dtypes, ranks, shapes, devices."""
    for name, value in (("tokens", tokens), ("cls_attn", cls_attn)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
        if value.is_nested or value.layout != torch.strided:
            kind = "nested" if value.is_nested else f"{value.layout} (sparse)"
            raise TypeError(f"{name} must be a dense (strided) tensor, got a {kind} tensor; "
                            "convert it with .to_dense() or torch.nested.to_padded_tensor()")
        if value.device.type == "meta":
            raise TypeError(f"{name} is on the 'meta' device, which holds no values; expected "
                            "a tensor with data (cpu, cuda, ...)")
        if value.dtype not in FLOAT_DTYPES:
            raise TypeError(
                f"{name} must be a floating tensor (float16, bfloat16, float32 or float64), "
                f"got {value.dtype}"
            )
    assert isinstance(tokens, torch.Tensor) and isinstance(cls_attn, torch.Tensor)
    if tokens.dim() != 3:
        raise ValueError(
            f"tokens must have shape [frames, tokens_per_frame, dim] (3 dims), got "
            f"{tuple(tokens.shape)}"
        )
    if cls_attn.dim() != 2:
        raise ValueError(
            f"cls_attn must have shape [frames, tokens_per_frame] (2 dims), got "
            f"{tuple(cls_attn.shape)}"
        )
    frames, per_frame, dim = tokens.shape
    if frames == 0 or per_frame == 0 or dim == 0:
        raise ValueError(
            f"tokens must be non-empty in every dimension, got shape {tuple(tokens.shape)} "
            "(frames, tokens_per_frame, dim)"
        )
    if tuple(cls_attn.shape) != (frames, per_frame):
        raise ValueError(
            f"cls_attn shape {tuple(cls_attn.shape)} does not match tokens: expected "
            f"({frames}, {per_frame}) = (frames, tokens_per_frame) of tokens {tuple(tokens.shape)}"
        )
    if tokens.device != cls_attn.device:
        raise ValueError(
            f"tokens and cls_attn must be on the same device, got {tokens.device} and "
            f"{cls_attn.device}"
        )


def value_bounds(tokens: torch.Tensor, cls_attn: torch.Tensor) -> torch.Tensor:
    """[4] float64 (min, max) of tokens and of cls_attn, on their device (no synchronisation).

    One pass per tensor: aminmax propagates NaN, and +-inf shows up as a bound. The fast
    pipeline fetches these together with its first data-dependent values.
    """
    lo, hi = torch.aminmax(tokens)
    a_lo, a_hi = torch.aminmax(cls_attn)
    return torch.stack([lo.double(), hi.double(), a_lo.double(), a_hi.double()])


def check_values(bounds: list[float]) -> None:
    """Raise unless the fetched ``value_bounds`` describe finite, sane inputs."""
    lo, hi, a_lo, a_hi = bounds
    if not all(map(_finite, (lo, hi))):
        raise ValueError("tokens contain NaN or Inf; expected finite features")
    if not all(map(_finite, (a_lo, a_hi))):
        raise ValueError("cls_attn contains NaN or Inf; expected finite importance scores")
    if a_lo < 0:
        raise ValueError(
            f"cls_attn has negative values (min {a_lo:.3g}); expected non-negative importance "
            "(the mean attention each token receives)"
        )
    if a_hi > MAX_IMPORTANCE:
        raise ValueError(
            f"cls_attn values reach {a_hi:.3g}; expected at most {MAX_IMPORTANCE:g} (importance is "
            "a mean attention, normally <= 1; rescale it)"
        )
    peak = max(abs(lo), abs(hi))
    if peak > MAX_ABS_TOKEN:
        raise ValueError(
            f"tokens reach magnitude {peak:.3g}; expected |x| <= {MAX_ABS_TOKEN:g} so that "
            "float32 norms and distances cannot overflow (rescale the features)"
        )


def check_representable(values: torch.Tensor, dtype: torch.dtype, aggregation: str) -> None:
    """Raise ValueError if merged ``values`` (work dtype) overflow ``dtype`` (a sync on CUDA).

    Only float16 can overflow here (its largest value is 65504; inputs are checked to be finite
    and tree means stay within the inputs' range), and only with ``aggregation="official"``,
    whose root value is a subtree sum over 1 + the direct children, so it grows with the length
    of a chain of merges.
    """
    if dtype != torch.float16 or values.numel() == 0:
        return
    if bool(torch.isinf(values.to(dtype)).any()):
        raise overflow_error(float(values.abs().amax()), aggregation)


def overflow_error(peak: float, aggregation: str) -> ValueError:
    """The error for merged tokens that float16 cannot represent."""
    return ValueError(
        f"merged tokens reach magnitude {peak:.4g}, beyond float16's largest value 65504: "
        f"aggregation={aggregation!r} sums each tree over 1 + its direct children, so long "
        "chains of merged tokens grow; pass aggregation='mean' (the true tree mean), or the "
        "tokens in bfloat16/float32, or scale the features down")


def _finite(v: float) -> bool:
    return v == v and v not in (float("inf"), float("-inf"))
