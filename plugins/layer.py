"""The Layer base class: a layer's schema, its attributes, and the forward/backward contract."""

from __future__ import annotations

import keyword
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

ATTR_TYPES = ("int", "float", "bool", "str", "ints", "floats")
REQUIRED: Any = type("Required", (), {"__repr__": lambda self: "REQUIRED"})()
_RESERVED = frozenset({"name", "inputs", "outputs", "attributes", "differentiable", "doc",
                       "training", "seed", "rng", "needs_input_grad", "forward", "backward"})


class SchemaError(ValueError):
    """A layer class or its attributes do not follow the Layer contract."""


@dataclass(frozen=True)
class Attr:
    """One attribute of a layer: its type (one of ATTR_TYPES), default and a short doc.

    A default of ``REQUIRED`` makes the attribute mandatory; a default of ``None``
    makes it optional with "unset" meaning something the doc explains.
    """

    type: str
    default: Any = REQUIRED
    doc: str = ""

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def coerce(self, value: Any) -> Any:
        """Return ``value`` in this attribute's canonical form, or raise ``TypeError``."""
        if value is None and self.default is None:
            return None
        kind = self.type
        if kind == "bool":
            if isinstance(value, (bool, np.bool_)):
                return bool(value)
        elif kind == "int":
            if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
                return int(value)
        elif kind == "float":
            if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
                return float(value)
        elif kind == "str":
            if isinstance(value, str):
                return value
        elif kind in ("ints", "floats"):
            item = Attr(kind[:-1])
            items = value if isinstance(value, (list, tuple)) else (value,)
            try:
                return tuple(item.coerce(v) for v in items)
            except TypeError:
                pass
        raise TypeError(f"expected {kind}, got {type(value).__name__} {value!r}")


