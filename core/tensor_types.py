"""The tensor datatypes ModelForge serves: one table, read by everything that speaks of them
(the JSON codec `inference.tensors`, the v2 codec `inference.v2.codec`, model inspection
`registry.onnx_inspect` and batch files `jobs.batch_io`).

Each row names a datatype three ways: its Open Inference Protocol (v2) name, which schemas and
both APIs use (``FP32``); ONNX's element type as ONNX Runtime spells it, the lower-cased
``TensorProto.DataType`` name (``float``, as in ``tensor(float)``); and the numpy dtype ONNX
Runtime takes and returns for it. ONNX element types without a row (complex, float8, int4, ...)
have no v2 datatype and cannot be sent or received.

The lookups below the table are dicts built from it once, so the codecs' hot paths read them
as plain dict reads. Imports numpy and ml_dtypes (numpy has no bfloat16), nothing of ours.
"""

from __future__ import annotations

from typing import NamedTuple

import ml_dtypes
import numpy as np


class TensorType(NamedTuple):
    datatype: str  # the v2 name
    onnx: str  # ONNX's element type, lower-cased
    dtype: np.dtype
    made_with: str  # how a Python client makes such data, for error messages


# In the v2 specification's order, which error messages list them in.
TABLE: tuple[TensorType, ...] = (
    TensorType("BOOL", "bool", np.dtype(np.bool_), "numpy bool"),
    TensorType("UINT8", "uint8", np.dtype(np.uint8), "numpy uint8"),
    TensorType("UINT16", "uint16", np.dtype(np.uint16), "numpy uint16"),
    TensorType("UINT32", "uint32", np.dtype(np.uint32), "numpy uint32"),
    TensorType("UINT64", "uint64", np.dtype(np.uint64), "numpy uint64"),
    TensorType("INT8", "int8", np.dtype(np.int8), "numpy int8"),
    TensorType("INT16", "int16", np.dtype(np.int16), "numpy int16"),
    TensorType("INT32", "int32", np.dtype(np.int32), "numpy int32"),
    TensorType("INT64", "int64", np.dtype(np.int64), "numpy int64"),
    TensorType("FP16", "float16", np.dtype(np.float16), "numpy float16"),
    TensorType("FP32", "float", np.dtype(np.float32), "numpy float32"),
    TensorType("FP64", "double", np.dtype(np.float64), "numpy float64"),
    # ONNX Runtime does not take bfloat16 arrays directly: the session layer passes them as
    # OrtValue.ortvalue_from_numpy_with_onnx_type(array.view(numpy.uint16), TensorProto.BFLOAT16).
    TensorType("BF16", "bfloat16", np.dtype(ml_dtypes.bfloat16), "ml_dtypes bfloat16"),
    # ONNX Runtime takes and returns tensor(string) as an object array of str.
    TensorType("BYTES", "string", np.dtype(object), "a numpy object array of str or bytes"),
)

TYPES: dict[str, TensorType] = {row.datatype: row for row in TABLE}
DATATYPES: tuple[str, ...] = tuple(TYPES)
DTYPES: dict[str, np.dtype] = {row.datatype: row.dtype for row in TABLE}
DATATYPE_OF_ONNX: dict[str, str] = {row.onnx: row.datatype for row in TABLE}

FLOAT_DATATYPES = frozenset({"FP16", "FP32", "FP64", "BF16"})
INT_RANGES: dict[str, tuple[int, int]] = {
    row.datatype: (int(np.iinfo(row.dtype).min), int(np.iinfo(row.dtype).max))
    for row in TABLE
    if row.dtype.kind in "iu"
}
NUMERIC_DATATYPES = FLOAT_DATATYPES | frozenset(INT_RANGES)
# The largest finite magnitude of each float type; anything bigger would become infinity.
FLOAT_MAX: dict[str, float] = {
    row.datatype: float(ml_dtypes.finfo(row.dtype).max) for row in TABLE if row.datatype in FLOAT_DATATYPES
}
# Bytes per element in a binary tensor (the numpy item size: a BOOL is one byte). BYTES has
# none: each of its elements is a 4-byte length followed by that many bytes.
ITEM_SIZES: dict[str, int] = {row.datatype: row.dtype.itemsize for row in TABLE if row.datatype != "BYTES"}


def is_supported(entry: dict) -> bool:
    """Whether a schema entry (`registry.onnx_inspect`) is a tensor of a datatype in the table,
    i.e. one the APIs and batch files can carry."""
    return entry.get("kind") == "tensor" and entry.get("datatype") in TYPES
