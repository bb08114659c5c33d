"""Triton kernels of FlashVID. Never imports ``flashvid``.

* ``adts_select``: fused per-frame cosine-distance Gram + weighted greedy max-min selection.
* ``tstm_edges``: adjacent-frame most-similar eligible token and its similarity.
* ``token_stats``: token norms and event relevance, shared by both.

All launchers take a flat list of frames (any mix of segments and videos) and run on CUDA
tensors, or on CPU tensors under the Triton interpreter (TRITON_INTERPRET=1).
"""

from ._runtime import MAX_TOKENS, interpreting
from .adts import adts_select
from .stats import token_stats
from .tstm import tstm_edges

__all__ = ["MAX_TOKENS", "adts_select", "interpreting", "token_stats", "tstm_edges"]
