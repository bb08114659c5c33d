"""Shared test helpers: the device, the tolerance table, fixture loading, random videos."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

import flashvid

DATA = Path(__file__).parent / "data"
SWEEP_FILE = DATA / "published_sweep.npz"
# per-stage fixtures of the published code (§16 layout); the sweep file holds final outputs
FIXTURES = sorted(p.stem for p in DATA.glob("*.npz") if p != SWEEP_FILE)
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


def sweep_cases() -> list[int]:
    """Case numbers of ``published_sweep.npz``: small videos of many kinds (shapes up to N = 729
    and D = 1152, 2- and 3-frame videos, alpha 0 and 1, every selection, several thresholds, no
    complementary cuts, static and repeated frames, peaked importance), each with the published
    code's final output."""
    with np.load(SWEEP_FILE) as d:
        return list(range(json.loads(str(d["meta_json"]))["cases"]))


def sweep_case(i: int) -> tuple[dict, dict[str, np.ndarray]]:
    """(meta, arrays) of one sweep case: tokens_in, cls_attn, indices, tokens_out."""
    prefix = f"case{i:02d}_"
    with np.load(SWEEP_FILE) as d:
        arrays = {k[len(prefix):]: d[k] for k in d.files if k.startswith(prefix)}
    return json.loads(str(arrays.pop("meta"))), arrays


def sweep_config(meta: dict, **overrides) -> flashvid.FlashVIDConfig:
    c = meta["config"]
    return flashvid.FlashVIDConfig(
        retention_ratio=c["retention"], alpha=c["alpha"], selection=METHODS[c["method"]],
        temporal_threshold=c["temporal_threshold"], segment=c["segment"],
        segment_threshold=c["segment_threshold"], min_segments=c["min_segments"],
        complementary_segments=c["complementary"],
    ).replace(**overrides)


def assert_tokens_match(got: np.ndarray, want: np.ndarray, indices: np.ndarray,
                        dtype=torch.float32) -> None:
    """Row values within the tolerance table; rows at a duplicated position (Q2/Q3, whose
    published order is not stable) are matched by value."""
    atol, rtol = TOL[dtype]
    for g in np.unique(indices):
        rows = np.flatnonzero(indices == g)
        if len(rows) == 1:
            np.testing.assert_allclose(got[rows[0]], want[rows[0]], atol=atol, rtol=rtol)
        else:
            for r in rows:
                err = [np.abs(got[q] - want[r]).max() for q in rows]
                assert min(err) <= atol + rtol * np.abs(want[r]).max(), (g, err)


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
    """§4 written out independently of FlashVIDConfig.budget."""
    total = min(n, math.ceil(n * r * expansion))
    adts = math.ceil(total * alpha)
    return total, adts, total - adts


def fixture_segments(d: dict) -> list[tuple[int, int, int]]:
    """(fixture segment id, first frame, length) of the non-empty published segments."""
    out, start = [], 0
    for s, length in enumerate(d["segment_lengths"].tolist()):
        if length > 0:
            out.append((s, start, length))
        start += length
    return out


_COMPRESSED: dict = {}


def compress_fixture(name: str, backend: str):
    """(meta, arrays, CompressedVideo) of a fixture through ``backend`` (cached)."""
    if (name, backend) not in _COMPRESSED:
        meta, d = load_fixture(name)
        x = torch.from_numpy(d["input_video_features"]).to(device())
        a = torch.from_numpy(d["input_cls_attention"]).to(device())
        _COMPRESSED[name, backend] = (meta, d, flashvid.compress(
            x, a, fixture_config(meta, backend=backend)))
    return _COMPRESSED[name, backend]
