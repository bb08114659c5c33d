"""The oracle: readable loop-level PyTorch written from SPEC.md §4-§9 for clarity, not speed.

Every test compares the fast backends to this package, and the parity fixtures compare it to the
published code. It is never changed to make a kernel pass. It has the fast path's stage names,
one module each, and ``compress`` composes them the same way: ``dyseg`` -> ``adts`` -> ``tstm``
-> ``trees`` -> ``dpc`` -> the assembly of the rows.

Precision follows the published code (SPEC Q5): segmentation and TSTM run in the input dtype,
ADTS and DPC distances in float32 (float64 stays float64, so the oracle can run in double).
Where bit-level parity with the published float32 results depends on the order of operations
(the column weights, the event term, the padded batch given to ``torch.cdist``), these modules
follow that order and say so.
"""

from .adts import adts, column_weights
from .compress import compress
from .dpc import density_ramp, dpc, dpc_knn, segment_distances
from .dyseg import dyseg
from .trees import trees
from .tstm import tstm, tstm_edges, tstm_merged
from .util import spans, unit_rows, work_dtype

__all__ = [
    "adts", "column_weights", "compress", "density_ramp", "dpc", "dpc_knn", "dyseg",
    "segment_distances", "spans", "trees", "tstm", "tstm_edges", "tstm_merged", "unit_rows",
    "work_dtype",
]
