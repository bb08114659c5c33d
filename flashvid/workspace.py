"""Per-thread reusable buffers for the CPU fast path.

On the CPU every fresh multi-megabyte temporary is paid for in first-touch page faults (about
0.5 ms per MB on a virtual machine), which is more than the arithmetic done in it. The fast path
therefore keeps its few large temporaries (the unit features, the tree sums, the DPC operands)
in buffers that each thread reuses from call to call. They are never returned to the caller.
On CUDA the caching allocator already reuses memory, and when autograd records the computation
a reused buffer would invalidate saved tensors, so both get fresh tensors.
"""

from __future__ import annotations

import threading

import torch

_local = threading.local()


def buffer(name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device,
           *, grad: bool = False) -> torch.Tensor:
    """An uninitialised [shape] tensor: a view of this thread's buffer ``name`` on the CPU."""
    if device.type != "cpu" or (grad and torch.is_grad_enabled()):
        return torch.empty(shape, dtype=dtype, device=device)
    cache = _local.__dict__.setdefault("buffers", {})
    numel = 1
    for s in shape:
        numel *= s
    buf = cache.get(name)
    if buf is None or buf.dtype != dtype or buf.numel() < numel:
        buf = cache[name] = torch.empty(numel, dtype=dtype)
    return buf[:numel].view(shape)


def release() -> None:
    """Free this thread's buffers (they are reallocated on the next call)."""
    _local.__dict__.pop("buffers", None)
