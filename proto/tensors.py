"""numpy <-> Tensor: read-only views on the way in (a copy where the bytes are unaligned), one copy on the way out."""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from gradserve.proto import gradserve_pb2 as pb
from gradserve.proto.dtypes import BY_CODE, BY_NAME, BY_NUMPY

#: No array holds more bytes than numpy can index.
_MAX_BYTES = np.iinfo(np.intp).max


class TensorError(ValueError):
    """A Tensor message that does not describe a valid array."""


def dtype_code(dtype) -> int:
    """The DType enum value for a numpy dtype (or dtype name)."""
    try:
        return BY_NAME[np.dtype(dtype).name].code
    except (KeyError, TypeError):
        raise TensorError(f"dtype {dtype} is not supported; use one of {', '.join(BY_NAME)}") from None


def numpy_dtype(code: int, name: str | None = None) -> np.dtype:
    """The numpy dtype for a DType enum value; raise TensorError (naming ``name``) for an unknown one."""
    row = BY_CODE.get(code)
    if row is None:
        where = f"{name}: " if name else ""
        raise TensorError(f"{where}unknown dtype code {code}; use one of {', '.join(pb.DType.keys()[1:])}")
    return row.numpy


def dtype_name(code: int) -> str:
    """The numpy name of a DType enum value ("float32")."""
    return numpy_dtype(code).name


def element_count(shape, itemsize: int, name: str) -> int:
    """The number of elements of ``shape``; raise TensorError naming ``name`` when a dimension is negative or
    the array would hold more bytes than any array can (every reader of tensors checks shapes here: gradserve.v1,
    RunStream, KServe)."""
    shape = tuple(shape)
    if any(d < 0 for d in shape):
        raise TensorError(f"{name}: shape {list(shape)} has a negative dimension")
    count = math.prod(shape)
    if count * itemsize > _MAX_BYTES:
        raise TensorError(f"{name}: shape {list(shape)} has {count} elements, more than any array can hold")
    return count


def native_array(array) -> tuple[np.ndarray, int]:
    """``array`` (anything np.asarray takes) as a little-endian array, and its DType code."""
    array = np.asarray(array)
    row = BY_NUMPY.get(array.dtype)  # fast path: a native little-endian dtype
    if row is not None:
        return array, row.code
    code = dtype_code(array.dtype)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return array, code


def to_tensor(array, out: pb.Tensor | None = None) -> pb.Tensor:
    """Serialize an array (anything np.asarray takes) into ``out`` or a new Tensor."""
    array, code = native_array(array)
    out = pb.Tensor() if out is None else out
    out.dtype = code
    if array.ndim:
        out.shape[:] = array.shape
    elif out.shape:  # a scalar has no shape: set nothing unless ``out`` had one (an empty set costs half a µs)
        del out.shape[:]
    out.data = array.tobytes(order="C")  # the one copy
    return out


def from_tensor(tensor: pb.Tensor, name: str = "tensor") -> np.ndarray:
    """A read-only numpy view of the Tensor's bytes (a copy when they are unaligned); raise TensorError naming
    ``name`` when they disagree."""
    row = BY_CODE.get(tensor.dtype)
    dtype = row.numpy if row is not None else numpy_dtype(tensor.dtype, name)
    shape = tuple(tensor.shape[:])  # a repeated field's slice is a list, made in C: half the cost of tuple(field)
    data = tensor.data  # every read of a bytes field copies it out of the message: read it once
    count = math.prod(shape)
    if count * dtype.itemsize != len(data):
        element_count(shape, dtype.itemsize, name)  # a negative or overflowing dimension says so first
        raise TensorError(
            f"{name}: {len(data)} bytes do not match shape {list(shape)} of {dtype.name} "
            f"({count} elements x {dtype.itemsize} bytes = {count * dtype.itemsize})"
        )
    try:
        # One call instead of frombuffer + reshape (0.2 µs against 0.5: it counts for a Run of tiny tensors);
        # a view of the buffer, read-only as the buffer is.
        array = np.ndarray(shape, dtype, data)
    except (ValueError, TypeError) as exc:  # more dimensions than numpy allows, or a size it cannot index
        element_count(shape, dtype.itemsize, name)
        raise TensorError(f"{name}: shape {list(shape)} is not a valid array shape: {exc}") from None
    # Bytes read in place from a message (proto/wire.py) may start at any offset: numpy's loops and BLAS run
    # slower on unaligned elements than one copy costs.
    if not array.flags.aligned:
        array = array.copy()
        array.flags.writeable = False  # like every array read from a message
    return array


def to_tensor_map(arrays: Mapping[str, np.ndarray], out) -> None:
    """Fill a protobuf map<string, Tensor> field from named arrays."""
    for name, array in arrays.items():
        to_tensor(array, out[name])


def from_tensor_map(tensors, what: str = "tensor") -> dict[str, np.ndarray]:
    if not tensors:  # most maps of a response are empty (values, value_grads): skip making an iterator
        return {}
    arrays = {}
    for name, tensor in tensors.items():
        try:
            arrays[name] = from_tensor(tensor)
        except TensorError:
            from_tensor(tensor, f"{what} {name!r}")  # fails again, naming the tensor (built only when needed)
            raise
    return arrays
