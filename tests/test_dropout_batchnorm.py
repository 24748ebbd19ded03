"""Dropout and BatchNormalization through the service: requests' training and seed reach the layers."""

import numpy as np

import gradserve.client as gs


def dropout_graph(ratio=0.5):
    g = gs.Graph(dtype="float64")
    g.output(g.Dropout(g.input("x"), ratio=ratio), "out")
    return g


def test_dropout_is_reproducible_with_a_request_seed(client, rng):
    """In training, the same seed drops the same units; another seed drops others, about `ratio` of them."""
    g, x = dropout_graph(0.3), rng.uniform(1, 2, (50, 40))
    first = client.run(g, {"x": x}, grad=False, training=True, seed=5).outputs["out"]
    again = client.run(g, {"x": x}, grad=False, training=True, seed=5).outputs["out"]
    other = client.run(g, {"x": x}, grad=False, training=True, seed=6).outputs["out"]
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    dropped = first == 0
    assert 0.25 < dropped.mean() < 0.35
    np.testing.assert_array_equal(first[~dropped], x[~dropped])


def test_dropout_outside_training_scales_like_the_book(client, rng):
    """Without training, Dropout keeps every unit and multiplies by (1 - ratio), as the book's train_flg=False."""
    x = rng.standard_normal((4, 5))
    result = client.run(dropout_graph(0.3), {"x": x}, seed_grads={"out": np.ones((4, 5))})
    np.testing.assert_allclose(result.outputs["out"], 0.7 * x)
    np.testing.assert_allclose(result.grads["x"], np.full((4, 5), 0.7))


def test_dropout_backward_uses_its_forwards_mask(client, rng):
    """Forward then Backward on a session: the gradient passes exactly where that forward kept units."""
    x = rng.uniform(1, 2, (6, 7))
    with client.forward(dropout_graph(), {"x": x}, training=True, seed=9) as session:
        kept = session.outputs["out"] != 0
        grads = session.backward({"out": np.ones_like(x)})
    np.testing.assert_array_equal(grads["x"], kept.astype(np.float64))


class BookBatchNormalization:
    """The book's BatchNormalization (common/layers.py), numpy only: the reference for the served layer."""

    def __init__(self, gamma, beta, momentum=0.9, running_mean=None, running_var=None):
        self.gamma, self.beta, self.momentum = gamma, beta, momentum
        self.running_mean, self.running_var = running_mean, running_var

    def forward(self, x, train_flg=True):
        if train_flg:
            mu = x.mean(axis=0)
            self.xc = x - mu
            var = np.mean(self.xc**2, axis=0)
            self.std = np.sqrt(var + 10e-7)
            self.xn = self.xc / self.std
            self.batch_size = x.shape[0]
            self.running_mean = self.momentum * self.running_mean + (1 - self.momentum) * mu
            self.running_var = self.momentum * self.running_var + (1 - self.momentum) * var
        else:
            self.xn = (x - self.running_mean) / np.sqrt(self.running_var + 10e-7)
        return self.gamma * self.xn + self.beta

    def backward(self, dout):
        dbeta = dout.sum(axis=0)
        dgamma = np.sum(self.xn * dout, axis=0)
        dxn = self.gamma * dout
        dxc = dxn / self.std
        dstd = -np.sum((dxn * self.xc) / (self.std * self.std), axis=0)
        dvar = 0.5 * dstd / self.std
        dxc += (2.0 / self.batch_size) * self.xc * dvar
        dmu = np.sum(dxc, axis=0)
        return dxc - dmu / self.batch_size, dgamma, dbeta


def batchnorm_graph():
    g = gs.Graph(dtype="float64")
    out, mean, var = g.BatchNormalization(*g.inputs("x", "gamma", "beta", "running_mean", "running_var"),
                                          n_outputs=3)
    g.output(out, "out")
    g.output(mean, "running_mean")
    g.output(var, "running_var")
    return g


def batchnorm_feeds(rng):
    return {"x": rng.standard_normal((8, 4)) * 3 + 1, "gamma": rng.uniform(0.5, 2, 4), "beta": rng.standard_normal(4),
            "running_mean": rng.standard_normal(4), "running_var": rng.uniform(0.5, 2, 4)}


def test_batchnorm_training_matches_the_book(client, rng):
    """In training: the book's output, updated running statistics and gradients dx, dgamma, dbeta."""
    feeds = batchnorm_feeds(rng)
    dout = rng.standard_normal((8, 4))
    result = client.run(batchnorm_graph(), feeds, grad=["x", "gamma", "beta"], seed_grads={"out": dout},
                        training=True)
    book = BookBatchNormalization(feeds["gamma"], feeds["beta"], 0.9, feeds["running_mean"], feeds["running_var"])
    np.testing.assert_allclose(result.outputs["out"], book.forward(feeds["x"], train_flg=True), atol=1e-12)
    np.testing.assert_allclose(result.outputs["running_mean"], book.running_mean, atol=1e-12)
    np.testing.assert_allclose(result.outputs["running_var"], book.running_var, atol=1e-12)
    for name, expected in zip(("x", "gamma", "beta"), book.backward(dout)):
        np.testing.assert_allclose(result.grads[name], expected, atol=1e-10, err_msg=name)


def test_batchnorm_inference_uses_the_running_statistics(client, rng):
    """Without training, the running statistics normalise x and come back unchanged."""
    feeds = batchnorm_feeds(rng)
    result = client.run(batchnorm_graph(), feeds, grad=False)
    book = BookBatchNormalization(feeds["gamma"], feeds["beta"], 0.9, feeds["running_mean"], feeds["running_var"])
    np.testing.assert_allclose(result.outputs["out"], book.forward(feeds["x"], train_flg=False), atol=1e-12)
    np.testing.assert_array_equal(result.outputs["running_mean"], feeds["running_mean"])
    np.testing.assert_array_equal(result.outputs["running_var"], feeds["running_var"])
