"""Edge cases issue 14 found against torch: an empty batch in Affine, exact int64 constants, soft labels, Cast."""

from __future__ import annotations

import numpy as np
import pytest

import gradserve.client as gs


def test_affine_takes_an_empty_batch(client):
    """Affine of a (0, D) batch (or (0, C, H, W)) gives (0, M) outputs, a zero dW and db, and an empty dx."""
    rng = np.random.default_rng(0)
    g = gs.Graph(dtype="float64")
    g.output(g.Affine(*g.inputs("x", "W", "b")), "out")
    for x in (np.zeros((0, 6)), np.zeros((0, 2, 3))):
        feeds = {"x": x, "W": rng.standard_normal((6, 4)), "b": rng.standard_normal(4)}
        result = client.run(g, feeds, seed_grads={"out": np.zeros((0, 4))})
        assert result.outputs["out"].shape == (0, 4)
        assert result.grads["x"].shape == x.shape
        np.testing.assert_array_equal(result.grads["W"], np.zeros((6, 4)))
        np.testing.assert_array_equal(result.grads["b"], np.zeros(4))


@pytest.mark.parametrize("dtype", ["int64", "int32", "bool"])
def test_integer_constants_are_exact(client, dtype):
    """A graph's integer and bool constants come back exactly (2**53 + 1 too), in their dtype."""
    values = {"int64": [2**53 + 1, -(2**62) - 3, 7], "int32": [2**31 - 1, -(2**31), 5],
              "bool": [True, False, True]}[dtype]
    array = np.array(values, dtype=dtype)
    g = gs.Graph(dtype="float64")
    g.output(g.Identity(g.constant(array, dtype=dtype)), "out")
    out = client.run(g, {}, grad=False).outputs["out"]
    assert out.dtype == array.dtype
    np.testing.assert_array_equal(out, array)


def test_soft_labels_give_the_cross_entropy(client):
    """SoftmaxWithLoss of soft labels is -sum(t log softmax(x)) / N, not the loss of their argmax."""
    rng = np.random.default_rng(1)
    x, t = rng.standard_normal((5, 3)), rng.dirichlet(np.ones(3), size=5)
    g = gs.Graph(dtype="float64")
    g.output(g.SoftmaxWithLoss(*g.inputs("x", "t")), "loss")
    result = client.run(g, {"x": x, "t": t}, grad=["x"])
    log_y = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
    assert result.outputs["loss"] == pytest.approx(-(t * log_y).sum() / 5, rel=1e-12)
    np.testing.assert_allclose(result.grads["x"], (np.exp(log_y) - t) / 5, rtol=1e-12, atol=1e-15)


def test_a_round_trip_through_an_integer_cast_carries_no_gradient(client):
    """x cast to int64 and back is piecewise constant: its gradient is zero (torch's x.long().double() has none),
    while a float64 -> float32 -> float64 round trip passes the gradient through."""
    x = np.array([0.3, 1.7, -2.2])
    g = gs.Graph(dtype="float64")
    through_int = g.Cast(g.Cast(g.input("x"), to="int64"), to="float64")
    g.output(g.Cast(g.Cast(g.input("z"), to="float32"), to="float64") * g.constant(np.full(3, 2.0)), "wide")
    g.output(through_int * g.constant(np.full(3, 2.0)), "out")
    result = client.run(g, {"x": x, "z": x}, seed_grads={"out": np.ones(3), "wide": np.ones(3)})
    np.testing.assert_array_equal(result.outputs["out"], [0.0, 2.0, -4.0])
    np.testing.assert_array_equal(result.grads["x"], np.zeros(3))
    np.testing.assert_allclose(result.grads["z"], np.full(3, 2.0))
