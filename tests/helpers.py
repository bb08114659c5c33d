"""Shared test helpers: the device, the tolerance table, fixture loading, random videos."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

import flashvid

DATA = Path(__file__).parent / "data"
FIXTURES = sorted(p.stem for p in DATA.glob("*.npz"))
METHODS = {"attn_div_v2": "adts", "attn_div": "adts_v1", "attn": "attention", "div": "diversity"}

# Tolerances for values (tokens), per dtype, in one place: |got - want| <= atol + rtol * |want|.
TOL = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (1e-5, 1e-5),
    torch.float16: (2e-2, 1e-2),
    torch.bfloat16: (1e-1, 4e-2),
}


def device() -> torch.device:
    """The device tests run on: the GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_fixture(name: str) -> tuple[dict, dict[str, np.ndarray]]:
    with np.load(DATA / f"{name}.npz") as d:
        data = {k: d[k] for k in d.files}
    meta = json.loads(str(data.pop("meta_json")))
    return meta, data


def fixture_config(meta: dict, **overrides) -> flashvid.FlashVIDConfig:
    a = meta["args"]
    return flashvid.FlashVIDConfig(
        retention_ratio=a["retention"], alpha=a["alpha"], selection=METHODS[a["method"]],
        temporal_threshold=a["temporal_threshold"], segment=not a["no_segment"],
        segment_threshold=a["segment_threshold"], min_segments=a["min_segment_num"],
        complementary_segments=not a["no_complementary"], expansion=a["expansion"],
    ).replace(**overrides)


def random_video(frames: int, n: int, dim: int, *, seed: int, dtype=torch.float32,
                 rho: float = 0.9, dev: torch.device | None = None):
    """Temporally correlated random tokens (AR(1) over frames, a few jumps) and a softmax
    importance, so that TSTM actually merges."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.empty(frames, n, dim)
    x[0] = torch.randn(n, dim, generator=gen)
    for t in range(1, frames):
        fresh = torch.randn(n, dim, generator=gen)
        x[t] = fresh if t % 7 == 0 else rho * x[t - 1] + math.sqrt(1 - rho**2) * fresh
    x += 0.5 * torch.randn(dim, generator=gen)  # a shared offset, so event relevance is not ~0
    a = torch.softmax(torch.randn(frames, n, generator=gen) * 2, dim=-1)
    dev = dev or device()
    return x.to(dtype).to(dev), a.to(dtype).to(dev)


def expected_budget(n: int, r: float, expansion: float, alpha: float) -> tuple[int, int, int]:
    """SPEC §4 written out independently of FlashVIDConfig.budget."""
    total = min(n, math.ceil(n * r * expansion))
    adts = math.ceil(total * alpha)
    return total, adts, total - adts