class Layer:
    """Base class of every layer.

    A subclass declares its schema as class attributes and implements
    ``forward`` and ``backward``. One instance serves one node for one
    forward/backward pass, so ``forward`` may keep on ``self`` what
    ``backward`` needs (as the book's ``MulLayer`` does).

    - ``inputs``: names of forward's positional arguments, in order.
    - ``outputs``: names of what forward returns (one array, or a tuple when
      there are several).
    - ``attributes``: ``{name: Attr(type, default, doc)}``; values arrive as
      instance attributes (``self.axis``) before forward runs.
    - ``differentiable``: the inputs that take a gradient (default: all).
    - ``name``: the op name clients use (default: the class name).
    - The first line of the class docstring is the layer's one-line doc.

    ``backward(*douts)`` receives one gradient per output (``None`` for an
    output that received none) and returns a tuple with one gradient per input,
    each of that input's shape, ``None`` for inputs that take no gradient.
    Layers never mutate their inputs or douts: they may be read-only views of
    request bytes and may be shared between nodes.

    ``self.training`` says whether the request is a training pass, and
    ``self.rng`` is a numpy Generator seeded from the request's seed and the
    node's position, for layers such as Dropout.

    ``self.needs_input_grad`` is None when every differentiable input's
    gradient will be used, else a tuple of one bool per input: backward may
    skip computing a gradient marked False and return None in its place (as
    Affine skips ``dx`` when x is a batch of data, not a parameter).
    """

    name: ClassVar[str]
    inputs: ClassVar[tuple[str, ...]] = ()
    outputs: ClassVar[tuple[str, ...]] = ("out",)
    attributes: ClassVar[dict[str, Attr]] = {}
    differentiable: ClassVar[tuple[str, ...] | None] = None

    training: bool = False
    seed: Any = None
    needs_input_grad: tuple[bool, ...] | None = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = cls.__name__

    def __init__(self, **attrs: Any) -> None:
        self.__dict__.update(attrs)

    @property
    def rng(self) -> np.random.Generator:
        rng = self.__dict__.get("_rng")
        if rng is None:
            rng = self.__dict__["_rng"] = np.random.default_rng(self.seed)
        return rng

    def forward(self, *inputs):
        raise NotImplementedError

    def backward(self, *douts):
        raise NotImplementedError

    # -- schema helpers, used by the registry, the engine and the conformance kit --

    @classmethod
    def doc(cls) -> str:
        text = (cls.__doc__ or "").strip()
        return text.splitlines()[0].strip() if text else ""

    @classmethod
    def differentiable_inputs(cls) -> tuple[str, ...]:
        return tuple(cls.inputs) if cls.differentiable is None else tuple(cls.differentiable)

    @classmethod
    def bind_attributes(cls, given: dict[str, Any]) -> dict[str, Any]:
        """Check ``given`` against the schema; return every attribute with defaults filled in.

        Raises ``SchemaError`` naming the attribute and what is expected.
        """
        unknown = sorted(set(given) - set(cls.attributes))
        if unknown:
            known = ", ".join(sorted(cls.attributes)) or "none"
            raise SchemaError(f"unknown attribute {unknown[0]!r} for {cls.name} (its attributes: {known})")
        bound = {}
        for attr_name, attr in cls.attributes.items():
            if attr_name in given:
                try:
                    bound[attr_name] = attr.coerce(given[attr_name])
                except TypeError as exc:
                    raise SchemaError(f"attribute {attr_name!r} of {cls.name}: {exc}") from None
            elif attr.required:
                raise SchemaError(f"attribute {attr_name!r} of {cls.name} is required ({attr.type})")
            else:
                bound[attr_name] = attr.default
        return bound

    @classmethod
    def validate_schema(cls) -> None:
        """Raise ``SchemaError`` saying what is wrong when the class breaks the contract."""
        if not isinstance(cls.name, str) or not cls.name.isidentifier() or keyword.iskeyword(cls.name):
            raise SchemaError(f"layer name {cls.name!r} is not an identifier")
        for field in ("inputs", "outputs"):
            names = getattr(cls, field)
            if not isinstance(names, tuple) or not all(isinstance(n, str) and n for n in names):
                raise SchemaError(f"{cls.name}.{field} must be a tuple of non-empty strings, got {names!r}")
            if len(set(names)) != len(names):
                raise SchemaError(f"{cls.name}.{field} repeats a name: {names!r}")
        if not cls.outputs:
            raise SchemaError(f"{cls.name}.outputs is empty: a layer returns at least one output")
        extra = set(cls.differentiable_inputs()) - set(cls.inputs)
        if extra:
            raise SchemaError(f"{cls.name}.differentiable names {sorted(extra)} that are not inputs")
        if not isinstance(cls.attributes, dict):
            raise SchemaError(f"{cls.name}.attributes must be a dict of name -> Attr")
        for attr_name, attr in cls.attributes.items():
            if not isinstance(attr, Attr) or attr.type not in ATTR_TYPES:
                raise SchemaError(f"{cls.name} attribute {attr_name!r} must be Attr(type) with type in {ATTR_TYPES}")
            if attr_name in _RESERVED or not attr_name.isidentifier():
                raise SchemaError(f"{cls.name} attribute name {attr_name!r} is reserved or not an identifier")
            if not attr.required:
                try:
                    attr.coerce(attr.default)
                except TypeError as exc:
                    raise SchemaError(f"{cls.name} attribute {attr_name!r} default: {exc}") from None
        for method in ("forward", "backward"):
            if getattr(cls, method) is getattr(Layer, method):
                raise SchemaError(f"{cls.name} does not implement {method}()")


def reduce_to_shape(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum ``grad`` over the axes numpy broadcasting added or stretched to reach ``shape``."""
    grad = np.asarray(grad)
    shape = tuple(shape)
    if grad.shape == shape:
        return grad
    lead = grad.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and grad.shape[lead + i] != 1
    )
    return grad.sum(axis=axes, keepdims=True).reshape(shape) if axes else grad.reshape(shape)


def describe(value) -> str:
    """What a layer returned, in a few words for an error message: ``float64[2, 3]``, ``a tuple of 2``, ``None``."""
    if isinstance(value, np.ndarray):
        return f"{value.dtype.name}{list(value.shape)}"
    if isinstance(value, tuple):
        return f"a tuple of {len(value)}"
    if value is None:
        return "None"
    return type(value).__name__
