"""numpy <-> KServe v2 tensors: datatype strings, raw little-endian bytes and typed contents."""

from __future__ import annotations


import numpy as np

from gradserve.proto import kserve_pb2 as kpb
from gradserve.proto.dtypes import BY_KSERVE, BY_NAME
from gradserve.proto.tensors import TensorError, element_count

# Where each datatype's values go in InferTensorContents; FP16 has no field and travels as raw bytes only.
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}
_FIELD_DTYPE = {
    "bool_contents": np.dtype("bool"),
    "int_contents": np.dtype("i4"),
    "int64_contents": np.dtype("i8"),
    "uint_contents": np.dtype("u4"),
    "uint64_contents": np.dtype("u8"),
    "fp32_contents": np.dtype("f4"),
    "fp64_contents": np.dtype("f8"),
    "bytes_contents": np.dtype("O"),
}


def datatype(dtype) -> str:
    """The KServe datatype string for a numpy dtype (or dtype name): float32 -> "FP32"."""
    try:
        return BY_NAME[np.dtype(dtype).name].kserve
    except (KeyError, TypeError):
        raise TensorError(f"dtype {dtype} has no KServe datatype here; use one of "
                          f"{', '.join(BY_NAME)}") from None


def numpy_dtype(name: str, what: str = "tensor") -> np.dtype:
    """The numpy dtype for a KServe datatype string: "FP32" -> float32."""
    try:
        return BY_KSERVE[name].numpy
    except KeyError:
        raise TensorError(f"{what}: datatype {name!r} is not supported; use one of {', '.join(BY_KSERVE)}") from None


def request_inputs(request: kpb.ModelInferRequest) -> dict[str, np.ndarray]:
    """The request's input tensors as read-only arrays, from raw_input_contents or from typed contents."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise TensorError(f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs; "
                          "send one entry per input, in the order of inputs")
    arrays: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(request.inputs):
        what = f"input {tensor.name!r}"
        if tensor.name in arrays:
            raise TensorError(f"{what} is given twice")
        if raw and tensor.HasField("contents"):
            raise TensorError(f"{what} has typed contents while the request uses raw_input_contents; "
                              "use one or the other for every input")
        arrays[tensor.name] = _from_raw(tensor, raw[index], what) if raw else _from_contents(tensor, what)
    return arrays


def add_output(response: kpb.ModelInferResponse, name: str, array: np.ndarray) -> None:
    """Append ``array`` as output ``name``: its metadata in outputs, its bytes in raw_output_contents."""
    array = np.asarray(array)
    kind = datatype(array.dtype)
    response.outputs.add(name=name, datatype=kind, shape=array.shape)
    response.raw_output_contents.append(np.ascontiguousarray(array, dtype=BY_KSERVE[kind].numpy).tobytes())


def _from_raw(tensor, data: bytes, what: str) -> np.ndarray:
    dtype = numpy_dtype(tensor.datatype, what)
    shape = tuple(tensor.shape)
    count = element_count(shape, dtype.itemsize, what)
    if count * dtype.itemsize != len(data):
        raise TensorError(f"{what}: {len(data)} raw bytes do not match shape {list(shape)} of {tensor.datatype} "
                          f"({count} elements x {dtype.itemsize} bytes = {count * dtype.itemsize})")
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def _from_contents(tensor, what: str) -> np.ndarray:
    dtype = numpy_dtype(tensor.datatype, what)
    shape = tuple(tensor.shape)
    count = element_count(shape, dtype.itemsize, what)
    field = _CONTENTS_FIELD.get(tensor.datatype)
    if field is None:
        raise TensorError(f"{what}: {tensor.datatype} data travels only as raw_input_contents (the protocol "
                          "has no typed field for it)")
    contents = tensor.contents
    misplaced = [f for f in _FIELD_DTYPE if f != field and len(getattr(contents, f))]
    if misplaced:
        raise TensorError(f"{what}: {tensor.datatype} values go in contents.{field}, not contents.{misplaced[0]}")
    values = getattr(contents, field)
    if len(values) != count:
        raise TensorError(f"{what}: contents.{field} has {len(values)} values for shape {list(shape)} "
                          f"({count} elements)")
    wide = np.array(values, dtype=_FIELD_DTYPE[field])
    array = wide.astype(dtype)
    if dtype.kind in "iu" and not np.array_equal(array, wide):
        raise TensorError(f"{what}: a value in contents.{field} is out of range for {tensor.datatype}")
    return array.reshape(shape)
