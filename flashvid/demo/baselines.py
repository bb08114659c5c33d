"""Token-reduction strategies compared with FlashVID on the same input.

Every strategy gets the same per-frame budget B = min(N, ceil(N * retention_ratio * expansion))
(§4, expansion 1.25 by default) and returns a :class:`flashvid.CompressedVideo`, so that the
figures and the fidelity metric treat them alike. Seven of them are FlashVID configurations; the
uniform pooling baseline is computed here.

=============  ======================================================  =========================
name           definition                                              output rows V
=============  ======================================================  =========================
flashvid       the published pipeline (ADTS alpha = 0.7, TSTM,          F*B <= V <= F*B + F
               DPC-kNN), i.e. the base configuration unchanged
flashvid-ttm   FlashVID with TTM in place of TSTM                       F*B <= V <= F*B + F
               (``temporal_merge="ttm"``)
uniform        uniform spatial pooling: each frame's token grid is      V = F*B
               split into B near-equal rectangular cells, each cell
               averaged (see :func:`uniform_pool`)
ats            attention top-k: ``selection="attention", alpha=1``      V = F*B
               (the B most important tokens per frame, no merging)
dts            diversity only: ``selection="diversity", alpha=1``       V = F*B
               (max-min cosine diversity, no importance, no merging)
adts           ADTS only: ``alpha=1`` with the base ADTS selection      V = F*B
               ("adts", or "adts_v1" if the base uses it), no merging
tstm           TSTM only: ``alpha=0``: no ADTS, the whole budget goes   F*B <= V <= F*B + F
               through the temporal trees and the DPC-kNN spatial
               merge
ttm            TTM only: ``alpha=0, temporal_merge="ttm"``: as          F*B <= V <= F*B + F
               ``tstm``, but a token may only merge into the token at
               the same position in the previous frame
=============  ======================================================  =========================

The merging strategies may overshoot F*B by the ceil of the per-frame cluster counts (at most one
row per frame, §8). The pruning strategies (ats, dts, adts) drop the other tokens: their
``source`` is -1 there (the metric then uses the most similar kept token of the same frame, see
:mod:`flashvid.demo.metrics`). ``adts`` may repeat a position (published quirk Q2) unless the
base configuration has ``dedupe=True``; repeats still count as rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..compress import compress
from ..config import Budget, FlashVIDConfig
from ..synthetic import grid_shape
from ..types import KIND_CLUSTER, CompressedVideo


@dataclass(frozen=True)
class Strategy:
    """A named token-reduction strategy.

    Attributes:
        name: short name used on the command line and in tables.
        label: one-line description for tables and figure legends.
        overrides: FlashVIDConfig fields set on top of the base configuration, or None for a
            strategy computed outside FlashVID (``uniform``).
        exact_count: True when the strategy returns exactly F*B rows; False when it may return up
            to F more (the ceil overshoot of the spatial merge).
        stages: names of its (kept as-is, merge over time, spatial merge) stages, "" where it
            has none; the figures label their rows with them.
        pruning: True when the tokens it does not keep are dropped.
    """

    name: str
    label: str
    overrides: Callable[[FlashVIDConfig], dict[str, Any]] | None
    exact_count: bool
    stages: tuple[str, str, str] = ("", "", "")
    pruning: bool = False


def _adts_selection(base: FlashVIDConfig) -> str:
    return base.selection if base.selection in ("adts", "adts_v1") else "adts"


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (
    Strategy("flashvid", "FlashVID (ADTS + TSTM + DPC-kNN)", lambda b: {}, False,
             ("ADTS", "TSTM", "DPC-kNN")),
    Strategy("flashvid-ttm", "FlashVID with TTM instead of TSTM",
             lambda b: {"temporal_merge": "ttm"}, False, ("ADTS", "TTM", "DPC-kNN")),
    Strategy("uniform", "uniform spatial pooling", None, True, ("", "", "uniform pooling")),
    Strategy("ats", "attention top-k (ATS)",
             lambda b: {"selection": "attention", "alpha": 1.0}, True,
             ("attention top-k", "", ""), True),
    Strategy("dts", "diversity only (DTS)",
             lambda b: {"selection": "diversity", "alpha": 1.0}, True,
             ("diversity (DTS)", "", ""), True),
    Strategy("adts", "ADTS only (no merging)",
             lambda b: {"selection": _adts_selection(b), "alpha": 1.0}, True,
             ("ADTS", "", ""), True),
    Strategy("tstm", "TSTM only (+ DPC-kNN, no ADTS)", lambda b: {"alpha": 0.0}, False,
             ("", "TSTM", "DPC-kNN")),
    Strategy("ttm", "TTM only (+ DPC-kNN, no ADTS)",
             lambda b: {"alpha": 0.0, "temporal_merge": "ttm"}, False, ("", "TTM", "DPC-kNN")),
)}
STRATEGY_NAMES = tuple(STRATEGIES)


def strategy(name: str) -> Strategy:
    """The strategy called ``name``; ValueError listing the choices otherwise."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; expected one of {list(STRATEGY_NAMES)}")
    return STRATEGIES[name]


def strategy_config(name: str, base: FlashVIDConfig | None = None) -> FlashVIDConfig:
    """The FlashVIDConfig a strategy runs with (the base with the strategy's overrides).

    ``uniform`` returns the base with ``alpha=0`` (all of the budget is pooled); only its
    ``retention_ratio`` and ``expansion`` matter there.
    """
    base = base if base is not None else FlashVIDConfig()
    s = strategy(name)
    if s.overrides is None:
        return base.replace(alpha=0.0)
    return base.replace(**s.overrides(base))


