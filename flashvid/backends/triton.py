"""The triton backend: the kernels of ``flashvid_kernels`` (CUDA tensors, or the CPU under
TRITON_INTERPRET=1). The Gram of ``adts`` and the adjacent-frame similarities of ``tstm`` are
fused into their kernels and never written to memory; ``frame_stats`` computes the norms and
the event term in one pass over the tokens."""

from __future__ import annotations

import torch

from . import Edges, FrameStats


def usable(tokens: torch.Tensor) -> tuple[bool, str]:
    """(True, "") if the kernels can run on ``tokens``, else (False, why)."""
    try:
        import flashvid_kernels
    except ImportError as err:
        return False, (f"Triton is not installed ({err}); install the GPU extra with "
                       "`pip install 'flashvid[triton]'` (CUDA builds of torch already bring "
                       "Triton), or use backend='torch'")
    if tokens.dtype == torch.float64:
        return False, ("the kernels take float16/bfloat16/float32 tokens; use backend='torch' "
                       "or 'reference' for float64")
    if tokens.shape[1] > flashvid_kernels.MAX_TOKENS:
        return False, (f"the kernels take at most {flashvid_kernels.MAX_TOKENS} tokens per "
                       f"frame, got {tokens.shape[1]}")
    if not (tokens.is_cuda or flashvid_kernels.interpreting()):
        return False, ("the kernels need CUDA tensors (or TRITON_INTERPRET=1 on the CPU); "
                       "use backend='torch' on the CPU")
    return True, ""


def _kernels():
    import flashvid_kernels

    return flashvid_kernels


class TritonBackend:
    """ADTS selection and TSTM edges from the Triton kernels (imported on first use)."""

    name = "triton"

    def token_norms(self, x, ws, *, unit) -> FrameStats:
        with torch.no_grad():
            norms, _ = _kernels().token_stats(x, None)
            return FrameStats(norms)

    def frame_stats(self, x, stats, ws, *, event_mean=None, gram=False) -> FrameStats:
        if event_mean is None:
            return stats
        with torch.no_grad():
            norms, event = _kernels().token_stats(x, event_mean)
            return stats._replace(norms=norms, event=event)

    def adts_select(self, x, stats, weights, k, exclude, fill, ws) -> torch.Tensor:
        with torch.no_grad():
            return _kernels().adts_select(x, weights, k, exclude, fill=fill, event=stats.event,
                                          norms=stats.norms)

    def tstm_edges(self, x, stats, eligible, segments, ws) -> Edges:
        with torch.no_grad():
            parent, maxsim = _kernels().tstm_edges(x, eligible, segments.start,
                                                   norms=stats.norms)
            return Edges(parent.long(), maxsim)
