"""Layer objects whose forward/backward run on a server: the chapter's two-step API, remotely."""

from __future__ import annotations

import numpy as np

from gradserve.client.graph import Graph
from gradserve.proto import gradserve_pb2 as pb


class RemoteLayer:
    """One layer node on a server. ``forward(*inputs)`` keeps a session; ``backward(*douts)`` uses it.

    ``backward`` returns one gradient per input, ``None`` for inputs that take
    none. Python numbers come back as Python floats, arrays as arrays. Integer
    values passed to differentiable inputs are sent as float64, so that they
    get gradients as they do in the book's plain-Python layers.
    """

    client = None  # set by make_layer_class
    schema: pb.LayerSchema
    training = False  # sent with forward, for layers such as Dropout and BatchNormalization
    seed = None

    def __init__(self, **attrs):
        self.attrs = attrs
        self._session = None
        self._scalar = False
        self._graphs: dict[tuple, Graph] = {}

    def _graph(self) -> Graph:
        key = tuple(sorted((k, repr(v)) for k, v in self.attrs.items()))
        graph = self._graphs.get(key)
        if graph is None:
            graph = Graph(schemas={self.schema.name: self.schema})
            values = [graph.input(name) for name in self.schema.inputs]
            outs = graph.node(self.schema.name, *values, name="layer", **self.attrs)
            for name, value in zip(self.schema.outputs, outs if isinstance(outs, tuple) else (outs,)):
                graph.output(value, name)
            self._graphs[key] = graph
        return graph

    def forward(self, *inputs):
        if len(inputs) != len(self.schema.inputs):
            raise TypeError(f"{self.schema.name}.forward takes {len(self.schema.inputs)} inputs "
                            f"({', '.join(self.schema.inputs)}), got {len(inputs)}")
        self._scalar = all(np.ndim(x) == 0 and not isinstance(x, np.ndarray) for x in inputs)
        diff = set(self.schema.differentiable)
        feeds = {name: _as_feed(x, name in diff) for name, x in zip(self.schema.inputs, inputs)}
        self.release()
        self._session = self.client.forward(self._graph(), feeds, training=self.training, seed=self.seed)
        outs = tuple(self._plain(self._session.outputs[name]) for name in self.schema.outputs)
        return outs[0] if len(outs) == 1 else outs

    def backward(self, *douts):
        if self._session is None:
            raise RuntimeError(f"{self.schema.name}.backward() called before forward()")
        seeds = {name: np.asarray(d) for name, d in zip(self.schema.outputs, douts) if d is not None}
        grads = self._session.backward(seeds, wrt=list(self.schema.differentiable))
        self._session = None  # the server dropped it after backward
        return tuple(self._plain(grads[name]) if name in grads else None for name in self.schema.inputs)

    def release(self) -> None:
        if self._session is not None:
            self._session.release()
            self._session = None

    def _plain(self, array: np.ndarray):
        return array.item() if self._scalar and array.ndim == 0 else array


def _as_feed(value, differentiable: bool) -> np.ndarray:
    array = np.asarray(value)
    if differentiable and array.dtype.kind in "iub":
        return array.astype(np.float64)
    return array


def make_layer_class(client, schema: pb.LayerSchema) -> type[RemoteLayer]:
    """A RemoteLayer subclass for ``schema`` bound to ``client``."""
    return type(schema.name, (RemoteLayer,), {"client": client, "schema": schema, "__doc__": schema.doc})
