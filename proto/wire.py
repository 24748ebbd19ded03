"""Messages with map<string, Tensor> fields on the wire, without protobuf's copies of the tensor bytes.

protobuf's Python runtime copies a bytes field on every set, serialize, parse and read: about four
copies of each tensor each way, which for megabytes of tensors cost more than the transport (and,
in a process with glibc's default malloc settings, each copy also faults in fresh pages). Here a
message's tensor maps travel beside it: ``encode`` serializes the rest with protobuf and appends the
map entries itself, copying each array's bytes once, straight from its buffer; ``decode`` reads the
entries itself and leaves each tensor's bytes where they arrived (``from_tensor`` then makes a
read-only view of them), and hands the rest to protobuf.

This is the protobuf encoding, not a new one: a map field is a repeated entry message
``{1: key, 2: value}`` and fields may come in any order, so every protobuf reader and writer
(grpcurl, other languages, older clients) sees the same message. ``decode`` reads the encoding any
writer produces; anything it does not expect (a value field repeated within one entry, groups,
malformed bytes) goes to protobuf's own parser, which then decides.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple

import numpy as np
from google.protobuf.message import Message

from gradserve.proto import gradserve_pb2 as pb
from gradserve.proto.tensors import native_array, to_tensor_map

_VARINT, _I64, LEN, _I32 = 0, 1, 2, 5
_FIXED_SIZE = {_I64: 8, _I32: 4}
_ENTRY_KEY = bytes([1 << 3 | LEN])  # map entry field 1 (key)
_ENTRY_VALUE = bytes([2 << 3 | LEN])  # map entry field 2 (value)
_TENSOR_DATA = bytes([3 << 3 | LEN])  # Tensor field 3 (data)


class RawTensor(NamedTuple):
    """A received Tensor whose ``data`` is a view of the message's bytes (what ``from_tensor`` reads)."""

    dtype: int
    shape: tuple[int, ...]
    data: memoryview


class Encoded:
    """A message serialized with its tensor maps; its other fields read through (for logs and interceptors)."""

    __slots__ = ("message", "data")

    def __init__(self, message: Message, data: bytes):
        self.message = message
        self.data = data

    def __getattr__(self, name: str):
        return getattr(self.message, name)


class Decoded:
    """A received message without its tensor maps, and those maps (field name -> {key: RawTensor})."""

    __slots__ = ("message", "tensors")

    def __init__(self, message: Message, tensors: dict[str, dict]):
        self.message = message
        self.tensors = tensors

    def __getattr__(self, name: str):
        return getattr(self.message, name)


def tensor_map_fields(message_type) -> dict[int, str]:
    """Field number -> name of every map<string, Tensor> field of ``message_type``."""
    fields = {}
    for field in message_type.DESCRIPTOR.fields:
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry and \
                entry.fields_by_name["value"].message_type is pb.Tensor.DESCRIPTOR:
            fields[field.number] = field.name
    return fields


#: Below this many tensor bytes protobuf's C code is faster than the copies it makes cost: it does the work.
SMALL_BYTES = 64 << 10


def tensor_bytes(tensors: Mapping[str, Mapping[str, np.ndarray]]) -> int:
    """Bytes of data in tensor maps (field name -> arrays); what is not an array yet counts as none."""
    return sum(getattr(a, "nbytes", 0) for arrays in tensors.values() for a in arrays.values())


def encode(message: Message, tensors: Mapping[str, Mapping[str, np.ndarray]], nbytes: int | None = None) -> Encoded:
    """``message`` serialized with the tensor map fields named in ``tensors`` (field name -> arrays);
    ``nbytes``: their ``tensor_bytes``, when the caller has it already."""
    if (tensor_bytes(tensors) if nbytes is None else nbytes) < SMALL_BYTES:
        return Encoded(message, _encode_small(message, tensors))
    fields = message.DESCRIPTOR.fields_by_name
    parts = [message.SerializeToString()]
    for field_name, arrays in tensors.items():
        tag = varint(fields[field_name].number << 3 | LEN)
        for name, array in arrays.items():
            array, code = native_array(array)
            nbytes = array.nbytes
            entry_head = _entry_head(name, code, array.shape, nbytes)
            parts += [tag, varint(len(entry_head) + nbytes), entry_head, _bytes_of(array)]
    return Encoded(message, b"".join(parts))  # the one copy of the tensor bytes


def _encode_small(message: Message, tensors: Mapping[str, Mapping[str, np.ndarray]]) -> bytes:
    """Small maps go into the message itself: protobuf's C code is faster than the hand writer for them."""
    for field_name, arrays in tensors.items():
        to_tensor_map(arrays, getattr(message, field_name))
    return message.SerializeToString()


def _entry_head(name: str, code: int, shape: tuple[int, ...], nbytes: int) -> bytes:
    """A map entry's bytes up to its tensor's data: the key, the value's tag and length, the Tensor's dtype and
    shape, and the data's tag and length."""
    key = name.encode()
    tensor_head = pb.Tensor(dtype=code, shape=shape).SerializeToString() + _TENSOR_DATA + varint(nbytes)
    return _ENTRY_KEY + varint(len(key)) + key + _ENTRY_VALUE + varint(len(tensor_head) + nbytes) + tensor_head


def serialize(encoded: Encoded) -> bytes:
    """The response serializer of a method that answers with ``encode``'s result."""
    return encoded.data


