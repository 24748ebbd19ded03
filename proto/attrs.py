"""Python values <-> AttrValue messages (shared by the server and the client)."""

from __future__ import annotations

from gradserve.proto import gradserve_pb2 as pb

_SCALAR_FIELDS = {"int": "i", "float": "f", "bool": "b", "str": "s"}


def attr_kind(value) -> str:
    """The attribute type a Python value encodes as: int, float, bool, str, ints or floats."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (list, tuple)):
        return "floats" if any(isinstance(v, float) for v in value) else "ints"
    if hasattr(value, "item"):  # numpy scalars
        return attr_kind(value.item())
    raise TypeError(f"cannot encode attribute value {value!r}: use a number, bool, str or a list of numbers")


def attr_to_proto(value, kind: str | None = None, out: pb.AttrValue | None = None) -> pb.AttrValue:
    """Encode ``value``; ``kind`` (a schema's type) settles int vs float lists where known."""
    out = pb.AttrValue() if out is None else out
    kind = kind or attr_kind(value)
    if kind in ("ints", "floats"):
        items = value if isinstance(value, (list, tuple)) else (value,)
        getattr(out, kind).values[:] = [int(v) if kind == "ints" else float(v) for v in items]
    else:
        setattr(out, _SCALAR_FIELDS[kind], value.item() if hasattr(value, "item") else value)
    return out


def attr_from_proto(value: pb.AttrValue):
    kind = value.WhichOneof("value")
    if kind in ("ints", "floats"):
        return tuple(getattr(value, kind).values)
    return None if kind is None else getattr(value, kind)
