"""Triton kernels of FlashVID. Never imports ``flashvid``.

* ``token_stats``: token norms and event relevance, shared by both selections.
* ``adts_select``: per-frame cosine-distance Gram (tile pairs over programs) + weighted greedy
  max-min selection (the frame's last program), in one launch per chunk of frames.
* ``tstm_edges``: adjacent-frame most-similar eligible token and its similarity.

All launchers take a flat list of frames (any mix of segments and videos), run on CUDA tensors
(on the tensors' own device), or on CPU tensors under the Triton interpreter (TRITON_INTERPRET=1),
never synchronise with the host and allocate only with torch.empty / torch.zeros.
``python -m flashvid_kernels.report`` compiles every specialisation for sm_80 and sm_90 without a
GPU, prints registers, spills, shared memory and occupancy, and audits the compiled code: the
cross-program protocol of the ADTS frame ticket from the PTX, tl.dot sizes, masked loads and
int64 offsets from the TTIR (``flashvid_kernels.audit``; docs/kernels.md).
"""

from ._runtime import MAX_TOKENS, interpreting
from .adts import adts_select
from .stats import token_stats
from .tstm import tstm_edges

__all__ = ["MAX_TOKENS", "adts_select", "interpreting", "token_stats", "tstm_edges"]
