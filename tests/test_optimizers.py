"""The book's optimizers: each update rule against updates computed by hand."""

import math

import numpy as np
import pytest

from gradserve.client.optimizers import SGD, AdaGrad, Adam, Momentum, Nesterov, RMSprop, make_optimizer


def params_and_grads(dtype="float64"):
    return ({"W": np.array([1.0, -2.0], dtype=dtype), "b": np.array([0.5], dtype=dtype)},
            {"W": np.array([0.5, -1.0], dtype=dtype), "b": np.array([2.0], dtype=dtype)})


def test_sgd_steps_against_the_gradient():
    """SGD: W <- W - lr * dW."""
    params, grads = params_and_grads()
    SGD(lr=0.1).update(params, grads)
    np.testing.assert_allclose(params["W"], [0.95, -1.9])
    np.testing.assert_allclose(params["b"], [0.3])


def test_sgd_default_learning_rate_is_the_books():
    """SGD's default lr is 0.01, Momentum's 0.01 and 0.9, AdaGrad's 0.01, Adam's 0.001, 0.9, 0.999."""
    assert SGD().lr == 0.01
    assert (Momentum().lr, Momentum().momentum) == (0.01, 0.9)
    assert AdaGrad().lr == 0.01
    assert (Adam().lr, Adam().beta1, Adam().beta2) == (0.001, 0.9, 0.999)


def test_momentum_keeps_a_velocity():
    """Momentum: v <- 0.9 v - lr dW; W <- W + v, over two steps."""
    params, grads = params_and_grads()
    opt = Momentum(lr=0.1, momentum=0.9)
    opt.update(params, grads)  # v = -0.1 * g = [-0.05, 0.1]
    np.testing.assert_allclose(params["W"], [0.95, -1.9])
    opt.update(params, grads)  # v = 0.9 * [-0.05, 0.1] - [0.05, -0.1] = [-0.095, 0.19]
    np.testing.assert_allclose(params["W"], [0.855, -1.71])
    np.testing.assert_allclose(opt.v["W"], [-0.095, 0.19])


def test_adagrad_divides_by_the_root_of_summed_squares():
    """AdaGrad: h <- h + dW^2; W <- W - lr dW / (sqrt(h) + 1e-7)."""
    params, grads = params_and_grads()
    opt = AdaGrad(lr=0.1)
    opt.update(params, grads)
    np.testing.assert_allclose(params["W"], [1.0 - 0.1 * 0.5 / (0.5 + 1e-7), -2.0 + 0.1 * 1.0 / (1.0 + 1e-7)])
    first = params["W"].copy()
    opt.update(params, grads)  # h = 2 dW^2
    np.testing.assert_allclose(params["W"], first - 0.1 * np.array([0.5, -1.0]) / (np.sqrt([0.5, 2.0]) + 1e-7))
    np.testing.assert_allclose(opt.h["b"], [8.0])


def test_nesterov_moves_by_the_books_look_ahead():
    """Nesterov: v <- 0.9 v - lr dW; W <- W + 0.81 v - 1.9 lr dW, over two steps."""
    params, grads = params_and_grads()
    opt = Nesterov(lr=0.1, momentum=0.9)
    opt.update(params, grads)  # v = [-0.05, 0.1]; W += 0.81 v - 0.19 g
    w1 = np.array([1.0, -2.0]) + 0.81 * np.array([-0.05, 0.1]) - 0.19 * np.array([0.5, -1.0])
    np.testing.assert_allclose(params["W"], w1)
    opt.update(params, grads)  # v = 0.9 [-0.05, 0.1] - [0.05, -0.1] = [-0.095, 0.19]
    np.testing.assert_allclose(params["W"], w1 + 0.81 * np.array([-0.095, 0.19]) - 0.19 * np.array([0.5, -1.0]))
    assert (Nesterov().lr, Nesterov().momentum) == (0.01, 0.9)


def test_rmsprop_forgets_old_squares():
    """RMSprop: h <- 0.99 h + 0.01 dW^2; W <- W - lr dW / (sqrt(h) + 1e-7), over two steps."""
    params, grads = params_and_grads()
    opt = RMSprop(lr=0.01)
    g = np.array([0.5, -1.0])
    opt.update(params, grads)
    h1 = 0.01 * g**2
    w1 = np.array([1.0, -2.0]) - 0.01 * g / (np.sqrt(h1) + 1e-7)
    np.testing.assert_allclose(params["W"], w1)
    opt.update(params, grads)
    h2 = 0.99 * h1 + 0.01 * g**2
    np.testing.assert_allclose(params["W"], w1 - 0.01 * g / (np.sqrt(h2) + 1e-7))
    np.testing.assert_allclose(opt.h["W"], h2)
    assert (RMSprop().lr, RMSprop().decay_rate) == (0.01, 0.99)


def test_adam_first_steps_match_the_books_formula():
    """Adam: m, v moments; lr_t = lr sqrt(1 - beta2^t) / (1 - beta1^t); W <- W - lr_t m / (sqrt(v) + 1e-7)."""
    params, grads = params_and_grads()
    opt = Adam(lr=0.01)
    opt.update(params, grads)
    g = np.array([0.5, -1.0])
    m1, v1 = 0.1 * g, 0.001 * g**2
    lr1 = 0.01 * math.sqrt(1 - 0.999) / (1 - 0.9)
    w1 = np.array([1.0, -2.0]) - lr1 * m1 / (np.sqrt(v1) + 1e-7)
    np.testing.assert_allclose(params["W"], w1)
    # The bias correction makes the first step lr in size, whatever the gradient's scale.
    np.testing.assert_allclose(np.abs(w1 - [1.0, -2.0]), [0.01, 0.01], rtol=1e-4)
    opt.update(params, grads)
    m2, v2 = m1 + 0.1 * (g - m1), v1 + 0.001 * (g**2 - v1)
    lr2 = 0.01 * math.sqrt(1 - 0.999**2) / (1 - 0.9**2)
    np.testing.assert_allclose(params["W"], w1 - lr2 * m2 / (np.sqrt(v2) + 1e-7))
    assert opt.iter == 2


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"])
def test_updates_are_in_place_and_keep_float32(name):
    """Every optimizer updates the caller's arrays in place and keeps float32 parameters float32."""
    params, grads = params_and_grads("float32")
    arrays = dict(params)
    before = {k: v.copy() for k, v in params.items()}
    make_optimizer(name, lr=0.1).update(params, grads)
    for key in params:
        assert params[key] is arrays[key]
        assert params[key].dtype == np.float32
        assert not np.array_equal(params[key], before[key])


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"])
def test_each_optimizer_descends_a_quadratic(name):
    """On f(w) = |w|^2 every optimizer brings w towards the minimum at 0."""
    params = {"w": np.array([3.0, -2.0])}
    opt = make_optimizer(name, lr=0.1)
    for _ in range(100):
        opt.update(params, {"w": 2 * params["w"]})
    assert np.linalg.norm(params["w"]) < 0.5 * np.linalg.norm([3.0, -2.0])


def test_unknown_optimizer_names_the_known_ones():
    """make_optimizer refuses an unknown name and lists the ones it knows."""
    with pytest.raises(ValueError, match="sgd, momentum, nesterov, adagrad, rmsprop, adam"):
        make_optimizer("lion")
