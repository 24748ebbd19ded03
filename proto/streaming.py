"""Tensors in chunks for RunStream: sent from each array's buffer, assembled into one preallocated buffer each."""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Mapping, NamedTuple

import numpy as np
from google.protobuf.message import Message

from gradserve.proto import gradserve_pb2 as pb
from gradserve.proto.tensors import TensorError, element_count, native_array, numpy_dtype
from gradserve.proto import wire
from gradserve.proto.wire import RawTensor

#: Bytes of tensor data per TensorChunk: big enough that the per-message cost of gRPC disappears, small
#: enough for any peer's default 4 MiB message limit and for the copies to stay in the CPU's caches.
CHUNK_BYTES = 1 << 20

#: Told (tensor name, element count) of each tensor announced by a first message, before its buffer is made.
SizeCheck = Callable[[Iterable[tuple[str, int]]], None]


def send(part: str, message: Message, tensors: Mapping[str, Mapping[str, np.ndarray]],
         chunk_bytes: int = CHUNK_BYTES) -> Iterator[pb.RunChunk]:
    """The RunChunks of ``message`` (``part``: "request" or "response") and its tensor maps (field -> arrays).

    Every array is checked and described in the first chunk now, so that an unsupported dtype raises here;
    the data chunks are made as the caller consumes them, one at a time.
    """
    arrays = announce(message, tensors)  # before RunChunk copies the message
    return _chunks(pb.RunChunk(**{part: message}), arrays, chunk_bytes)


def announce(message: Message, tensors: Mapping[str, Mapping[str, np.ndarray]]) -> list[tuple[str, str, object]]:
    """Put each array's dtype and shape, with empty data, into ``message``'s tensor maps (raising for an
    unsupported dtype); return (field, name, bytes) of those whose data is to follow in chunks."""
    arrays = []
    for field, named in tensors.items():
        target = getattr(message, field)
        for name, array in named.items():
            array, code = native_array(array)
            target[name].dtype = code
            target[name].shape[:] = array.shape
            if array.nbytes:
                arrays.append((field, name, np.ascontiguousarray(array).reshape(-1).view(np.uint8)))
    return arrays


def data_chunks(arrays, chunk_bytes: int = CHUNK_BYTES) -> Iterator[DataChunk]:
    """The DataChunks that carry ``announce``'s arrays."""
    for field, name, data in arrays:
        for start in range(0, data.size, chunk_bytes):
            yield DataChunk(field, name, data[start:start + chunk_bytes])


class DataChunk(NamedTuple):
    """A RunChunk that carries tensor bytes, kept out of protobuf (whose every set and read copies them)."""

    field: str
    name: str
    data: object  # a buffer: a slice of an array to send, or a view of the received message's bytes


def _chunks(first: pb.RunChunk, arrays, chunk_bytes: int) -> Iterator[pb.RunChunk | DataChunk]:
    yield first
    yield from data_chunks(arrays, chunk_bytes)


_CHUNK_TAG = 3 << 3 | wire.LEN  # RunChunk.chunk
_FIELD, _NAME, _DATA = (number << 3 | wire.LEN for number in (1, 2, 3))  # TensorChunk's fields


def serialize(chunk: pb.RunChunk | DataChunk) -> bytes:
    """RunStream's serializer, both ways: a DataChunk's bytes are copied once, into the message."""
    if isinstance(chunk, pb.RunChunk):
        return chunk.SerializeToString()
    head = pb.TensorChunk(field=chunk.field, name=chunk.name).SerializeToString()
    size = len(chunk.data)
    data_head = bytes([_DATA]) + wire.varint(size)
    inner = len(head) + len(data_head) + size
    return b"".join((bytes([_CHUNK_TAG]), wire.varint(inner), head, data_head, chunk.data))


def deserialize(data: bytes) -> pb.RunChunk | DataChunk:
    """RunStream's deserializer, both ways: a TensorChunk becomes a DataChunk viewing ``data`` in place."""
    try:
        return data_chunk(data)
    except wire.Unexpected:  # the first message, or an encoding this reader does not expect: protobuf decides
        chunk = pb.RunChunk.FromString(data)
        if chunk.WhichOneof("part") == "chunk":
            return DataChunk(chunk.chunk.field, chunk.chunk.name, chunk.chunk.data)
        return chunk


