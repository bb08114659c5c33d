"""The oracle: readable loop-level PyTorch of docs/algorithm.md §4-§9, for clarity, not speed.

Every test compares the fast backends to this package, and the parity fixtures compare it to the
published code. It is never changed to make a kernel pass. It has the fast path's stage names,
one module each, and ``compress`` composes them the same way: ``dyseg`` -> ``adts`` -> ``tstm``
-> ``trees`` -> ``dpc`` -> the assembly of the rows, segment by segment and frame by frame.

Precision: one semantic per dtype. Decisions (segments, picks, edges, clusters) and merged
values are computed in float32 for float16/bfloat16 input, exactly as for float32 input given
the same (upcast) values, and in float64 for float64 input; merged rows are cast back to the
input dtype. Where bit-level parity with the published float32 results depends on the order of
operations (cosines as x / ||x|| then a batched product, ``torch.cdist`` on one frame at a time,
``torch.topk`` for ties of the complementary cuts and the attention selection), these modules
follow that order and say so.
"""

from .adts import adts, column_weights, event_relevance
from .compress import compress
from .dpc import density_ramp, distances, dpc, dpc_knn
from .dyseg import dyseg, frame_means
from .trees import trees
from .tstm import tstm, tstm_edges, tstm_merged
from .util import spans, unit_rows, work_dtype

__all__ = [
    "adts", "column_weights", "compress", "density_ramp", "distances", "dpc", "dpc_knn",
    "dyseg", "event_relevance", "frame_means", "spans", "trees", "tstm", "tstm_edges",
    "tstm_merged", "unit_rows", "work_dtype",
]
