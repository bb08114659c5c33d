"""The oracle: readable loop-level PyTorch written from SPEC.md, float64-capable."""

from .core import (
    column_weights,
    compress,
    density_ramp,
    dpc_knn,
    dyseg,
    segment_distances,
    select,
    tstm_aggregate,
    tstm_edges,
    tstm_merged,
    unit_rows,
    work_dtype,
)

__all__ = [
    "column_weights", "compress", "density_ramp", "dpc_knn", "dyseg", "segment_distances",
    "select", "tstm_aggregate", "tstm_edges", "tstm_merged", "unit_rows", "work_dtype",
]
