"""Large tensors of one message on a long-lived stream (Train): announced empty in the message, then chunks.

A message whose tensors reach ``STREAM_BYTES`` is sent with each tensor's dtype and shape but no data, then
followed by TensorChunk messages (``CHUNK_BYTES`` of one tensor's data each, every tensor's in order), as
RunStream does for a whole call; the receiver assembles them into one buffer per tensor and goes on with the
next message. Smaller messages carry their tensors inline (proto/wire.py's encoding).
"""

from __future__ import annotations

import math
from typing import Callable, Iterator, Mapping

import numpy as np
from google.protobuf.message import Message

from gradserve.proto import gradserve_pb2 as pb
from gradserve.proto import wire
from gradserve.proto.streaming import CHUNK_BYTES, SizeCheck
from gradserve.proto.tensors import TensorError, element_count, native_array, numpy_dtype
from gradserve.proto.wire import RawTensor

#: From this many tensor bytes on, a message's tensors follow it in chunks (Client.run's RunStream threshold:
#: past it each whole-message copy is fresh memory faulted in; chunks reuse warm buffers).
STREAM_BYTES = 8 << 20


def send(message: Message, tensors: Mapping[str, Mapping[str, np.ndarray]],
         chunk_message: Callable[[pb.TensorChunk], Message], stream_bytes: int = STREAM_BYTES,
         chunk_bytes: int = CHUNK_BYTES) -> Iterator[wire.Encoded]:
    """``message`` with its tensor maps (field -> arrays), inline or followed by ``chunk_message(chunk)``s."""
    nbytes = wire.tensor_bytes(tensors)
    if nbytes < stream_bytes:
        yield wire.encode(message, tensors, nbytes)
        return
    pending = []
    for field, arrays in tensors.items():
        target = getattr(message, field)
        for name, array in arrays.items():
            array, code = native_array(array)
            target[name].dtype = code
            target[name].shape[:] = array.shape
            if array.nbytes:
                pending.append((field, name, np.ascontiguousarray(array).reshape(-1).view(np.uint8)))
    yield wire.Encoded(message, message.SerializeToString())
    for field, name, data in pending:
        for start in range(0, data.size, chunk_bytes):
            piece = data[start:start + chunk_bytes].tobytes()
            chunk = chunk_message(pb.TensorChunk(field=field, name=name, data=piece))
            yield wire.Encoded(chunk, chunk.SerializeToString())


def announced(tensors: Mapping[str, Mapping]) -> list[tuple[str, str]]:
    """(field, name) of every tensor whose data is to follow in chunks: elements announced, no data sent."""
    return [(field, name) for field, named in tensors.items() for name, tensor in named.items()
            if not len(tensor.data) and math.prod(tensor.shape) > 0]


def receive(tensors: dict[str, dict], next_chunk: Callable[[], pb.TensorChunk],
            check_sizes: SizeCheck | None = None) -> dict[str, dict[str, RawTensor]]:
    """``tensors`` (field -> name -> a received Tensor) with every announced tensor's data read from the chunks
    that ``next_chunk()`` returns; TensorError when they do not fit what was announced."""
    waiting = announced(tensors)
    if not waiting:
        return tensors
    sizes = {}  # (field, name) -> (element count, item size), every tensor's checked before any buffer is made
    for field, named in tensors.items():
        for name, tensor in named.items():
            itemsize = numpy_dtype(tensor.dtype, repr(name)).itemsize
            sizes[field, name] = element_count(tensor.shape, itemsize, repr(name)), itemsize
    if check_sizes is not None:
        check_sizes((name, count) for (_, name), (count, _) in sizes.items())
    buffers: dict[tuple[str, str], list] = {}
    result = {field: dict(named) for field, named in tensors.items()}
    for field, name in waiting:
        tensor = tensors[field][name]
        count, itemsize = sizes[field, name]
        buffer = np.empty(count * itemsize, np.uint8)
        buffers[field, name] = [buffer, 0]
        result[field][name] = RawTensor(tensor.dtype, tuple(tensor.shape), memoryview(buffer).toreadonly())
    unfilled = len(buffers)
    while unfilled:
        chunk = next_chunk()
        slot = buffers.get((chunk.field, chunk.name))
        if slot is None:
            raise TensorError(f"a chunk for {chunk.field} {chunk.name!r}, which the last message does not announce "
                              "with empty data")
        buffer, filled = slot
        size = len(chunk.data)
        if filled + size > buffer.size:
            raise TensorError(f"{chunk.field} {chunk.name!r}: the chunks carry more than its {buffer.size} bytes")
        buffer[filled:filled + size] = np.frombuffer(chunk.data, np.uint8)
        slot[1] = filled + size
        if slot[1] == buffer.size:
            unfilled -= 1
    return result
