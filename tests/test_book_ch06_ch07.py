"""The book's ch06 and ch07 usage with gradserve.client.book's remote layers: the numbers of plain numpy.

Each test builds the same network twice from one definition (book_reference.py): once on the remote layers,
once on the numpy re-implementations, seeded alike, and compares losses, gradients and trained parameters.
"""

from __future__ import annotations

import numpy as np
import pytest

from gradserve.client import book
from book_reference import LOCAL, MultiLayerNetExtend, SimpleConvNet

TOL = {"rtol": 1e-6, "atol": 1e-9}


@pytest.fixture()
def remote(client):
    """gradserve.client.book's layers, on the test server."""
    book.set_client(client)
    yield book
    book.set_client(None)


def twins(make, seed=0):
    """(remote-layer network, numpy network), each built right after np.random.seed(seed)."""
    np.random.seed(seed)
    first = make(True)
    np.random.seed(seed)
    second = make(False)
    return first, second


def data(seed, n, shape, classes):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, *shape)), rng.integers(0, classes, size=n)


def assert_same_grads(got: dict, expected: dict, **tol):
    assert set(got) == set(expected)
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], err_msg=name, **(tol or TOL))


def test_batch_norm_gradient_check(remote):
    """ch06 batch_norm_gradient_check: BatchNorm net backprop equals central differences and the numpy net's."""
    x, t = data(1, 3, (6,), 3)
    t_onehot = np.eye(3)[t]
    net, ref = twins(lambda r: MultiLayerNetExtend(remote if r else LOCAL, 6, [5, 4], 3, use_batchnorm=True))
    backprop = net.gradient(x, t_onehot)
    assert_same_grads(backprop, ref.gradient(x, t_onehot))
    np.testing.assert_allclose(net.layers["BatchNorm1"].running_mean, ref.layers["BatchNorm1"].running_mean, **TOL)
    numerical = net.numerical_gradient(x, t_onehot)
    for name in backprop:
        assert np.abs(backprop[name] - numerical[name]).mean() < 1e-7, name


def test_multi_layer_net_extend_with_dropout_gradient_check(remote):
    """BatchNorm + Dropout: the client draws the book's masks, so backprop and central differences agree."""
    x, t = data(2, 4, (6,), 3)
    make = lambda r: MultiLayerNetExtend(remote if r else LOCAL, 6, [5, 5], 3, use_dropout=True,  # noqa: E731
                                         dropout_ratio=0.3, use_batchnorm=True, dropout_seed=7)
    net, ref = twins(make)
    backprop = net.gradient(x, t)
    assert_same_grads(backprop, ref.gradient(x, t))
    np.testing.assert_array_equal(net.layers["Dropout1"].mask, ref.layers["Dropout1"].mask)
    numerical = net.numerical_gradient(x, t)
    for name in backprop:
        assert np.abs(backprop[name] - numerical[name]).max() < 1e-6, name


def test_overfit_dropout_training_gives_the_numpy_numbers(remote):
    """ch06 overfit_dropout: seeded SGD with Dropout masks drawn per step gives numpy's losses and weights."""
    x, t = data(3, 20, (8,), 4)
    make = lambda r: MultiLayerNetExtend(remote if r else LOCAL, 8, [6, 6], 4, use_dropout=True,  # noqa: E731
                                         dropout_ratio=0.2, use_batchnorm=True)
    net, ref = twins(make)
    losses = {True: [], False: []}
    np.random.seed(11)
    state = np.random.get_state()
    for which, model in ((True, net), (False, ref)):
        np.random.set_state(state)  # both runs draw the same masks, step by step
        for step in range(5):
            batch = slice(4 * step, 4 * step + 4)
            grads = model.gradient(x[batch], t[batch])
            for name, p in model.params.items():
                p -= 0.1 * grads[name]  # in place, as the book's SGD: the layers hold the same arrays
            losses[which].append(model.loss(x, t, train_flg=False))
    np.testing.assert_allclose(losses[True], losses[False], **TOL)
    assert_same_grads(net.params, ref.params)
    assert losses[True][-1] < losses[True][0]