class Decoder:
    """``decode(data) -> Decoded`` for one message type; ``DESCRIPTOR`` names it (as a message class does)."""

    def __init__(self, message_type):
        self.message_type = message_type
        self.DESCRIPTOR = message_type.DESCRIPTOR
        self.fields = tensor_map_fields(message_type)

    def decode(self, data: bytes) -> Decoded:
        if len(data) < SMALL_BYTES:
            return self._decoded_by_protobuf(data)
        tensors: dict[str, dict] = {name: {} for name in self.fields.values()}
        try:
            rest = _split(data, self.fields, tensors)
        except Unexpected:  # let protobuf decide (and name the problem when the bytes are invalid)
            return self._decoded_by_protobuf(data)
        return Decoded(self.message_type.FromString(rest), tensors)

    def _decoded_by_protobuf(self, data: bytes) -> Decoded:
        message = self.message_type.FromString(data)
        return Decoded(message, {name: getattr(message, name) for name in self.fields.values()})


class Unexpected(Exception):
    """Bytes outside what the fast reader handles: protobuf's parser takes over."""


def _split(data: bytes, fields: dict[int, str], tensors: dict[str, dict]) -> bytes:
    """Read the tensor map entries of ``data`` into ``tensors``; return the bytes of every other field."""
    view = memoryview(data)
    rest = []
    position, end = 0, len(data)
    while position < end:
        start = position
        tag, position = read_varint(data, position)
        number, wire_type = tag >> 3, tag & 7
        if number in fields and wire_type == LEN:
            size, position = read_varint(data, position)
            if position + size > end:
                raise Unexpected
            key, tensor = _entry(data, view, position, position + size)
            tensors[fields[number]][key] = tensor
            position += size
        else:
            position = _skip(data, position, wire_type)
            rest.append(view[start:position])
    return b"".join(rest)


def _entry(data: bytes, view: memoryview, position: int, end: int) -> tuple[str, RawTensor]:
    key, value = b"", None
    while position < end:
        tag, position = read_varint(data, position)
        if tag == _ENTRY_KEY[0] or tag == _ENTRY_VALUE[0]:
            size, position = read_varint(data, position)
            if position + size > end:
                raise Unexpected
            if tag == _ENTRY_KEY[0]:
                key = view[position:position + size]
            elif value is None:
                value = (position, position + size)
            else:
                raise Unexpected  # protobuf merges a repeated message field
            position += size
        else:
            position = _skip(data, position, tag & 7, end)
    try:
        name = bytes(key).decode()
    except UnicodeDecodeError:
        raise Unexpected from None
    return name, _tensor(data, view, *(value or (end, end)))


_DTYPE_TAG, _SHAPE_PACKED, _SHAPE_ONE = 1 << 3 | _VARINT, 2 << 3 | LEN, 2 << 3 | _VARINT  # Tensor's other fields


def _tensor(data: bytes, view: memoryview, position: int, end: int) -> RawTensor:
    """A Tensor's fields, its data a view of ``data``; fields it does not know are skipped, as protobuf skips them."""
    dtype, shape, payload = 0, [], view[0:0]
    while position < end:
        tag, position = read_varint(data, position)
        if tag == _TENSOR_DATA[0]:
            size, position = read_varint(data, position)
            if position + size > end:
                raise Unexpected
            payload = view[position:position + size]  # a repeated bytes field: the last one counts
            position += size
        elif tag == _DTYPE_TAG:
            dtype, position = read_varint(data, position)
        elif tag == _SHAPE_PACKED:
            size, position = read_varint(data, position)
            stop = position + size
            if stop > end:
                raise Unexpected
            while position < stop:
                dim, position = read_varint(data, position)
                shape.append(dim)
            if position != stop:
                raise Unexpected
        elif tag == _SHAPE_ONE:  # an unpacked repeated field: also valid protobuf
            dim, position = read_varint(data, position)
            shape.append(dim)
        else:
            position = _skip(data, position, tag & 7, end)
    # int64 as protobuf writes it: a negative dimension arrives as a 64-bit two's complement
    return RawTensor(dtype, tuple(d - (1 << 64) if d >= 1 << 63 else d for d in shape), payload)


def read_varint(data: bytes, position: int) -> tuple[int, int]:
    if position < len(data) and data[position] < 0x80:  # one byte: every tag here, and most lengths
        return data[position], position + 1
    result = shift = 0
    while True:
        if position >= len(data) or shift > 63:
            raise Unexpected
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, position
        shift += 7


def _skip(data: bytes, position: int, wire_type: int, end: int | None = None) -> int:
    """The position after a field's value of ``wire_type`` that starts at ``position``."""
    end = len(data) if end is None else end
    if wire_type == _VARINT:
        _, position = read_varint(data, position)
    elif wire_type == LEN:
        size, position = read_varint(data, position)
        position += size
    elif wire_type in _FIXED_SIZE:
        position += _FIXED_SIZE[wire_type]
    else:  # groups, or not a wire type at all
        raise Unexpected
    if position > end:
        raise Unexpected
    return position


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _bytes_of(array: np.ndarray):
    """The array's bytes in C order, as a buffer (no copy when the array is already C-contiguous)."""
    flat = np.ascontiguousarray(array).reshape(-1)
    return flat.view(np.uint8) if flat.size else b""
