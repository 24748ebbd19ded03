"""Build computational graphs offline: g = Graph(); x = g.input("x"); g.output(g.Mul(x, w), "y")."""

from __future__ import annotations

import inspect
import itertools
from typing import Mapping

import numpy as np

from gradserve.proto import gradserve_pb2 as pb
from gradserve.proto.attrs import attr_to_proto
from gradserve.proto.tensors import dtype_code

class Value:
    """A named value in a Graph: a graph input or a node's output. Supports + - * / @ and unary -."""

    __slots__ = ("graph", "name")
    __array_ufunc__ = None  # make numpy defer to our operators: np.float32(2) * value -> Value

    def __init__(self, graph: "Graph", name: str):
        self.graph = graph
        self.name = name

    def __repr__(self) -> str:
        return f"Value({self.name!r})"

    def _binary(self, op, other, reverse=False):
        other = self.graph.as_value(other)
        return self.graph.node(op, other, self) if reverse else self.graph.node(op, self, other)

    def __add__(self, other): return self._binary("Add", other)
    def __radd__(self, other): return self._binary("Add", other, reverse=True)
    def __sub__(self, other): return self._binary("Sub", other)
    def __rsub__(self, other): return self._binary("Sub", other, reverse=True)
    def __mul__(self, other): return self._binary("Mul", other)
    def __rmul__(self, other): return self._binary("Mul", other, reverse=True)
    def __truediv__(self, other): return self._binary("Div", other)
    def __rtruediv__(self, other): return self._binary("Div", other, reverse=True)
    def __matmul__(self, other): return self._binary("MatMul", other)
    def __rmatmul__(self, other): return self._binary("MatMul", other, reverse=True)
    def __neg__(self): return self.graph.node("Neg", self)


class Graph:
    """A computational graph under construction; any layer name is a method (``g.Relu(x)``).

    Numbers used with operators become Constant nodes of ``dtype`` (float32
    unless given), so that ``x * 2`` keeps float32 arithmetic.

    A graph means what it is built with, whichever server it is sent to later: a node has one output unless
    ``n_outputs=`` says otherwise, and attributes encode as their Python values' types. ``schemas`` (layer name
    -> LayerSchema, as ``client.graph()`` passes its server's) add the layers' output names, attribute types,
    docs and signatures to the builder methods.
    """

    def __init__(self, dtype: str = "float32", *, schemas: Mapping[str, pb.LayerSchema] | None = None):
        self.dtype = np.dtype(dtype).name
        self._schemas = dict(schemas or {})
        self._proto = pb.Graph()
        self._names: set[str] = set()
        self._counter = itertools.count(1)
        self.version = 0  # bumps on every change; clients cache graph ids per version

    # -- building --

    def input(self, name: str, dtype=None, shape=None) -> Value:
        """Declare a graph input (a feed or a parameter); dtype and shape (-1 = any) are optional checks."""
        self._claim(name)
        info = self._proto.inputs.add(name=name)
        if dtype is not None:
            info.dtype = dtype_code(dtype)
        if shape is not None:
            info.shape.dims[:] = list(shape)
        self.version += 1
        return Value(self, name)

    def inputs(self, *names: str, **kwargs) -> tuple[Value, ...]:
        return tuple(self.input(n, **kwargs) for n in names)

    def output(self, value: Value, name: str | None = None) -> Value:
        """Name ``value`` as a graph output (by default under its own name)."""
        self._own(value)
        self._proto.outputs.add(name=name or value.name, value=value.name)
        self.version += 1
        return value

    def node(self, op: str, *inputs, name: str | None = None, n_outputs: int | None = None, **attrs):
        """Add one node; returns its Value, or a tuple of Values for a multi-output layer."""
        name = name or f"{op.lower()}{next(self._counter)}"
        while name in self._names:
            name = f"{op.lower()}{next(self._counter)}"
        self._claim(name)
        schema = self._schemas.get(op)
        kinds = {a.name: a.type for a in schema.attributes} if schema else {}
        count = n_outputs or (len(schema.outputs) if schema else 1)
        labels = schema.outputs if schema and len(schema.outputs) == count else range(count)
        outs = [name] if count == 1 else [f"{name}:{label}" for label in labels]
        for value_name in outs:
            if value_name != name:
                self._claim(value_name)
        node = self._proto.nodes.add(name=name, op=op, outputs=outs)
        node.inputs.extend(self.as_value(v).name for v in inputs)
        for key, value in attrs.items():
            attr_to_proto(value, kinds.get(key), node.attrs[key])
        self.version += 1
        values = tuple(Value(self, v) for v in outs)
        return values[0] if count == 1 else values

    def constant(self, value, dtype=None) -> Value:
        array = np.asarray(value, dtype=dtype or (self.dtype if np.asarray(value).dtype.kind in "fiub" else None))
        if array.dtype.kind in "iub":  # exact: a float64 attribute would round integers above 2**53
            return self.node("Constant", value_ints=[int(v) for v in array.reshape(-1)], shape=list(array.shape),
                             dtype=array.dtype.name)
        return self.node("Constant", value=[float(v) for v in array.reshape(-1)], shape=list(array.shape),
                         dtype=array.dtype.name)

    def as_value(self, item) -> Value:
        if isinstance(item, Value):
            self._own(item)
            return item
        if isinstance(item, str):
            return Value(self, item)
        return self.constant(item)

    def __getattr__(self, op: str):
        if op.startswith("_") or not op[:1].isupper():
            raise AttributeError(op)

        def add(*inputs, name=None, **attrs):
            return self.node(op, *inputs, name=name, **attrs)

        add.__name__ = op
        schema = self._schemas.get(op)
        if schema is not None:
            add.__doc__ = _docstring(schema)
            add.__signature__ = _signature(schema)
        return add

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._schemas))

    # -- reading --

    def to_proto(self) -> pb.Graph:
        graph = pb.Graph()
        graph.CopyFrom(self._proto)
        return graph

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self._proto.inputs]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self._proto.outputs]

    def _claim(self, name: str) -> None:
        if name in self._names:
            raise ValueError(f"the name {name!r} is already used in this graph")
        self._names.add(name)

    def _own(self, value: Value) -> None:
        if value.graph is not self:
            raise ValueError(f"{value!r} belongs to another graph")


def _docstring(schema: pb.LayerSchema) -> str:
    lines = [schema.doc, "", f"Inputs: {', '.join(schema.inputs) or 'none'}; outputs: {', '.join(schema.outputs)}."]
    for attr in schema.attributes:
        lines.append(f"{attr.name} ({attr.type}{', required' if attr.required else ''}): {attr.doc}")
    lines.append(f"From plugin {schema.plugin} ({schema.distribution} {schema.version}).")
    return "\n".join(lines)


def _signature(schema: pb.LayerSchema) -> inspect.Signature:
    P = inspect.Parameter
    params = [P(n, P.POSITIONAL_ONLY) for n in schema.inputs]
    params.append(P("name", P.KEYWORD_ONLY, default=None))
    params += [P(a.name, P.KEYWORD_ONLY, default=P.empty if a.required else None) for a in schema.attributes]
    return inspect.Signature(params)