def test_simple_convnet_gradient_check(remote):
    """ch07 gradient_check: SimpleConvNet's backprop equals the numpy net's and central differences."""
    conv = {"filter_num": 3, "filter_size": 3, "pad": 0, "stride": 1}
    make = lambda r: SimpleConvNet(remote if r else LOCAL, input_dim=(1, 6, 6), conv_param=conv,  # noqa: E731
                                   hidden_size=5, output_size=4, weight_init_std=0.3)
    net, ref = twins(make, seed=5)
    x = np.random.rand(36).reshape(1, 1, 6, 6)
    t = np.array([1]).reshape(1, 1)  # the book's labels here: an index of shape (1, 1)
    backprop = net.gradient(x, t)
    assert_same_grads(backprop, ref.gradient(x, t))
    numerical = net.numerical_gradient(x, t)
    for name in backprop:
        assert np.abs(backprop[name] - numerical[name]).max() < 1e-6, name


def test_simple_convnet_train_steps_give_the_numpy_numbers(remote):
    """ch07 train_convnet, a few SGD steps on a padded net: the same losses and parameters as numpy's."""
    x, t = data(4, 12, (1, 8, 8), 3)
    conv = {"filter_num": 4, "filter_size": 3, "pad": 1, "stride": 1}
    make = lambda r: SimpleConvNet(remote if r else LOCAL, input_dim=(1, 8, 8), conv_param=conv,  # noqa: E731
                                   hidden_size=6, output_size=3, weight_init_std=0.1)
    net, ref = twins(make, seed=6)
    for model in (net, ref):
        for step in range(4):
            batch = slice(3 * step, 3 * step + 3)
            grads = model.gradient(x[batch], t[batch])
            for name, p in model.params.items():
                p -= 0.05 * grads[name]
    assert net.loss(x, t) == pytest.approx(ref.loss(x, t), rel=1e-6)
    assert_same_grads(net.params, ref.params)


def test_book_layers_keep_the_books_attributes(remote):
    """The attributes the book's code reads are there: .mask, .out, .dW/.db, .dgamma/.dbeta, running stats."""
    x = np.array([[1.0, -2.0], [-0.5, 3.0]])
    relu = remote.Relu()
    relu.forward(x)
    np.testing.assert_array_equal(relu.mask, x <= 0)
    sigmoid = remote.Sigmoid()
    np.testing.assert_allclose(sigmoid.forward(x), sigmoid.out)
    bn = remote.BatchNormalization(np.ones(2), np.zeros(2), momentum=0.5)
    bn.forward(x, train_flg=True)
    np.testing.assert_allclose(bn.running_mean, 0.5 * x.mean(axis=0))
    bn.backward(np.ones_like(x))
    assert bn.dgamma.shape == bn.dbeta.shape == (2,)
    before = bn.running_mean.copy()
    bn.forward(x, train_flg=False)
    np.testing.assert_array_equal(bn.running_mean, before)
    pool = remote.Pooling(2, 2)
    assert pool.stride == 1 and pool.forward(np.arange(9.0).reshape(1, 1, 3, 3)).shape == (1, 1, 2, 2)
    conv = remote.Convolution(np.ones((2, 1, 2, 2)), np.zeros(2), stride=1, pad=1)
    out = conv.forward(np.ones((1, 1, 3, 3)))
    conv.backward(np.ones_like(out))
    assert out.shape == (1, 2, 4, 4) and conv.dW.shape == (2, 1, 2, 2) and conv.db.shape == (2,)


def test_dropout_outside_training_scales(remote):
    """Dropout(0.3).forward(x, train_flg=False) is x * 0.7, as the book's; no mask is drawn."""
    np.random.seed(0)
    state = np.random.get_state()[1].copy()
    x = np.arange(6.0).reshape(2, 3)
    np.testing.assert_allclose(remote.Dropout(0.3).forward(x, train_flg=False), 0.7 * x)
    np.testing.assert_array_equal(np.random.get_state()[1], state)


@pytest.mark.parametrize("labels", ["index", "one-hot", "soft"])
def test_softmax_with_loss_labels_as_the_book(remote, labels):
    """SoftmaxWithLoss takes index, one-hot and soft labels; dx is (y - t) / N, as the book's backward."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((4, 3))
    index = np.array([0, 2, 1, 2])
    t = {"index": index, "one-hot": np.eye(3)[index], "soft": rng.dirichlet(np.ones(3), size=4)}[labels]
    layer, ref = remote.SoftmaxWithLoss(), LOCAL.SoftmaxWithLoss()
    assert layer.forward(x, t) == pytest.approx(ref.forward(x, t), rel=1e-12)
    dx = layer.backward()
    np.testing.assert_allclose(dx, ref.backward(), rtol=1e-12, atol=1e-15)
    y = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
    target = np.eye(3)[index] if labels == "index" else t
    np.testing.assert_allclose(dx, (y - target) / 4, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(layer.y, y, rtol=1e-12)