def data_chunk(data: bytes) -> DataChunk:
    """The DataChunk of a message whose one field is a TensorChunk numbered 3 (RunChunk's, and the Session
    stream's), viewing ``data`` in place; raise wire.Unexpected for any other message."""
    tag, position = wire.read_varint(data, 0)
    size, position = wire.read_varint(data, position) if tag == _CHUNK_TAG else (0, 0)
    if tag != _CHUNK_TAG or position + size != len(data):
        raise wire.Unexpected
    view = memoryview(data)
    fields = {_FIELD: b"", _NAME: b"", _DATA: view[0:0]}
    while position < len(data):
        tag, position = wire.read_varint(data, position)
        if tag not in fields:
            raise wire.Unexpected
        size, position = wire.read_varint(data, position)
        if position + size > len(data):
            raise wire.Unexpected
        fields[tag] = view[position:position + size]
        position += size
    try:
        return DataChunk(bytes(fields[_FIELD]).decode(), bytes(fields[_NAME]).decode(), fields[_DATA])
    except UnicodeDecodeError:
        raise wire.Unexpected from None


def receive(chunks: Iterable[pb.RunChunk], part: str, fields: Iterable[str],
            check_sizes: SizeCheck | None = None,
            reserve: Callable[[int], None] | None = None) -> tuple[Message, dict[str, dict[str, RawTensor]]]:
    """The first message (its tensor maps emptied) and those maps, each tensor's chunks assembled in place.

    ``check_sizes`` is told each announced tensor's element count, then ``reserve`` the bytes of the buffers
    about to be made for the chunks; either may raise to refuse them.

    Raise TensorError when the chunks do not fit what the first message announced.
    """
    chunks = iter(chunks)
    first = next(chunks, None)
    if not isinstance(first, pb.RunChunk) or first.WhichOneof("part") != part:
        raise TensorError(f"a RunStream starts with a RunChunk whose {part} is set")
    message = getattr(first, part)
    tensors: dict[str, dict[str, RawTensor]] = {}
    for field in fields:
        tensors[field] = dict(getattr(message, field).items())
        message.ClearField(field)
    assembler = Assembler(tensors, check_sizes, reserve)
    for chunk in chunks:
        if not isinstance(chunk, DataChunk):
            raise TensorError(f"a RunStream sends its {part} once, first; then only chunks")
        assembler.add(chunk)
    assembler.check_complete()
    return message, tensors


class Assembler:
    """Buffers for the tensors of a first message whose data is to follow (empty data, elements in the shape),
    filled in place by their chunks; ``tensors`` (field -> {name: tensor}) then hold RawTensors over them."""

    def __init__(self, tensors: dict[str, dict], check_sizes: SizeCheck | None = None,
                 reserve: Callable[[int], None] | None = None):
        """``check_sizes`` is told each announced tensor's element count, then ``reserve`` the bytes of the
        buffers about to be made for the chunks; either may raise to refuse them."""
        sizes = {}  # (field, name) -> (element count, item size)
        for field, named in tensors.items():
            for name, tensor in named.items():
                itemsize = numpy_dtype(tensor.dtype, repr(name)).itemsize
                sizes[field, name] = element_count(tensor.shape, itemsize, repr(name)), itemsize
        if check_sizes is not None:
            check_sizes((name, count) for (_, name), (count, _) in sizes.items())
        if reserve is not None:
            reserve(sum(count * itemsize for (field, name), (count, itemsize) in sizes.items()
                        if not tensors[field][name].data))
        self.buffers: dict[tuple[str, str], list] = {}  # (field, name) -> [buffer, bytes filled]
        for field, named in tensors.items():
            for name, tensor in named.items():
                data = tensor.data
                if not data:
                    count, itemsize = sizes[field, name]
                    buffer = np.empty(count * itemsize, np.uint8)
                    self.buffers[field, name] = [buffer, 0]
                    data = memoryview(buffer).toreadonly()
                named[name] = RawTensor(tensor.dtype, tuple(tensor.shape), data)
        self.missing = sum(buffer.size for buffer, _ in self.buffers.values())  # bytes still to come

    def add(self, chunk: DataChunk) -> None:
        slot = self.buffers.get((chunk.field, chunk.name))
        if slot is None:
            raise TensorError(f"a chunk for {chunk.field} {chunk.name!r}, which the first message does not "
                              "announce with empty data")
        buffer, filled = slot
        data = chunk.data
        if filled + len(data) > buffer.size:
            raise TensorError(f"{chunk.field} {chunk.name!r}: the chunks carry more than its {buffer.size} bytes")
        buffer[filled:filled + len(data)] = np.frombuffer(data, np.uint8)
        slot[1] = filled + len(data)
        self.missing -= len(data)

    def check_complete(self) -> None:
        for (field, name), (buffer, filled) in self.buffers.items():
            if filled != buffer.size:
                raise TensorError(f"{field} {name!r}: the chunks carried {filled} of its {buffer.size} bytes")
