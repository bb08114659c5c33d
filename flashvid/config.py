"""FlashVID configuration: one frozen, validated dataclass plus the published per-model presets."""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

SELECTIONS = ("adts", "adts_v1", "attention", "diversity")
AGGREGATIONS = ("official", "mean")
TEMPORAL_MERGES = ("tstm", "ttm")
BACKENDS = ("auto", "reference", "torch", "triton")
PRESETS = ("llava_onevision", "llava_video", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe", "qwen3_5",
           "qwen3_5_moe")
# dtype names accepted by the command line and the benchmark
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
          "float64": torch.float64}


class Budget(NamedTuple):
    """Per-frame token budget of the vision side (§4).

    ``total`` = min(N, ceil(N * retention_ratio * expansion)), ``adts`` = ceil(total * alpha),
    ``merge`` = total - adts (target merged tokens per frame).
    """

    total: int
    adts: int
    merge: int


class ExactBudget(NamedTuple):
    """The exact-count split of K output rows over F frames (``FlashVIDConfig.exact_budget``).

    ``frame_budgets[t]`` = floor((t+1) K / F) - floor(t K / F) rows for frame t (they differ by at
    most one and sum to K); every frame keeps ``adts`` ADTS tokens; ``merge[t]`` =
    frame_budgets[t] - adts is frame t's share of its segment's merge budget.
    """

    frame_budgets: list[int]
    adts: int
    merge: list[int]


