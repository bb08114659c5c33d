"""FlashVID: training-free compression of the visual tokens of video LLMs.

>>> import flashvid
>>> out = flashvid.compress(tokens, cls_attn)            # tokens [F, N, D], cls_attn [F, N]
>>> out.tokens, out.indices                               # [V, D], [V] global positions

Section marks (§) in the docstrings refer to docs/algorithm.md, which describes the algorithm,
the published code's quirks (Q1-Q8), our deviations and the numerics per dtype.
"""

from .compress import compress, compress_batch, validate
from .config import Budget, ExactBudget, FlashVIDConfig
from .integrations import apply
from .types import (
    KIND_ADTS,
    KIND_CLUSTER,
    KIND_NAMES,
    KIND_ROOT,
    CompressedBatch,
    CompressedVideo,
)

__version__ = "0.1.0"

__all__ = [
    "Budget", "CompressedBatch", "CompressedVideo", "ExactBudget", "FlashVIDConfig", "KIND_ADTS",
    "KIND_CLUSTER", "KIND_NAMES", "KIND_ROOT", "apply", "compress", "compress_batch", "validate",
    "__version__",
]
