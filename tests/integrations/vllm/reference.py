"""References the vLLM plugin tests compare with, written without the plugin's code.

* :func:`mrope_positions`: M-RoPE positions of an uncompressed prompt, from the rules of the
  Qwen2.5-VL / Qwen3-VL papers and reference code: text advances by one on all three axes; a
  video grid is (t·tokens_per_second·seconds_per_grid, h, w) after the current position (Qwen3-VL:
  one single-frame grid per temporal patch, with timestamps as text between them); the next
  text starts after the largest position used.
* :func:`hf_positions`: the same from transformers' ``get_rope_index`` (a different code base
  from vLLM's). transformers 5.x advances the text after a vision run by max(h, w) only, which
  equals the rule above for Qwen3-VL's single-frame grids but not for Qwen2.5-VL videos; vLLM
  (and transformers 4.x) use the rule above.
* :func:`window_index`: Qwen2.5-VL's window order of merge units, from its definition.
* :func:`explicit_importance`: the importance of §3 with the full softmax matrices.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import torch


@functools.lru_cache(maxsize=4)
def _hf_model(checkpoint: str):
    from transformers import AutoConfig, Qwen2_5_VLModel, Qwen3VLModel

    config = AutoConfig.from_pretrained(checkpoint)
    cls = Qwen2_5_VLModel if config.model_type == "qwen2_5_vl" else Qwen3VLModel
    return cls(config).eval()


def hf_positions(checkpoint: Path, prompt_ids: list[int], grids: list[tuple[int, int, int]],
                 seconds_per_grid: list[float] | None = None) -> torch.Tensor:
    """[3, L] int64 positions of ``prompt_ids`` (uncompressed) with videos of ``grids``
    ((t, h, w) in patches) by transformers' ``get_rope_index``."""
    model = _hf_model(str(checkpoint))
    ids = torch.tensor([prompt_ids])
    token_types = (ids == model.config.video_token_id).int() * 2
    kwargs = {"video_grid_thw": torch.tensor(grids)}
    if seconds_per_grid is not None:
        kwargs["second_per_grid_ts"] = torch.tensor(seconds_per_grid)
    positions, _ = model.get_rope_index(ids, token_types, **kwargs)
    return positions[:, 0]


def mrope_positions(family: str, prompt_ids: list[int], grids: list[tuple[int, int, int]],
                    video_token: int, t_factor: float = 2.0) -> torch.Tensor:
    """[3, L] int64 positions of an uncompressed prompt; ``grids`` (t, rows, cols) in merged
    tokens per video, in prompt order; ``t_factor`` = tokens_per_second * seconds_per_grid
    (Qwen2.5-VL only)."""
    runs = []  # (rows, cols, t_value) per contiguous run of video tokens
    for t, rows, cols in grids:
        if family == "qwen2_5_vl":
            runs.append((t, rows, cols))
        else:
            runs += [(1, rows, cols)] * t
    positions, current, i, run = [], 0, 0, 0
    while i < len(prompt_ids):
        if prompt_ids[i] != video_token:
            positions.append((current, current, current))
            current += 1
            i += 1
            continue
        t, rows, cols = runs[run]
        grid = [(int(f * t_factor) if family == "qwen2_5_vl" else 0, r, c)
                for f in range(t) for r in range(rows) for c in range(cols)]
        positions += [(current + a, current + b, current + c) for a, b, c in grid]
        current = max(max(p) for p in positions[-len(grid):]) + 1
        i += len(grid)
        run += 1
    assert run == len(runs), "fewer video runs in the prompt than videos"
    return torch.tensor(positions).T


def window_index(frames: int, rows: int, cols: int, window: int) -> torch.Tensor:
    """Raster index (t*rows*cols + r*cols + c) of each merge unit in Qwen2.5-VL's window order:
    per frame, windows of ``window`` x ``window`` units in row-major order, units row-major
    inside a window (windows at the right/bottom edges are cut short)."""
    order = []
    for t in range(frames):
        for wr in range(math.ceil(rows / window)):
            for wc in range(math.ceil(cols / window)):
                for r in range(wr * window, min(rows, (wr + 1) * window)):
                    for c in range(wc * window, min(cols, (wc + 1) * window)):
                        order.append(t * rows * cols + r * cols + c)
    return torch.tensor(order)


def explicit_importance(q: torch.Tensor, k: torch.Tensor, frames: int, rows: int, cols: int,
                        merge: int, window: int | None) -> torch.Tensor:
    """[frames, rows*cols] importance of one video from its patches' q, k [S, H, d] (in the
    tower's order): per frame, softmax(q kᵀ / sqrt(d)) over the frame's patches, mean over heads
    and queries, then the mean of each merge unit; window order undone when ``window``."""
    units = rows * cols
    patches = units * merge * merge
    scores = []
    for f in range(frames):
        qf = q[f * patches:(f + 1) * patches].double().transpose(0, 1)  # [H, n, d]
        kf = k[f * patches:(f + 1) * patches].double().transpose(0, 1)
        attn = torch.softmax(qf @ kf.transpose(1, 2) / math.sqrt(q.shape[-1]), dim=-1)
        column = attn.mean(dim=(0, 1))  # [n]
        scores.append(column.view(units, merge * merge).mean(dim=1))
    tower_order = torch.cat(scores)  # [frames * units]
    if window is None:
        return tower_order.view(frames, units).float()
    raster = torch.empty_like(tower_order)
    raster[window_index(frames, rows, cols, window)] = tower_order
    return raster.view(frames, units).float()