def count_bounds(name: str, frames: int, tokens_per_frame: int,
                 base: FlashVIDConfig | None = None) -> tuple[int, int]:
    """(low, high): the number of output rows the strategy must return for F frames of N
    tokens: exactly F*B for ``exact_count`` strategies, else between F*B and F*B + F."""
    total = strategy_config(name, base).budget(tokens_per_frame).total
    low = frames * total
    return low, low if strategy(name).exact_count else low + frames


def run_strategy(name: str, tokens: torch.Tensor, cls_attn: torch.Tensor,
                 base: FlashVIDConfig | None = None,
                 grid: tuple[int, int] | None = None) -> CompressedVideo:
    """Compress one video with a strategy.

    Args:
        name: one of ``STRATEGY_NAMES``.
        tokens: [F, N, D] floating features; cls_attn: [F, N] non-negative importance.
        base: the configuration the strategy starts from (default: the published setting).
        grid: (rows, cols) of each frame's token grid, rows * cols = N, used by ``uniform``
            (default: the squarest factorisation of N).
    """
    cfg = strategy_config(name, base)
    if strategy(name).overrides is None:
        return uniform_pool(tokens, cfg, grid)
    return compress(tokens, cls_attn, cfg)


def pooling_cells(rows: int, cols: int, cells: int) -> list[tuple[int, int, int, int]]:
    """Split a rows x cols grid into exactly ``cells`` rectangles (r0, r1, c0, c1), half-open,
    in raster order of their centres.

    The grid is cut into g horizontal bands of near-equal height, g as close to
    sqrt(cells * rows / cols) as the grid allows, and band i into near-equal columns so that the
    band counts differ by at most one and sum to ``cells``. Cells are thus near-square and their
    sizes differ by at most a row or a column.
    """
    if not 1 <= cells <= rows * cols:
        raise ValueError(f"cells must be in [1, {rows * cols}] for a {rows}x{cols} grid, "
                         f"got {cells}")
    ideal = math.sqrt(cells * rows / cols)
    candidates = sorted(range(1, min(rows, cells) + 1), key=lambda g: (abs(g - ideal), g))
    bands = next(g for g in candidates if math.ceil(cells / g) <= cols)
    out = []
    for i in range(bands):
        r0, r1 = (i * rows) // bands, ((i + 1) * rows) // bands
        across = cells // bands + (1 if i < cells % bands else 0)
        for j in range(across):
            out.append((r0, r1, (j * cols) // across, ((j + 1) * cols) // across))
    return out


def uniform_pool(tokens: torch.Tensor, config: FlashVIDConfig | None = None,
                 grid: tuple[int, int] | None = None) -> CompressedVideo:
    """Uniform spatial pooling to B tokens per frame (the ``uniform`` baseline).

    Each frame's token grid is split into B cells by :func:`pooling_cells`; a cell's output row is
    the plain mean of its tokens (accumulated in float32, returned in the input dtype), placed at
    the cell's centre token (row (r0 + r1 - 1) // 2, column (c0 + c1 - 1) // 2).

    Args:
        tokens: [F, N, D] floating features.
        config: supplies retention_ratio and expansion (B = config.budget(N).total).
        grid: (rows, cols) with rows * cols = N (default: the squarest factorisation of N).

    Returns:
        A CompressedVideo with F*B rows, all of kind KIND_CLUSTER, ``source`` [F, N] the cell of
        each token, ``parents`` all -1 and one segment.
    """
    cfg = config if config is not None else FlashVIDConfig(alpha=0.0)
    if not isinstance(tokens, torch.Tensor) or not tokens.is_floating_point():
        raise TypeError(f"tokens must be a floating torch.Tensor [frames, tokens_per_frame, dim],"
                        f" got {getattr(tokens, 'dtype', type(tokens).__name__)}")
    if tokens.dim() != 3 or 0 in tokens.shape:
        raise ValueError(f"tokens must have shape [frames, tokens_per_frame, dim] with no empty "
                         f"dimension, got {tuple(tokens.shape)}")
    frames, n, dim = tokens.shape
    rows, cols = grid if grid is not None else grid_shape(n)
    if rows * cols != n:
        raise ValueError(f"grid {rows}x{cols} has {rows * cols} cells but frames have {n} tokens; "
                         "expected rows * cols = tokens per frame")
    total = cfg.budget(n).total
    cells = pooling_cells(rows, cols, total)
    device = tokens.device
    cell_of = torch.empty(rows, cols, dtype=torch.long)
    centres = []
    for c, (r0, r1, c0, c1) in enumerate(cells):
        cell_of[r0:r1, c0:c1] = c
        centres.append(((r0 + r1 - 1) // 2) * cols + (c0 + c1 - 1) // 2)
    cell_of = cell_of.view(-1).to(device)
    sums = torch.zeros(frames, total, dim, dtype=torch.float32, device=device)
    sums.index_add_(1, cell_of, tokens.float())
    sizes = torch.bincount(cell_of, minlength=total).to(torch.float32)
    pooled = (sums / sizes[None, :, None]).to(tokens.dtype).reshape(frames * total, dim)
    offsets = torch.arange(frames, device=device)[:, None]
    centre_pos = torch.tensor(centres, dtype=torch.long, device=device)
    return CompressedVideo(
        tokens=pooled,
        indices=(offsets * n + centre_pos[None, :]).reshape(-1),
        kinds=torch.full((frames * total,), KIND_CLUSTER, dtype=torch.int8, device=device),
        source=offsets * total + cell_of[None, :],
        segment_starts=torch.arange(frames, device=device) == 0,
        parents=torch.full((frames, n), -1, dtype=torch.long, device=device),
        budget=Budget(total, 0, total),
        config=cfg,
    )
