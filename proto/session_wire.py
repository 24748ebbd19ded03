"""The Session stream's messages on the wire: tensors as Run sends them (proto/wire.py), large ones in chunks.

A step or an answer whose tensors reach STREAM_BYTES announces them (dtype, shape, empty data) and sends
their bytes in messages that carry only a TensorChunk (field 3 of both SessionRequest and SessionResponse,
as of RunChunk), so the chunk reader and writer of proto/streaming.py serve both streams.
"""

from __future__ import annotations

import math
from typing import Iterable, Iterator, Mapping

import numpy as np
from google.protobuf.message import Message

from gradserve.proto import streaming, wire
from gradserve.proto.streaming import Assembler, DataChunk

#: A step's (or an answer's) tensors go in chunks from this many bytes on (the client's Run switches to
#: RunStream at the same size, for the same reason: whole-message buffers that big cost page faults).
STREAM_BYTES = 8 << 20
_CHUNK_FIRST_BYTE = bytes([3 << 3 | wire.LEN])  # a message whose one field is the chunk starts with its tag


def messages(message: Message, tensors: Mapping[str, Mapping[str, np.ndarray]],
             chunk_bytes: int = streaming.CHUNK_BYTES) -> tuple[object, Iterable[DataChunk]]:
    """What to send for ``message`` and its tensor maps (field -> arrays): the message, encoded with its
    tensors, and no chunks; or, from STREAM_BYTES on, the message announcing them and their DataChunks
    (made as they are sent)."""
    nbytes = wire.tensor_bytes(tensors)
    if nbytes < STREAM_BYTES:
        return wire.encode(message, tensors, nbytes), ()
    arrays = streaming.announce(message, tensors)
    return message, streaming.data_chunks(arrays, chunk_bytes)


def serialize(item) -> bytes:
    """The serializer of both directions: an encoded message, a DataChunk, or a plain protobuf message."""
    if type(item) is wire.Encoded:
        return item.data
    if type(item) is DataChunk:
        return streaming.serialize(item)
    return item.SerializeToString()


class Deserializer:
    """Bytes -> a DataChunk (viewing them in place) or a wire.Decoded message of ``message_type``."""

    def __init__(self, message_type):
        self.DESCRIPTOR = message_type.DESCRIPTOR  # names the message type in errors (server/rpc/undecodable.py)
        self._decode = wire.Decoder(message_type).decode

    def __call__(self, data: bytes):
        if data[:1] == _CHUNK_FIRST_BYTE:
            try:
                return streaming.data_chunk(data)
            except wire.Unexpected:
                pass
        return self._decode(data)


def announced(tensors: dict[str, dict]) -> bool:
    """Whether a received message announces tensors whose bytes follow in chunks (empty data, elements > 0)."""
    for named in tensors.values():
        for tensor in named.values():
            if not tensor.data and math.prod(tensor.shape) > 0:
                return True
    return False


def assemble(tensors: dict[str, dict], items: Iterator, check_sizes=None) -> dict[str, dict]:
    """The tensor maps of a message that announced them, each tensor's DataChunks read from ``items`` into
    one buffer (RawTensors over them); TensorError when the next items are not those chunks."""
    tensors = {field: dict(named.items()) for field, named in tensors.items()}
    assembler = Assembler(tensors, check_sizes)
    while assembler.missing > 0:
        item = next(items, None)
        if type(item) is not DataChunk:
            raise streaming.TensorError(f"{assembler.missing} bytes of announced tensors were still to come in "
                                        "chunks when another message (or the end of the stream) came")
        assembler.add(item)
    assembler.check_complete()
    return tensors
