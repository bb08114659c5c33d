"""Floors: the least time each stage could take on this device, measured in the same run.

* CPU: the batched matrix products a stage cannot avoid, timed on contiguous operands and
  output buffers prepared outside the timed region, batched as ``products`` batches them
  (whole multiples of the thread count): each frame's Gram from its distinct blocks (``adts``:
  a Gram is symmetric), each within-segment adjacent pair's similarity between the tokens TSTM
  may link (``tstm``: ADTS tokens left out), each DPC frame's distance product at its exact
  size, frames grouped by size (``dpc``: the inner products alone, so stricter than any
  distance routine; torch.cdist itself is slower than our DPC); one read of the features for
  ``trees`` (it has no product); the sum of the three products for ``compress``.
* GPU: max(bytes / bandwidth, FLOPs / matmul rate), with the copy bandwidth and the matmul rate
  of the input dtype measured on the device (TF32 off for float32).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from flashvid.backends import work_dtype
from flashvid.reference import spans
from flashvid.stages.util import products, unit_rows

from .stages import Prepared


def stage_work(p: Prepared) -> dict[str, tuple[float, float]]:
    """Per stage (bytes it must move, FLOPs it must do), counted as DESIGN.md does."""
    frames, n, dim = p.x.shape
    es = p.x.element_size()
    pairs = sum(length - 1 for length in p.seg.lengths)
    width = int(p.eligible.sum(dim=1).max())  # tokens TSTM may link, per frame
    gram_pairs = n * n if n < 64 else (n // 2) ** 2 + (n - n // 2) ** 2 + (n // 2) * (n - n // 2)
    dpc_flops = sum(2.0 * c * c * dim for c, k in zip(p.counts, p.clusters) if k)
    candidates = sum(p.counts)
    tokens = frames * n * dim * es
    work = {
        "dyseg": (tokens, float(frames * n * dim)),
        "adts": (tokens + frames * n * p.a.element_size(), 2.0 * frames * gram_pairs * dim),
        "tstm": (tokens, 2.0 * pairs * width * width * dim),
        "trees": (tokens + candidates * dim * 4, float(frames * n * dim)),
        "dpc": (candidates * dim * 4, dpc_flops),
    }
    out_rows = frames * p.budget.total
    work["compress"] = (tokens + out_rows * dim * es,
                        work["adts"][1] + work["tstm"][1] + work["dpc"][1])
    return work


def cpu_floor_fns(p: Prepared) -> dict[str, Callable[[], object]]:
    """The unavoidable products of each stage, as callables on prepared contiguous operands:
    each frame's Gram from its distinct blocks (the first half-rows against all rows in one
    product, and the second diagonal half: a Gram is symmetric), each within-segment adjacent
    pair's similarity between the tokens TSTM may link (ADTS tokens left out), each DPC frame's
    product at its exact size, batched as the torch backend batches them."""
    wd = work_dtype(p.x.dtype)
    xw = p.x.to(wd)
    xh = unit_rows(xw)
    n = xh.shape[1]
    half = n // 2
    top, bottom = xh[:, :half].contiguous(), xh[:, half:].contiguous()
    xt = xh.transpose(1, 2)  # top @ xt: the blocks top top^T and top bottom^T in one product
    cur = [t for s, e in spans(p.seg.lengths) for t in range(s + 1, e)]
    width = int(p.eligible.sum(dim=1).max())
    order = torch.argsort((~p.eligible).to(torch.int8), dim=1, stable=True)[:, :width]
    rows = torch.gather(xh, 1, order[:, :, None].expand(-1, -1, xh.shape[2]))
    a_pairs = rows[cur].contiguous() if cur else None
    b_pairs = rows[[t - 1 for t in cur]].contiguous() if cur else None
    groups: dict[int, list[torch.Tensor]] = {}
    row = 0
    for c, k in zip(p.counts, p.clusters):
        if k:
            groups.setdefault(c, []).append(p.values[row : row + c])
        row += c
    dpc_ops = [torch.stack(v) for v in groups.values()]

    frames = xh.shape[0]
    gram_out = torch.empty(frames, n, n, dtype=wd)
    pair_out = torch.empty(len(cur), width, width, dtype=wd)
    dpc_out = [torch.empty(z.shape[0], z.shape[1], z.shape[1], dtype=wd) for z in dpc_ops]

    def gram():
        if n < 64:
            return products(xh, xh.transpose(1, 2), gram_out)
        return (products(top, xt, gram_out[:, :half]),
                products(bottom, bottom.transpose(1, 2), gram_out[:, half:, half:]))

    def pairs():
        return products(a_pairs, b_pairs.transpose(1, 2), pair_out) if cur else None

    def dpc():
        return [products(z, z.transpose(1, 2), out) for z, out in zip(dpc_ops, dpc_out)]

    def compress():
        gram()
        pairs()
        dpc()

    return {"dyseg": lambda: p.x.sum(dtype=wd), "adts": gram, "tstm": pairs,
            "trees": lambda: xw.sum(), "dpc": dpc, "compress": compress}


def gpu_ceilings(device: torch.device, dtype: torch.dtype,
                 timer: Callable[[Callable[[], object]], float]) -> tuple[float, float]:
    """(bandwidth bytes/s, matmul FLOP/s) measured on the device with random data."""
    return _bandwidth(device, timer), _matmul_rate(device, dtype, timer)


def _bandwidth(device: torch.device, timer: Callable[[Callable[[], object]], float]) -> float:
    """Device-to-device copy of 1 GiB, counting the bytes read and written."""
    src = torch.randn(256 * 2**20, device=device, dtype=torch.float32)
    dst = torch.empty_like(src)
    return 2 * src.numel() * src.element_size() / timer(lambda: dst.copy_(src))


def _matmul_rate(device: torch.device, dtype: torch.dtype,
                 timer: Callable[[Callable[[], object]], float]) -> float:
    """FLOP/s of a square matmul in ``dtype`` (TF32 off, so float32 is true float32)."""
    size = 8192 if dtype in (torch.float16, torch.bfloat16) else 4096
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        return 2.0 * size**3 / timer(lambda: a @ b)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
