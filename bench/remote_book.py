"""The book's ch05 gradient check (TwoLayerNet of layer objects, numerical_gradient) over any layer classes.

Re-typed in our own words from the chapter: ``TwoLayerNet(layers, ...)`` builds Affine, Relu, Affine and
SoftmaxWithLoss from ``layers`` (a module such as gradserve.client.book, or bench.book for plain numpy), and
``numerical_gradient`` perturbs one parameter element at a time by ±h as the chapter does. ``UnaryLayers``
are the book classes as gradserve's remote layers were before the Session stream: a unary Forward (a session
kept on the server) per forward and a unary Backward per backward: the baseline of the stream's row.
"""

from __future__ import annotations

import types
from collections import OrderedDict

import numpy as np

import gradserve.client as gs


class TwoLayerNet:
    def __init__(self, layers, input_size: int, hidden_size: int, output_size: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.params = {"W1": 0.01 * rng.standard_normal((input_size, hidden_size)), "b1": np.zeros(hidden_size),
                       "W2": 0.01 * rng.standard_normal((hidden_size, output_size)), "b2": np.zeros(output_size)}
        self.layers = OrderedDict(Affine1=layers.Affine(self.params["W1"], self.params["b1"]), Relu1=layers.Relu(),
                                  Affine2=layers.Affine(self.params["W2"], self.params["b2"]))
        self.last_layer = layers.SoftmaxWithLoss()

    def predict(self, x):
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def loss(self, x, t):
        return self.last_layer.forward(self.predict(x), t)

    def gradient(self, x, t) -> dict[str, np.ndarray]:
        self.loss(x, t)
        dout = self.last_layer.backward(1)
        for layer in reversed(self.layers.values()):
            dout = layer.backward(dout)
        return {"W1": self.layers["Affine1"].dW, "b1": self.layers["Affine1"].db,
                "W2": self.layers["Affine2"].dW, "b2": self.layers["Affine2"].db}


def numerical_gradient(f, x: np.ndarray, elements: int | None = None, h: float = 1e-4) -> np.ndarray:
    """Central differences of ``f()`` for the first ``elements`` elements of ``x`` (all when None), in place."""
    grad = np.zeros_like(x)
    flat, out = x.reshape(-1), grad.reshape(-1)
    for index in range(flat.size if elements is None else min(elements, flat.size)):
        kept = flat[index]
        flat[index] = kept + h
        above = f()
        flat[index] = kept - h
        below = f()
        flat[index] = kept
        out[index] = (above - below) / (2 * h)
    return grad


def gradient_check(net: TwoLayerNet, x, t, elements: int | None = None) -> dict[str, float]:
    """The chapter's check: mean |numerical - backprop| per parameter, over the first ``elements`` of each."""
    backprop = net.gradient(x, t)
    diffs = {}
    for name, param in net.params.items():
        numerical = numerical_gradient(lambda: net.loss(x, t), param, elements)
        count = param.size if elements is None else min(elements, param.size)
        diffs[name] = float(np.mean(np.abs(numerical.reshape(-1)[:count] - backprop[name].reshape(-1)[:count])))
    return diffs


def loss_evaluations(net: TwoLayerNet, elements: int | None = None) -> int:
    """How many loss evaluations ``gradient_check`` makes (two per element checked)."""
    return sum(2 * (p.size if elements is None else min(elements, p.size)) for p in net.params.values())


class _UnaryLayer:
    """One layer node per forward (a unary Forward keeping a session), and a unary Backward for its gradients."""

    def __init__(self, client: gs.Client, op: str):
        self.client = client
        self.op = op
        self.schema = client.list_layers()[op]
        g = gs.Graph()
        outs = g.node(op, *[g.input(name) for name in self.schema.inputs], name="layer",
                      n_outputs=len(self.schema.outputs))
        for name, value in zip(self.schema.outputs, outs if isinstance(outs, tuple) else (outs,)):
            g.output(value, name)
        self.graph = g
        self.session = None

    def forward(self, *inputs):
        feeds = {name: np.asarray(x, np.float64) if name in self.schema.differentiable else np.asarray(x)
                 for name, x in zip(self.schema.inputs, inputs)}
        if self.session is not None:
            self.session.release()
        self.session = self.client.forward(self.graph, feeds)
        return self.session.outputs[self.schema.outputs[0]]

    def backward(self, dout):
        grads = self.session.backward({self.schema.outputs[0]: np.asarray(dout)},
                                      wrt=list(self.schema.differentiable))
        self.session = None
        return tuple(grads.get(name) for name in self.schema.inputs)


def unary_layers(client: gs.Client):
    """Affine, Relu and SoftmaxWithLoss with the book's interface over unary Forward/Backward calls."""

    class Affine:
        def __init__(self, W, b):
            self.W, self.b, self.dW, self.db = W, b, None, None
            self._layer = _UnaryLayer(client, "Affine")

        def forward(self, x):
            return self._layer.forward(x, self.W, self.b)

        def backward(self, dout):
            dx, self.dW, self.db = self._layer.backward(dout)
            return dx

    class Relu:
        def __init__(self):
            self._layer = _UnaryLayer(client, "Relu")

        def forward(self, x):
            return self._layer.forward(x)

        def backward(self, dout):
            return self._layer.backward(dout)[0]

    class SoftmaxWithLoss:
        def __init__(self):
            self._layer = _UnaryLayer(client, "SoftmaxWithLoss")

        def forward(self, x, t):
            return float(self._layer.forward(x, t))

        def backward(self, dout=1):
            return self._layer.backward(dout)[0]

    return types.SimpleNamespace(Affine=Affine, Relu=Relu, SoftmaxWithLoss=SoftmaxWithLoss)
