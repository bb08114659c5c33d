"""The scratch memory of one pipeline call.

The pipeline opens one :class:`Workspace` per call and every stage and backend that needs a
large temporary asks it by name; nothing a stage returns outlives the call, and nothing the
caller of ``flashvid.compress`` receives is workspace memory (the output rows are fresh tensors).

On the CPU the workspace borrows this thread's pool of buffers and gives it back when the call
ends, so that the next call reuses the same pages: a fresh multi-megabyte tensor costs more in
first-touch page faults than the arithmetic done in it on a small machine. A call that starts
while the pool is lent (a compress inside a compress, from a hook) gets fresh tensors.
``release()`` frees this thread's pool. On other devices (their caching allocators already
reuse memory), while compiling, and for tensors autograd records, a request is a plain
``torch.empty``.
"""

from __future__ import annotations

import threading

import torch

_local = threading.local()


def release() -> None:
    """Free this thread's pooled CPU buffers (they are reallocated by the next call)."""
    _local.__dict__.pop("pool", None)


class Workspace:
    """Named scratch tensors for one pipeline call on ``device`` (a context manager).

    ``empty(name, shape, dtype)`` returns an uninitialised tensor; each name is requested at most
    once per call, so two results never share memory.
    """

    def __init__(self, device: torch.device, *, pooled: bool = True) -> None:
        self.device = torch.device(device)
        self._pooled = pooled and self.device.type == "cpu"
        self._pool: dict[str, torch.Tensor] | None = None
        self._names: set[str] = set()

    def __enter__(self) -> Workspace:
        if self._pooled and not torch.compiler.is_compiling():
            pool = _local.__dict__.get("pool")
            if pool is None:
                pool = {}
            if not _local.__dict__.get("lent", False):
                _local.lent = True
                _local.pool = pool
                self._pool = pool
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            _local.lent = False
            self._pool = None

    def empty(self, name: str, shape: tuple[int, ...], dtype: torch.dtype, *,
              grad: bool = False) -> torch.Tensor:
        """An uninitialised ``shape`` tensor of ``dtype`` on the workspace's device, valid until
        the call ends. ``grad``: autograd will record it (then it is always a fresh tensor, as a
        reused buffer would invalidate saved tensors)."""
        if name in self._names:
            raise RuntimeError(f"workspace buffer {name!r} requested twice in one call")
        self._names.add(name)
        if self._pool is None or (grad and torch.is_grad_enabled()):
            return torch.empty(shape, dtype=dtype, device=self.device)
        numel = 1
        for s in shape:
            numel *= s
        buf = self._pool.get(name)
        if buf is None or buf.dtype != dtype or buf.numel() < numel:
            # a normal tensor even inside torch.inference_mode(), so that later calls outside it
            # may still write into it
            with torch.inference_mode(False):
                buf = self._pool[name] = torch.empty(numel, dtype=dtype)
        return buf[:numel].view(shape)
