"""The Layer base class: a layer's schema, its attributes, and the forward/backward contract."""

from __future__ import annotations

import keyword
import math
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np

ATTR_TYPES = ("int", "float", "bool", "str", "ints", "floats")
REQUIRED: Any = type("Required", (), {"__repr__": lambda self: "REQUIRED"})()
_RESERVED = frozenset({"name", "inputs", "outputs", "attributes", "differentiable", "doc",
                       "training", "seed", "rng", "needs_input_grad", "forward", "backward",
                       "output_types", "shape_from_values"})


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


class TensorType(NamedTuple):
    """A tensor's shape and numpy dtype: what a layer's ``output_types`` rule reads and returns.

    ``value`` is the tensor itself when it is known before the pass runs (a fed input, a small constant, a
    shape), for the rules of layers whose output shape depends on their inputs' values; else None.
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    value: np.ndarray | None = None


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

    ``output_types(*inputs)`` is the layer's shape rule: given each input's
    TensorType, the TensorType of each output, computed without touching any
    data, so the server refuses an output too large for its limits before
    forward allocates it. It raises ValueError for inputs forward would reject.
    A layer without one (it returns None) is sized only by running it; one whose
    shapes follow its inputs' values sets ``shape_from_values`` and reads
    ``TensorType.value`` (None when the value is not known in advance).
    """

    name: ClassVar[str]
    inputs: ClassVar[tuple[str, ...]] = ()
    outputs: ClassVar[tuple[str, ...]] = ("out",)
    attributes: ClassVar[dict[str, Attr]] = {}
    differentiable: ClassVar[tuple[str, ...] | None] = None

    #: Whether ``output_types`` reads its inputs' values (ConstantOfShape's shape): the server then checks
    #: every pass anew instead of once per input shapes.
    shape_from_values: ClassVar[bool] = False

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

    def output_types(self, *inputs: TensorType) -> tuple[TensorType, ...] | None:
        """Each output's shape and dtype from the inputs' alone (attributes set on self); None: unknown."""
        return None

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


def elementwise_types(layer: Layer, *inputs: TensorType) -> tuple[TensorType, ...]:
    """``output_types`` of a one-output layer whose output has its inputs' broadcast shape.

    The dtype is what forward gives on one-element arrays of the inputs' dtypes and ranks (cheap, and
    exactly numpy's promotion); a layer sets ``output_types = elementwise_types``.
    """
    shape = inputs[0].shape if len(inputs) == 1 else broadcast_shapes(*(i.shape for i in inputs))
    return (TensorType(shape, probe_dtypes(layer, *inputs)[0]),)


def broadcast_shapes(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    """numpy.broadcast_shapes in plain Python (a tenth of its cost on small shapes), the same ValueError."""
    ndim = max(map(len, shapes))
    out = []
    for axis in range(-ndim, 0):
        size = 1
        for shape in shapes:
            n = shape[axis] if -axis <= len(shape) else 1
            if n != 1:
                if size != 1 and n != size:
                    raise ValueError(f"shapes {', '.join(str(tuple(s)) for s in shapes)} do not broadcast "
                                     f"(axis {axis}: {size} and {n})")
                size = n
        out.append(size)
    return tuple(out)


def probe_dtypes(layer: Layer, *inputs: TensorType) -> tuple[np.dtype, ...]:
    """The dtype of each output of ``layer.forward`` on one-element arrays of the inputs' dtypes and ranks.

    Remembered per layer class, attributes, input dtypes and ranks: a graph of many like nodes probes once.
    """
    try:
        key = (type(layer), tuple(layer.__dict__.items()), tuple((len(i.shape), i.dtype) for i in inputs))
        known = _PROBED.get(key)
    except TypeError:  # an unhashable attribute: probe every time
        key, known = None, None
    if known is not None:
        return known
    with np.errstate(all="ignore"):
        result = layer.forward(*(np.ones((1,) * len(i.shape), i.dtype) for i in inputs))
    known = tuple(np.asarray(r).dtype for r in (result if isinstance(result, tuple) else (result,)))
    if key is not None:
        if len(_PROBED) >= _MAX_PROBED:
            _PROBED.clear()
        _PROBED[key] = known
    return known


_PROBED: dict = {}
_MAX_PROBED = 4096


def reshaped(size: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape numpy's reshape gives ``size`` elements for ``shape`` (one -1 inferred), or a ValueError."""
    if any(d < -1 for d in shape) or list(shape).count(-1) > 1:
        raise ValueError(f"cannot reshape to {list(shape)}: dimensions are >= 0, with at most one -1")
    known = math.prod(d for d in shape if d != -1)
    if -1 in shape:
        if known == 0 or size % known:
            raise ValueError(f"cannot reshape {size} elements into shape {list(shape)}")
        return tuple(size // known if d == -1 else d for d in shape)
    if known != size:
        raise ValueError(f"cannot reshape {size} elements into shape {list(shape)}")
    return tuple(shape)
def describe(value) -> str:
    """What a layer returned, in a few words for an error message: ``float64[2, 3]``, ``a tuple of 2``, ``None``."""
    if isinstance(value, np.ndarray):
        return f"{value.dtype.name}{list(value.shape)}"
    if isinstance(value, tuple):
        return f"a tuple of {len(value)}"
    if value is None:
        return "None"
    return type(value).__name__
