"""A seeded synthetic clip of token features: the built-in default input of ``flashvid compress``.

Each scene is a smooth random feature field (box-blurred Gaussian noise over a grid larger than
the frame) plus a scene offset. Frames crop that field through a panning camera, a bright object
moves across the grid, the whole clip drifts slowly, and every token gets a little noise. Scene
cuts switch to a fresh field. Importance (``cls_attn``) is a per-frame softmax that favours the
object and high-contrast tokens, like a vision tower's mean attention.
"""

from __future__ import annotations

import math

import torch


def grid_shape(tokens_per_frame: int) -> tuple[int, int]:
    """(rows, cols) of a frame: the squarest factorisation of N."""
    rows = int(math.isqrt(tokens_per_frame))
    while tokens_per_frame % rows:
        rows -= 1
    return rows, tokens_per_frame // rows


def synthetic_clip(frames: int = 32, tokens_per_frame: int = 196, dim: int = 3584, *,
                   scene_cuts: int = 2, seed: int = 0, noise: float = 0.05,
                   dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (tokens [F, N, D], cls_attn [F, N]) of a clip with drift, motion and scene cuts."""
    if frames < 1 or tokens_per_frame < 1 or dim < 1:
        raise ValueError(f"frames, tokens_per_frame and dim must be >= 1, got "
                         f"{frames}, {tokens_per_frame}, {dim}")
    gen = torch.Generator().manual_seed(seed)
    rows, cols = grid_shape(tokens_per_frame)
    pan = max(4, frames // 2)  # field margin the camera can pan over
    cut_at = sorted(torch.randperm(max(frames - 1, 1), generator=gen)[:scene_cuts].add(1).tolist())
    scene_of = [sum(t >= c for c in cut_at) for t in range(frames)]
    fields = [_smooth_field(rows + pan, cols + pan, dim, gen) for _ in range(len(cut_at) + 1)]
    offsets = torch.randn(len(fields), dim, generator=gen)
    obj = torch.randn(dim, generator=gen) * 2.0
    drift = torch.randn(dim, generator=gen) * 0.3 / max(frames, 1)

    tokens = torch.empty(frames, rows, cols, dim)
    saliency = torch.empty(frames, rows, cols)
    for t in range(frames):
        s = scene_of[t]
        local = t - ([0, *cut_at][s])
        dy, dx = (local // 3) % pan, (local // 2) % pan  # slow pan, faster horizontally
        field = fields[s][dy : dy + rows, dx : dx + cols]
        frame = field + offsets[s] + drift * t
        # the moving object: a 2x2 blob travelling diagonally
        oy, ox = (t * rows) // max(frames, 1), (t * 2 * cols) // max(frames, 1) % cols
        ys, xs = slice(oy, min(oy + 2, rows)), slice(ox, min(ox + 2, cols))
        frame[ys, xs] = 0.3 * frame[ys, xs] + obj
        tokens[t] = frame + noise * torch.randn(rows, cols, dim, generator=gen)
        contrast = (frame - frame.mean(dim=(0, 1))).norm(dim=-1)
        bonus = torch.zeros(rows, cols)
        bonus[ys, xs] = 2.0
        # a one-token frame has no contrast: its importance is then the object bonus alone
        saliency[t] = contrast / contrast.mean().clamp_min(1e-12) + bonus
    cls_attn = torch.softmax(saliency.view(frames, -1) * 2.0, dim=-1)
    return tokens.view(frames, rows * cols, dim).to(dtype), cls_attn.to(dtype)


def _smooth_field(rows: int, cols: int, dim: int, gen: torch.Generator) -> torch.Tensor:
    """[rows, cols, dim] spatially correlated features: Gaussian noise box-blurred twice."""
    x = torch.randn(1, dim, rows + 4, cols + 4, generator=gen)
    for _ in range(2):
        x = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    x = x[0, :, 2 : 2 + rows, 2 : 2 + cols].permute(1, 2, 0)
    return x / x.std()
