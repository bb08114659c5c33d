"""The Triton backend's heavy stages: the kernels of ``flashvid_kernels`` behind StageOps."""

from __future__ import annotations

import torch

from .pipeline import StageOps
from .spatial import to_device


class TritonOps(StageOps):
    """ADTS selection and TSTM edges from the Triton kernels; token norms computed once."""

    name = "triton"

    def __init__(self) -> None:
        import flashvid_kernels

        self.kernels = flashvid_kernels
        self._norms: tuple[torch.Tensor, torch.Tensor] | None = None

    def norms(self, x: torch.Tensor) -> torch.Tensor:
        if self._norms is None or self._norms[0] is not x:
            self._norms = (x, self.kernels.token_stats(x)[0])
        return self._norms[1]

    @torch.no_grad()
    def event_relevance(self, x, means, starts, lengths):
        # the stats kernel computes the norms in the same pass over the tokens
        of_segment = torch.repeat_interleave(
            to_device([list(range(len(lengths)))], x.device)[0],
            to_device([lengths], x.device)[0], output_size=x.shape[0])
        norms, event = self.kernels.token_stats(x, means[of_segment])
        self._norms = (x, norms)
        return event

    @torch.no_grad()
    def select(self, x, weights, event, k, exclude, fill):
        return self.kernels.adts_select(x, weights, k, exclude, fill=fill, event=event,
                                        norms=self.norms(x))

    @torch.no_grad()
    def edges(self, x, eligible, starts, lengths):
        start = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        start[to_device([starts], x.device)[0]] = True
        parent, maxsim = self.kernels.tstm_edges(x, eligible, start, norms=self.norms(x))
        return maxsim, parent.long()
