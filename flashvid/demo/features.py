"""Token features and importance for the demo clips: pixels through a fixed, seeded projection.

No vision tower is involved; the features are a documented stand-in with the properties FlashVID
relies on (similar content gives similar tokens, a token's similarity to itself in the next frame
drops when the content under it moves). They are the same for the bundled videos, a user's video
and the photo clips. What they are not: semantic. Two patches are similar when their pixels are,
so a shift by a fraction of a patch, a lighting change or motion blur changes a token much more
than it would change a vision tower's token, and the importance below is a saliency heuristic,
not a model's attention.

1. Patches: each frame is cut into ``patch`` x ``patch`` RGB patches in raster order (rows of the
   token grid first), giving N = (H / patch) * (W / patch) tokens per frame. Pixel values are
   scaled to [0, 1] and centred by subtracting 0.5; a patch is flattened (row, column, channel)
   to P = patch * patch * 3 values.
2. Projection: z = GAIN * p @ W with W [P, D] a fixed Gaussian matrix, entries N(0, 1/P), drawn
   from ``torch.Generator().manual_seed(seed)``. GAIN = 4 brings the pre-activations to about
   unit scale.
3. Nonlinearity and normalisation: tokens = LayerNorm(GELU(z)) over the D features (no affine
   parameters), as a ViT block's output would be normalised.

Importance (``cls_attn``) stands in for the mean attention a vision tower's last layer gives
each token (§3): a per-frame softmax over patch saliency. The saliency of token k is its
cosine distance to the frame's mean token, s_k = 1 - cos(x_k, mean_n x_n), standardised over the
frame (z-score), and a_k = softmax_k(TEMPERATURE * z_k) with TEMPERATURE = 2. It is positive,
sums to 1 per frame, and favours tokens unlike the rest of their frame (objects, edges) over
large uniform regions. (A real tower's mean attention can also favour background "register"
tokens; the demo uses saliency so that the attention-based selections keep visible content.)
"""

from __future__ import annotations

import math

import numpy as np
import torch

PATCH = 16
DIM = 256
GAIN = 4.0
TEMPERATURE = 2.0


def frames_to_float(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """[F, H, W, 3] float32 in [0, 1] from uint8 (0..255) or floating (0..1) RGB frames."""
    x = torch.as_tensor(np.asarray(frames))
    if x.dim() != 4 or x.shape[-1] != 3:
        raise ValueError(f"frames must have shape [frames, height, width, 3] (RGB), got "
                         f"{tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x.float().div(255.0)
    if not x.is_floating_point():
        raise TypeError(f"frames must be uint8 (0..255) or floating (0..1), got {x.dtype}")
    return x.float().clamp(0.0, 1.0)


def patchify(frames: np.ndarray | torch.Tensor, patch: int = PATCH) -> torch.Tensor:
    """[F, N, patch*patch*3] float32 in [0, 1]: the patches of each frame in raster order.

    ``frames`` [F, H, W, 3] uint8 or float in [0, 1]; H and W must be multiples of ``patch``.
    """
    x = frames_to_float(frames)
    f, h, w, _ = x.shape
    if patch < 1 or h % patch or w % patch:
        raise ValueError(f"frame size {h}x{w} must be a multiple of the patch size {patch}")
    rows, cols = h // patch, w // patch
    x = x.reshape(f, rows, patch, cols, patch, 3).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(f, rows * cols, patch * patch * 3)


def projection(patch: int = PATCH, dim: int = DIM, seed: int = 0) -> torch.Tensor:
    """[patch*patch*3, dim] float32: the fixed Gaussian projection, entries N(0, 1/P)."""
    fan_in = patch * patch * 3
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(fan_in, dim, generator=gen) / math.sqrt(fan_in)


def patch_features(frames: np.ndarray | torch.Tensor, patch: int = PATCH, dim: int = DIM,
                   seed: int = 0) -> torch.Tensor:
    """[F, N, dim] float32 tokens: LayerNorm(GELU(GAIN * (patches - 0.5) @ W)) (module doc).

    ``frames`` [F, H, W, 3] uint8 or float in [0, 1], H and W multiples of ``patch``.
    """
    if dim < 1:
        raise ValueError(f"feature dim must be >= 1, got {dim}")
    p = patchify(frames, patch) - 0.5
    z = GAIN * (p @ projection(patch, dim, seed))
    return torch.nn.functional.layer_norm(torch.nn.functional.gelu(z), (dim,))


def importance(tokens: torch.Tensor) -> torch.Tensor:
    """[F, N] float32 per-frame softmax of patch saliency (module docstring).

    ``tokens`` [F, N, D] floating. s_k = 1 - cos(x_k, frame mean), z = (s - mean s) / std s per
    frame (std 0 gives z = 0), a = softmax(TEMPERATURE * z) over the frame: positive, rows sum
    to 1.
    """
    x = tokens.float()
    unit = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    centre = x.mean(dim=1, keepdim=True)
    centre = centre / centre.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    saliency = 1.0 - (unit * centre).sum(dim=-1)  # [F, N]
    z = (saliency - saliency.mean(dim=1, keepdim=True)) / saliency.std(
        dim=1, unbiased=False, keepdim=True).clamp_min(1e-12)
    return torch.softmax(TEMPERATURE * z, dim=-1)
