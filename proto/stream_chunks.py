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
from gradserve.proto.streaming import CHUNK_BYTES, Assembler, SizeCheck, announce, data_chunks
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
    arrays = announce(message, tensors)
    yield wire.Encoded(message, message.SerializeToString())
    for piece in data_chunks(arrays, chunk_bytes):
        chunk = chunk_message(pb.TensorChunk(field=piece.field, name=piece.name, data=piece.data.tobytes()))
        yield wire.Encoded(chunk, chunk.SerializeToString())


def announced(tensors: Mapping[str, Mapping]) -> list[tuple[str, str]]:
    """(field, name) of every tensor whose data is to follow in chunks: elements announced, no data sent."""
    return [(field, name) for field, named in tensors.items() for name, tensor in named.items()
            if not len(tensor.data) and math.prod(tensor.shape) > 0]


def receive(tensors: dict[str, dict], next_chunk: Callable[[], pb.TensorChunk],
            check_sizes: SizeCheck | None = None) -> dict[str, dict[str, RawTensor]]:
    """``tensors`` (field -> name -> a received Tensor) with every announced tensor's data read from the chunks
    that ``next_chunk()`` returns (streaming.Assembler, as RunStream and the Session stream assemble them);
    TensorError when they do not fit what was announced."""
    if not announced(tensors):
        return tensors
    result = {field: dict(named) for field, named in tensors.items()}
    assembler = Assembler(result, check_sizes)
    while assembler.missing:
        assembler.add(next_chunk())
    return result
