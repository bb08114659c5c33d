"""Backends: the heavy per-frame operations of the fast path, behind one stateless interface.

A backend computes, for a flat list of frames x [F, N, D], with the call's
:class:`~flashvid.workspace.Workspace` for its temporaries:

* ``token_norms``: the token norms (and whatever per-token data its later steps reuse), before
  anything else: the pipeline checks the input values from them;
* ``frame_stats``: the per-frame statistics ADTS needs (the event relevance, and for the torch
  backend the cosine Grams), as a :class:`FrameStats` that the pipeline passes to the stages;
* ``adts_select``: the greedy max-min selection of every frame (stage ``adts``);
* ``tstm_edges``: each token's most similar eligible token of the previous frame (stage
  ``tstm``).

Backends keep no state: each is one module-level instance (``BACKENDS``). ``torch`` is batched
PyTorch (the CPU path, and a correct CUDA fallback); ``triton`` runs the kernels of
``flashvid_kernels``, imported on first use.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import torch

from ..workspace import Workspace


class FrameStats(NamedTuple):
    """Per-frame statistics of x [F, N, D] (work dtype: float32, or float64 for float64 input).

    Attributes:
        norms: [F, N] token norms ||x||, at least the dtype's tiny.
        unit: [F, N, D] the unit rows x / ||x|| (torch backend; None where kernels fuse them).
        event: [F, N] event relevance <x_j, mu_S> of each token with its segment's mean, or None.
        gram: [F, N, N] cosine similarities within each frame, or None (backends that fuse the
            Gram into ``adts_select`` leave it out).
    """

    norms: torch.Tensor
    unit: torch.Tensor | None = None
    event: torch.Tensor | None = None
    gram: torch.Tensor | None = None


class Edges(NamedTuple):
    """TSTM edges of a flat frame list.

    Attributes:
        parent: [F, N] int64 index in frame t-1 of each token's most similar eligible token
            (first index on ties); -1 for ineligible tokens and segment starts.
        maxsim: [F, N] work-dtype similarity to that parent; -1 where parent is -1.
    """

    parent: torch.Tensor
    maxsim: torch.Tensor


class Backend(Protocol):
    """The interface of a fast backend (see the module docstring)."""

    name: str

    def token_norms(self, x: torch.Tensor, ws: Workspace, *, unit: bool) -> FrameStats: ...

    def frame_stats(self, x: torch.Tensor, stats: FrameStats, ws: Workspace, *,
                    event_mean: torch.Tensor | None, gram: bool) -> FrameStats: ...

    def adts_select(self, x: torch.Tensor, stats: FrameStats, weights: torch.Tensor | None,
                    k: int, exclude: bool, fill: float, ws: Workspace) -> torch.Tensor: ...

    def tstm_edges(self, x: torch.Tensor, stats: FrameStats, eligible: torch.Tensor,
                   segments: object, ws: Workspace) -> Edges: ...


def get_backend(name: str) -> Backend:
    """The fast backend called ``name`` ("torch" or "triton")."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown fast backend {name!r}; expected one of "
                         f"{sorted(BACKENDS)}") from None


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype decisions are computed in: float64 for float64 input, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


from .pytorch import TorchBackend  # noqa: E402  (the backends use the types above)
from .triton import TritonBackend  # noqa: E402

BACKENDS: dict[str, Backend] = {"torch": TorchBackend(), "triton": TritonBackend()}