@dataclass(frozen=True)
class FlashVIDConfig:
    """All FlashVID hyper-parameters. Defaults are the published LLaVA-OneVision setting.

    Fields:
        retention_ratio: layer-averaged visual-token retention r in (0, 1]. The vision side keeps
            about ``expansion * r`` of the tokens (§5.3).
        expansion: vision-side budget multiplier (> 0).
        alpha: fraction of the per-frame budget given to ADTS, in [0, 1].
        selection: "adts" (published attn_div_v2: attention x event relevance, no exclusion),
            "adts_v1" (attn_div: attention only, excludes picked tokens), "attention" (top-k of
            the importance), "diversity" (plain max-min diversity).
        temporal_threshold: TSTM edge threshold in [-1, 1]; a token merges into its most similar
            eligible token of the previous frame when the cosine similarity is strictly greater.
            1.0 disables temporal merging (every remaining token is its own tree).
        temporal_merge: "tstm" (published: a token may merge into ANY eligible token of the
            previous frame, so trees follow motion) or "ttm" (baseline: only into the token at the
            same position, as temporal token merging does).
        segment: run DySeg (dynamic segmentation); False treats the video as one segment.
        segment_threshold: DySeg cut threshold in [-1, 1] (cut where frame similarity < it).
        min_segments: minimum number of segments (>= 1), reached by complementary cuts.
        complementary_segments: add the cuts needed to reach ``min_segments``.
        spatial_merge: run the DPC-kNN spatial merge that enforces the budget; False keeps every
            tree root (more tokens than the budget).
        dpc_knn: the largest k of the DPC-kNN density (>= 1); published 7.
        aggregation: "official" (published arithmetic: subtree sum / (1 + direct children)) or
            "mean" (true tree mean).
        dedupe: True removes the published duplicate positions (Q2/Q3): "adts" excludes picked
            tokens, and single-frame segments cluster only the tokens ADTS did not keep.
        pruning_layer: decoder layer K of the inner-LLM stage (>= 1).
        llm_retention_ratio: fraction of visual tokens kept at layer K, in (0, 1].
        backend: "auto" (triton on CUDA tensors, torch otherwise), "torch", "triton", "reference".
        exact_count: return exactly ``output_length(F, N)`` rows (or the ``num_tokens`` given to
            ``compress``), with no data-dependent shape and no host synchronisation (see
            docs/algorithm.md, "Exact-count mode"). Needs ``spatial_merge=True``.
    """

    retention_ratio: float = 0.10
    expansion: float = 1.25
    alpha: float = 0.7
    selection: str = "adts"
    temporal_threshold: float = 0.8
    temporal_merge: str = "tstm"
    segment: bool = True
    segment_threshold: float = 0.9
    min_segments: int = 8
    complementary_segments: bool = True
    spatial_merge: bool = True
    dpc_knn: int = 7
    aggregation: str = "official"
    dedupe: bool = False
    pruning_layer: int = 20
    llm_retention_ratio: float = 0.3
    backend: str = "auto"
    exact_count: bool = False

    def __post_init__(self) -> None:
        # numpy scalars (np.float32, np.int64, np.bool_) become Python numbers
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _plain(getattr(self, f.name)))
        _check_real("retention_ratio", self.retention_ratio, 0.0, 1.0, low_open=True)
        _check_real("expansion", self.expansion, 0.0, math.inf, low_open=True, high_open=True)
        _check_real("alpha", self.alpha, 0.0, 1.0)
        _check_real("temporal_threshold", self.temporal_threshold, -1.0, 1.0)
        _check_real("segment_threshold", self.segment_threshold, -1.0, 1.0)
        _check_real("llm_retention_ratio", self.llm_retention_ratio, 0.0, 1.0, low_open=True)
        _check_int("min_segments", self.min_segments, 1)
        _check_int("dpc_knn", self.dpc_knn, 1)
        _check_int("pruning_layer", self.pruning_layer, 1)
        for name in ("segment", "complementary_segments", "spatial_merge", "dedupe",
                     "exact_count"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(
                    f"FlashVIDConfig.{name} must be a bool, got {getattr(self, name)!r}")
        _check_choice("selection", self.selection, SELECTIONS)
        _check_choice("aggregation", self.aggregation, AGGREGATIONS)
        _check_choice("temporal_merge", self.temporal_merge, TEMPORAL_MERGES)
        _check_choice("backend", self.backend, BACKENDS)
        if not self.retention_ratio * self.expansion > 0.0:
            raise ValueError(
                f"FlashVIDConfig: retention_ratio * expansion = {self.retention_ratio!r} * "
                f"{self.expansion!r} rounds to 0, so no token would be kept; expected a product "
                "above 0 (at least one token per frame)")
        if self.exact_count and not self.spatial_merge:
            raise ValueError("FlashVIDConfig: exact_count=True needs spatial_merge=True (the "
                             "spatial merge is what brings every segment to its exact count)")

    # ------------------------------------------------------------------ derived quantities
    def budget(self, tokens_per_frame: int) -> Budget:
        """Per-frame budget for frames of ``tokens_per_frame`` tokens (§4).

        Rounding follows the published code: Python floats, ``ceil(N * r * expansion)`` evaluated
        left to right, then ``ceil(total * alpha)``. The total is clamped to N (the published code
        fails when ``r * expansion > 1``).
        """
        n = int(tokens_per_frame)
        if n < 1:
            raise ValueError(f"tokens_per_frame must be >= 1, got {tokens_per_frame}")
        if self.retention_ratio * self.expansion >= 1.0:  # every token (n * r * e may overflow)
            total = n
        else:
            total = min(n, math.ceil(n * self.retention_ratio * self.expansion))
        adts = math.ceil(total * self.alpha)
        return Budget(total, adts, total - adts)

    def output_length(self, frames: int, tokens_per_frame: int) -> int:
        """Rows of an exact-count compression of a [frames, tokens_per_frame, D] video: F * B,
        plain arithmetic on the shape (the default mode returns between F * B and F * B + F
        rows, fewer with ``dedupe``)."""
        frames = _positive("frames", frames)
        return frames * self.budget(tokens_per_frame).total

    def exact_budget(self, frames: int, tokens_per_frame: int,
                     num_tokens: int | None = None) -> ExactBudget:
        """How exact-count mode splits K = ``num_tokens`` rows (default ``output_length``) over
        frames and between ADTS and merging (docs/algorithm.md, "Exact-count mode").

        Frame t gets B_t = floor((t+1) K / F) - floor(t K / F) rows. Every frame keeps
        a = ceil(b * alpha) ADTS tokens, b = floor(K / F) (the published split when K = F * B);
        if that leaves some frame no merge budget while others have one, a = b - 1, so that every
        frame can represent its merged tokens. The rest, B_t - a, is merged.
        """
        frames = _positive("frames", frames)
        n = _positive("tokens_per_frame", tokens_per_frame)
        k = self.output_length(frames, n) if num_tokens is None else num_tokens
        if isinstance(k, bool) or not isinstance(k, numbers.Integral):
            raise TypeError(f"num_tokens must be an int, got {k!r}")
        k = int(k)
        if not frames <= k <= frames * n:
            raise ValueError(f"num_tokens must be in [{frames}, {frames * n}] (at least one token "
                             f"per frame, at most every token) for {frames} frames of {n} "
                             f"tokens, got {k}")
        budgets = [(t + 1) * k // frames - t * k // frames for t in range(frames)]
        base = k // frames
        adts = math.ceil(base * self.alpha)
        if adts == base and k > frames * base:
            adts = base - 1
        return ExactBudget(budgets, adts, [b - adts for b in budgets])

    def replace(self, **changes: Any) -> FlashVIDConfig:
        """A copy with some fields changed (validated). Unknown names raise TypeError."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise TypeError(
                f"unknown FlashVIDConfig field(s) {unknown}; expected some of "
                f"{[f.name for f in dataclasses.fields(self)]}"
            )
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ presets (§12)
    @classmethod
    def llava_onevision(cls, **overrides: Any) -> FlashVIDConfig:
        """LLaVA-OneVision (llava_ov.sh): attn_div_v2, 8 minimum segments, K=20, r_llm=0.3."""
        return cls().replace(**overrides)

    @classmethod
    def llava_video(cls, **overrides: Any) -> FlashVIDConfig:
        """LLaVA-Video (llava_vid.sh): OneVision's FlashVID settings (64 frames of 169 tokens)."""
        return cls().replace(**overrides)

    @classmethod
    def qwen2_5_vl(cls, **overrides: Any) -> FlashVIDConfig:
        """Qwen2.5-VL (qwen2_5_vl.sh): attn_div (selection "adts_v1"), 4 minimum segments."""
        return cls(selection="adts_v1", min_segments=4).replace(**overrides)

    @classmethod
    def qwen3_vl(cls, **overrides: Any) -> FlashVIDConfig:
        """Qwen3-VL (qwen3_vl.sh): as Qwen2.5-VL, with pruning layer 28 and r_llm = 0.1."""
        return cls(selection="adts_v1", min_segments=4, pruning_layer=28,
                   llm_retention_ratio=0.1).replace(**overrides)

    @classmethod
    def qwen3_vl_moe(cls, **overrides: Any) -> FlashVIDConfig:
        """Qwen3-VL-MoE: the Qwen3-VL settings (no published run of its own; same vision tower
        and prompt format)."""
        return cls.qwen3_vl(**overrides)

    @classmethod
    def qwen3_5(cls, **overrides: Any) -> FlashVIDConfig:
        """Qwen3.5: the Qwen3-VL settings (no published run of its own; a Qwen3-VL vision tower
        and prompt format). K = 28 ranks with layer 27, a full-attention layer in every released
        Qwen3.5 layout; models with fewer than 29 layers need a smaller ``pruning_layer``."""
        return cls.qwen3_vl(**overrides)

    @classmethod
    def qwen3_5_moe(cls, **overrides: Any) -> FlashVIDConfig:
        """Qwen3.5-MoE: the Qwen3-VL settings, as :meth:`qwen3_5`."""
        return cls.qwen3_vl(**overrides)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> FlashVIDConfig:
        """A preset by name: one of ``PRESETS`` ("-" and "." may replace "_"; "llava_ov" is
        llava_onevision)."""
        return getattr(cls, preset_name(name))(**overrides)


def with_overrides(config: FlashVIDConfig | None, overrides: dict[str, Any],
                   default: FlashVIDConfig | None = None) -> FlashVIDConfig:
    """``config`` (``default``, or the published LLaVA-OneVision setting, when None) with the
    field ``overrides`` applied; a TypeError for anything but a FlashVIDConfig or None."""
    if config is None:
        config = default if default is not None else FlashVIDConfig()
    elif not isinstance(config, FlashVIDConfig):
        raise TypeError(f"config must be a FlashVIDConfig or None, got {type(config).__name__}")
    return config.replace(**overrides) if overrides else config


def preset_name(name: str) -> str:
    """The canonical preset name of ``name`` (ValueError for an unknown one)."""
    key = str(name).replace("-", "_").replace(".", "_").lower()
    key = "llava_onevision" if key == "llava_ov" else key
    if key not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {list(PRESETS)}")
    return key


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _plain(value: Any) -> Any:
    """A numpy (or other numbers.*) scalar as the Python bool/int/float it stands for."""
    if isinstance(value, (bool, str)) or value is None:
        return value
    if isinstance(value, np.bool_):  # not a numbers.Number
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return value


def _check_real(name: str, value: Any, low: float, high: float, *, low_open: bool = False,
                high_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"FlashVIDConfig.{name} must be a real number, got {value!r}")
    if math.isnan(value):
        raise ValueError(f"FlashVIDConfig.{name} must not be NaN")
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        lo, hi = "(" if low_open else "[", ")" if high_open else "]"
        raise ValueError(f"FlashVIDConfig.{name} must be in {lo}{low}, {high}{hi}, got {value!r}")


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"FlashVIDConfig.{name} must be an int, got {value!r}")
    if value < low:
        raise ValueError(f"FlashVIDConfig.{name} must be >= {low}, got {value}")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"FlashVIDConfig.{name} must be one of {list(choices)}, got {value!r}")
