"""The graphs and feeds every case runs, built with the client's Graph builder, and their in-process plans."""

from __future__ import annotations

import numpy as np

import gradserve.client as gs

MLP_PARAMS = ("W1", "b1", "W2", "b2")


def apple() -> tuple[gs.Graph, dict[str, np.ndarray]]:
    """The chapter's apple graph: price = apple * apple_num * tax."""
    g = gs.Graph("float64")
    apple_, num, tax = g.inputs("apple", "apple_num", "tax")
    g.output(g.Mul(g.Mul(apple_, num, name="apple_price"), tax, name="price"), "price")
    feeds = {"apple": 100.0, "apple_num": 2.0, "tax": 1.1}
    return g, {k: np.asarray(v) for k, v in feeds.items()}


def mlp(batch: int = 100, sizes=(784, 50, 10), dtype="float32", seed: int = 0):
    """The book's TwoLayerNet step (Affine, Relu, Affine, SoftmaxWithLoss) and a batch of feeds."""
    n_in, n_hidden, n_out = sizes
    g = gs.Graph(dtype)
    x, t, W1, b1, W2, b2 = g.inputs("x", "t", *MLP_PARAMS)
    g.output(g.SoftmaxWithLoss(g.Affine(g.Relu(g.Affine(x, W1, b1)), W2, b2), t), "loss")
    rng = np.random.default_rng(seed)
    feeds = {
        "x": rng.random((batch, n_in)).astype(dtype),
        "t": rng.integers(0, n_out, batch),
        "W1": (0.01 * rng.standard_normal((n_in, n_hidden))).astype(dtype),
        "b1": np.zeros(n_hidden, dtype),
        "W2": (0.01 * rng.standard_normal((n_hidden, n_out))).astype(dtype),
        "b2": np.zeros(n_out, dtype),
    }
    return g, feeds


def chain(n_nodes: int) -> tuple[gs.Graph, dict[str, np.ndarray]]:
    """A chain of alternating Mul and Add nodes on 1-element arrays, every node also reading parameter a."""
    g = gs.Graph("float64")
    value, a = g.inputs("x", "a")
    for i in range(n_nodes):
        value = g.Mul(value, a) if i % 2 == 0 else g.Add(value, a)
    g.output(value, "y")
    return g, {"x": np.array([0.5]), "a": np.array([1.0001])}


def relu(n_bytes: int) -> tuple[gs.Graph, dict[str, np.ndarray]]:
    """One Relu over a float32 vector of ``n_bytes``."""
    g = gs.Graph("float32")
    g.output(g.Relu(g.input("x")), "y")
    return g, {"x": np.random.default_rng(0).standard_normal(n_bytes // 4).astype(np.float32)}


def plan_of(graph: gs.Graph):
    """The server's execution plan for ``graph``, compiled in this process."""
    from gradserve.server.rpc.convert import graph_from_proto
    from gradserve.server.engine.plan import compile_graph
    from gradserve.server.service.registry import load_registry

    return compile_graph(graph_from_proto(graph.to_proto()), load_registry())
