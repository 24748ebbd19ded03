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
from gradserve.proto.tensors import native_array

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
    offset = len(parts[0])  # bytes of the message so far
    for field_name, arrays in tensors.items():
        tag = varint(fields[field_name].number << 3 | LEN)
        for name, array in arrays.items():
            array, code = native_array(array)
            nbytes = array.nbytes
            entry_head = _aligned_entry_head(offset + len(tag), _entry_parts(name, code, array.shape, nbytes), nbytes)
            parts += [tag, varint(len(entry_head) + nbytes), entry_head, _bytes_of(array)]
            offset += len(tag) + len(parts[-3]) + len(entry_head) + nbytes
    return Encoded(message, b"".join(parts))  # the one copy of the tensor bytes


#: The bytes of a small tensor's map entry up to its data, by (message type, field, name, dtype code, shape):
#: the Runs of one graph send the same ones every time. With them an entry costs the array's bytes and a
#: join (2.4 µs for a tiny Run's four answers, against 6.5 through protobuf's message objects).
_SMALL_HEADS: dict[tuple, bytes] = {}
_SMALL_HEADS_MAX = 4096  # a bound for servers that see many names and shapes; past it the cache starts over


def _encode_small(message: Message, tensors: Mapping[str, Mapping[str, np.ndarray]]) -> bytes:
    descriptor = message.DESCRIPTOR
    parts = [message.SerializeToString()]
    for field_name, arrays in tensors.items():
        for name, array in arrays.items():
            array, code = native_array(array)
            key = (descriptor, field_name, name, code, array.shape)
            head = _SMALL_HEADS.get(key)
            if head is None:
                if len(_SMALL_HEADS) >= _SMALL_HEADS_MAX:
                    _SMALL_HEADS.clear()
                number = descriptor.fields_by_name[field_name].number
                entry_head = _entry_head(_entry_parts(name, code, array.shape, array.nbytes), array.nbytes)
                head = _SMALL_HEADS[key] = varint(number << 3 | LEN) + varint(len(entry_head) + array.nbytes) \
                    + entry_head
            parts.append(head)
            parts.append(array.tobytes())
    return b"".join(parts)


def _entry_parts(name: str, code: int, shape: tuple[int, ...], nbytes: int) -> tuple[bytes, bytes, bytes]:
    """A map entry's key and the tag of its value, its Tensor's fields before data, and data's tag and length."""
    key = name.encode()
    return (_ENTRY_KEY + varint(len(key)) + key + _ENTRY_VALUE,
            pb.Tensor(dtype=code, shape=shape).SerializeToString(), _TENSOR_DATA + varint(nbytes))


def _entry_head(parts: tuple[bytes, bytes, bytes], nbytes: int, pad: bytes = b"") -> bytes:
    """A map entry's bytes up to its tensor's data, with ``pad`` (a field the reader skips) before the data."""
    entry_key, tensor_head, data_head = parts
    return entry_key + varint(len(tensor_head) + len(pad) + len(data_head) + nbytes) + tensor_head + pad + data_head


#: Tensor data starts at a multiple of this many bytes into the message (Tensor's reserved field 15 pads):
#: the receiver's buffer is at least this aligned, so it reads every array in place (an unaligned one it
#: would copy).
ALIGN = 16
_PAD_TAG = bytes([15 << 3 | LEN])


def _aligned_entry_head(start: int, parts: tuple[bytes, bytes, bytes], nbytes: int) -> bytes:
    """A map entry's bytes up to its tensor data, padded so the data begins at a multiple of ALIGN
    (``start``: where the entry's length prefix begins in the message)."""
    entry_key, tensor_head, data_head = parts
    fixed = len(entry_key) + len(tensor_head) + len(data_head)

    def misalignment(pad_size: int) -> int:
        tensor_size = len(tensor_head) + pad_size + len(data_head) + nbytes
        head_size = fixed + _varint_size(tensor_size) + pad_size
        return (start + _varint_size(head_size + nbytes) + head_size) % ALIGN

    short = -misalignment(0) % ALIGN  # the padding needed, unless it changes a length prefix's size
    guess = short if short != 1 else short + ALIGN  # a pad field takes at least 2 bytes
    for pad_size in (guess, 0, *range(2, 2 * ALIGN + 2)):
        if misalignment(pad_size) == 0:
            pad = _PAD_TAG + varint(pad_size - 2) + bytes(pad_size - 2) if pad_size else b""
            return _entry_head(parts, nbytes, pad)
    return _entry_head(parts, nbytes)


def _varint_size(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


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
    """A Tensor's fields, its data a view of ``data``; fields it does not know are skipped (the padding)."""
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
