"""Layer objects whose forward/backward run on a server: the chapter's two-step API, remotely.

Every layer of a client rides one Session stream per thread (client/session_stream.py): a forward is one
message and its answer, the pass kept on the server under the layer's own number until its backward.
"""

from __future__ import annotations

import itertools
import weakref

import numpy as np

from gradserve.client.graph import Graph
from gradserve.client.session_stream import layer_stream
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
        self._pass_id = next(_PASS_IDS) & 0xFFFFFFFF  # the number this layer's pass has on its stream
        self._kept = [None]  # the stream that keeps this layer's forward pass, if one does
        self._scalar = False
        self._graphs: dict[tuple, Graph] = {}
        # a layer collected between forward and backward: its stream releases the pass with its next step
        weakref.finalize(self, _forget, self._kept, self._pass_id)

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
        stream = layer_stream(self.client)
        if self._kept[0] is not None and self._kept[0] is not stream:
            self.release()  # kept on another thread's stream: drop it there
        # send_changes: a layer's parameters go again with every forward; unchanged, or changed in a few
        # elements (a numerical gradient), only the changes travel
        outputs = stream.forward(feeds, graph=self._graph(), pass_id=self._pass_id, training=self.training,
                                 seed=self.seed, send_changes=True)
        self._kept[0] = stream
        outs = tuple(self._plain(outputs[name]) for name in self.schema.outputs)
        return outs[0] if len(outs) == 1 else outs

    def backward(self, *douts):
        stream = self._kept[0]
        if stream is None:
            raise RuntimeError(f"{self.schema.name}.backward() called before forward()")
        seeds = {name: np.asarray(d) for name, d in zip(self.schema.outputs, douts) if d is not None}
        grads = stream.backward(seeds, wrt=list(self.schema.differentiable), pass_id=self._pass_id)
        self._kept[0] = None  # the server dropped the pass after backward
        return tuple(self._plain(grads[name]) if name in grads else None for name in self.schema.inputs)

    def release(self) -> None:
        stream, self._kept[0] = self._kept[0], None
        if stream is not None:
            stream.release(self._pass_id)

    def _plain(self, array: np.ndarray):
        return array.item() if self._scalar and array.ndim == 0 else array


_PASS_IDS = itertools.count(1)


def _forget(kept: list, pass_id: int) -> None:
    stream = kept[0]
    if stream is not None:
        stream.forget(pass_id)


def _as_feed(value, differentiable: bool) -> np.ndarray:
    array = np.asarray(value)
    if differentiable and array.dtype.kind in "iub":
        return array.astype(np.float64)
    return array


def make_layer_class(client, schema: pb.LayerSchema) -> type[RemoteLayer]:
    """A RemoteLayer subclass for ``schema`` bound to ``client``."""
    return type(schema.name, (RemoteLayer,), {"client": client, "schema": schema, "__doc__": schema.doc})
