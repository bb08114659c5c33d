"""The Triton backend's heavy stages: the kernels of ``flashvid_kernels`` behind StageOps."""

from __future__ import annotations

import torch

from .pipeline import StageOps
from .spatial import to_device


class TritonOps(StageOps):
    """ADTS selection and TSTM edges from the Triton kernels; token norms computed once."""


    def __init__(self) -> None:
        import flashvid_kernels

        self.kernels = flashvid_kernels
        self._norms: tuple[torch.Tensor, torch.Tensor] | None = None

    def norms(self, x: torch.Tensor) -> torch.Tensor:
        if self._norms is None or self._norms[0] is not x:
            self._norms = (x, self.kernels.token_stats(x)[0])
        return self._norms[1]

    @torch.no_grad()
    def select(self, x, weights, event_mean, k, exclude, fill):
        # the stats kernel computes the norms and the event term in one pass over the tokens
        norms, event = self.kernels.token_stats(x, event_mean)
        self._norms = (x, norms)
        return self.kernels.adts_select(x, weights, k, exclude, fill=fill, event=event,
                                        norms=norms)

    @torch.no_grad()
    def edges(self, x, eligible, starts, lengths):
        start = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        start[to_device([starts], x.device)[0]] = True
        parent, maxsim = self.kernels.tstm_edges(x, eligible, start, norms=self.norms(x))
        return maxsim, parent.long()
