"""The one dtype table: each dtype gradserve carries, as numpy, the gradserve.v1 DType enum and KServe v2 name it."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from gradserve.proto import gradserve_pb2 as pb


class DType(NamedTuple):
    """One dtype under each of its names."""

    numpy: np.dtype  # little-endian, as the bytes on the wire are
    code: int  # gradserve.v1 DType
    kserve: str  # KServe v2 datatype string


#: Every dtype gradserve carries. The engine (numpy only) speaks numpy dtypes; which of them travel is decided
#: here, on the wire's side (ValueInfo's dtype is this enum, so a graph can only declare these).
TABLE = (
    DType(np.dtype("<f4"), pb.FLOAT32, "FP32"),
    DType(np.dtype("<f8"), pb.FLOAT64, "FP64"),
    DType(np.dtype("<i4"), pb.INT32, "INT32"),
    DType(np.dtype("<i8"), pb.INT64, "INT64"),
    DType(np.dtype("bool"), pb.BOOL, "BOOL"),
    DType(np.dtype("<f2"), pb.FLOAT16, "FP16"),
    DType(np.dtype("i1"), pb.INT8, "INT8"),
    DType(np.dtype("<i2"), pb.INT16, "INT16"),
    DType(np.dtype("u1"), pb.UINT8, "UINT8"),
)

# Lookups into TABLE, by each name.
BY_NAME = {d.numpy.name: d for d in TABLE}  # "float32"
BY_CODE = {d.code: d for d in TABLE}  # pb.FLOAT32
BY_KSERVE = {d.kserve: d for d in TABLE}  # "FP32"
BY_NUMPY = {d.numpy: d for d in TABLE}  # a native little-endian dtype object: no name lookup (the hot path)
