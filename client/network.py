"""The book's networks as gradserve graphs: parameters live in the client, one Run gives loss and gradients."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from gradserve.client.connection import Client, GradientCheck
from gradserve.client.graph import Graph

_LOGGER = logging.getLogger(__name__)

#: The activations a hidden layer may use, by the book's names.
ACTIVATIONS = {"relu": "Relu", "sigmoid": "Sigmoid"}


@dataclass
class TrainStep:
    """What one Run of the training graph returns: the loss, a gradient per parameter, the scores."""

    loss: float
    grads: dict[str, np.ndarray]
    scores: np.ndarray


def init_scale(weight_init_std, fan_in: int) -> float:
    """The book's weight_init_std: a number, 'he'/'relu' (sqrt(2/n)) or 'xavier'/'sigmoid' (sqrt(1/n))."""
    name = str(weight_init_std).lower()
    if name in ("he", "relu"):
        return float(np.sqrt(2.0 / fan_in))
    if name in ("xavier", "sigmoid"):
        return float(np.sqrt(1.0 / fan_in))
    try:
        return float(weight_init_std)
    except (TypeError, ValueError):
        raise ValueError(f"weight_init_std must be a number, 'he' or 'xavier', not {weight_init_std!r}") from None


class MultiLayerNet:
    """Affine -> activation, repeated, then Affine -> SoftmaxWithLoss: the book's MultiLayerNet, run remotely.

    ``params`` holds numpy arrays named W1, b1, W2, b2, ... that an optimizer
    updates in place. The training graph (inputs x, t and the parameters;
    outputs ``loss`` and ``scores``) and the prediction graph (x and the
    parameters; output ``scores``) are registered once; each step sends a batch
    and the parameters and gets the loss and every parameter's gradient back in
    one Run. ``client`` defaults to the one the book's layers use
    (GRADSERVE_TARGET, else an embedded server).
    """

    def __init__(self, input_size: int, hidden_size_list, output_size: int, activation: str = "relu",
                 weight_init_std=0.01, dtype="float32", seed: int | None = None, client: Client | None = None):
        if activation.lower() not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, not {activation!r}")
        self.sizes = [int(input_size), *(int(h) for h in hidden_size_list), int(output_size)]
        self.activation = ACTIVATIONS[activation.lower()]
        self.dtype = np.dtype(dtype)
        if self.dtype.kind != "f":
            raise ValueError(f"dtype must be a floating-point type, not {self.dtype}")
        self._setup(weight_init_std, seed, client)

    def _setup(self, weight_init_std, seed: int | None, client: Client | None) -> None:
        """Draw the parameters, build both graphs, register them with ``client`` when given.

        A subclass with other layers (the book's SimpleConvNet) sets its sizes and
        ``dtype``, overrides ``_init_params`` and ``_build``, then calls this.
        """
        self.params = self._init_params(weight_init_std, np.random.default_rng(seed))
        self.graph = self._build(training=True)
        self.predict_graph = self._build(training=False)
        self.client = client
        if client is not None:
            self.register(client)

    @property
    def param_names(self) -> list[str]:
        return list(self.params)

    def _init_params(self, weight_init_std, rng: np.random.Generator) -> dict[str, np.ndarray]:
        params = {}
        for i, (fan_in, fan_out) in enumerate(zip(self.sizes, self.sizes[1:]), start=1):
            scale = init_scale(weight_init_std, fan_in)
            params[f"W{i}"] = (scale * rng.standard_normal((fan_in, fan_out))).astype(self.dtype)
            params[f"b{i}"] = np.zeros(fan_out, dtype=self.dtype)
        return params

    def _build(self, training: bool) -> Graph:
        g = Graph(dtype=self.dtype.name)
        x = g.input("x", dtype=self.dtype, shape=[-1, self.sizes[0]])
        t = g.input("t") if training else None  # integer labels or one-hot rows
        params = {name: g.input(name, dtype=self.dtype, shape=array.shape) for name, array in self.params.items()}
        out = x
        n_affine = len(self.sizes) - 1
        for i in range(1, n_affine + 1):
            out = g.Affine(out, params[f"W{i}"], params[f"b{i}"], name=f"Affine{i}")
            if i < n_affine:
                out = g.node(self.activation, out, name=f"{self.activation}{i}")
        g.output(out, "scores")
        if training:
            g.output(g.SoftmaxWithLoss(out, t, name="SoftmaxWithLoss"), "loss")
        return g

    # -- the service --

    def register(self, client: Client | None = None) -> str:
        """Register both graphs with ``client`` (once); later Runs refer to them by id."""
        if client is not None:
            self.client = client
        client = self._client()
        client.register(self.predict_graph)
        graph_id = client.register(self.graph)
        _LOGGER.debug("registered %s as %s", self, graph_id)
        return graph_id

    def _client(self) -> Client:
        if self.client is None:
            from gradserve.client.book import get_client

            self.register(get_client())
        return self.client

    def feeds(self, x, t=None) -> dict[str, np.ndarray]:
        """The feeds of a Run: the parameters, x in the network's dtype, and the labels t when given."""
        feeds = dict(self.params)
        feeds.update(self.batch_feeds(x, t))
        return feeds

    def batch_feeds(self, x, t=None) -> dict[str, np.ndarray]:
        """The feeds of a Train stream's step: x in the network's dtype, and the labels t when given."""
        feeds = {"x": np.ascontiguousarray(x, dtype=self.dtype)}
        if t is not None:
            t = np.asarray(t)
            feeds["t"] = t if t.dtype.kind in "iu" else np.ascontiguousarray(t, dtype=self.dtype)
        return feeds

    def set_params(self, params) -> None:
        """Copy ``params`` (by name, e.g. a Trainer's) into this network's arrays, in place."""
        for name, array in self.params.items():
            array[...] = params[name]

    # -- training on the server --

    def trainer(self, optimizer: str = "adam", **kwargs):
        """A Train stream from this network's parameters: ``step(net.batch_feeds(x, t))`` -> loss."""
        return self._client().trainer(self.graph, self.params, optimizer, loss="loss", feeds=["x", "t"], **kwargs)

    def fit(self, x_train, t_train, *, epochs: int, optimizer="adam", batch_size: int = 100, **kwargs):
        """Train on the server (gradserve.client.training.fit): a History; ``self.params`` trained after it.

        ``kwargs``: the optimizer's settings (lr, ...) and fit's (x_test, t_test, seed, on_step, on_epoch)."""
        from gradserve.client.training import fit

        return fit(self, optimizer, x_train, t_train, epochs=epochs, batch_size=batch_size, **kwargs)

    @property
    def seed_grads(self) -> dict[str, np.ndarray]:
        """The output gradients a training Run sends: one for the loss (a batch of one has scalar scores too)."""
        return {"loss": np.ones((), dtype=self.dtype)}

    # -- the book's methods --

    def predict(self, x) -> np.ndarray:
        """The scores (before softmax) for a batch."""
        return self._client().run(self.predict_graph, self.feeds(x), grad=False).outputs["scores"]

    def loss(self, x, t) -> float:
        return float(self._client().run(self.graph, self.feeds(x, t), grad=False).outputs["loss"])

    def accuracy(self, x, t) -> float:
        return accuracy(self.predict(x), t)

    def forward_backward(self, x, t) -> TrainStep:
        """Loss, scores and the gradient of the loss for every parameter, in one Run."""
        result = self._client().run(self.graph, self.feeds(x, t), grad=self.param_names,
                                    seed_grads=self.seed_grads)
        return TrainStep(float(result.outputs["loss"]), result.grads, result.outputs["scores"])

    def gradient(self, x, t) -> dict[str, np.ndarray]:
        """The book's gradient(x, t): backprop gradients by parameter name."""
        return self.forward_backward(x, t).grads

    def trace(self, x, t):
        """One training Run that also returns every value and its gradient (for ``Result.to_dot()``)."""
        return self._client().run(self.graph, self.feeds(x, t), grad=self.param_names,
                                  seed_grads=self.seed_grads, trace=True)

    def gradient_check(self, x, t, eps: float = 1e-4) -> dict[str, GradientCheck]:
        """Numerical vs backprop gradients of every parameter, computed by the server (CheckGradients).

        As the chapter's gradient_check, use a few samples; in float64 the mean
        absolute differences are far below 1e-6.
        """
        return self._client().check_gradients(self.graph, self.feeds(x, t), wrt=self.param_names,
                                              seed_grads=self.seed_grads, eps=eps)

    def __repr__(self) -> str:
        sizes = "-".join(map(str, self.sizes))
        return f"{type(self).__name__}({sizes}, {self.activation}, {self.dtype.name})"


class TwoLayerNet(MultiLayerNet):
    """The chapter's TwoLayerNet: Affine1 -> Relu1 -> Affine2 -> SoftmaxWithLoss."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int, weight_init_std=0.01,
                 dtype="float32", seed: int | None = None, client: Client | None = None):
        super().__init__(input_size, [hidden_size], output_size, "relu", weight_init_std, dtype, seed, client)


def accuracy(scores: np.ndarray, t) -> float:
    """The fraction of rows whose highest score is the label (t: class indices or one-hot rows)."""
    t = np.asarray(t)
    if t.ndim != 1:
        t = t.argmax(axis=1)
    return float(np.mean(np.argmax(scores, axis=1) == t)) if len(t) else 0.0
