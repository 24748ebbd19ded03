"""Networks built in the client and run by the service: graphs, initialisation, gradients, gradient check, training."""

import numpy as np
import pytest

from gradserve.client.demo import load_digits_split
from gradserve.client.network import MultiLayerNet, TwoLayerNet, accuracy, init_scale
from gradserve.client.optimizers import Adam
from gradserve.client.training import fit
from two_layer_reference import two_layer_net


def ops(graph):
    return [node.op for node in graph.to_proto().nodes]


def test_two_layer_net_is_the_chapters_graph(client):
    """TwoLayerNet builds Affine1 -> Relu1 -> Affine2 -> SoftmaxWithLoss, outputs loss and scores."""
    net = TwoLayerNet(4, 5, 3, client=client)
    assert ops(net.graph) == ["Affine", "Relu", "Affine", "SoftmaxWithLoss"]
    assert [n.name for n in net.graph.to_proto().nodes] == ["Affine1", "Relu1", "Affine2", "SoftmaxWithLoss"]
    assert sorted(net.graph.output_names) == ["loss", "scores"]
    assert net.graph.input_names == ["x", "t", "W1", "b1", "W2", "b2"]
    assert ops(net.predict_graph) == ["Affine", "Relu", "Affine"]
    assert {k: v.shape for k, v in net.params.items()} == {"W1": (4, 5), "b1": (5,), "W2": (5, 3), "b2": (3,)}
    assert all(v.dtype == np.float32 for v in net.params.values())
    assert not net.params["b1"].any() and not net.params["b2"].any()


def test_multi_layer_net_stacks_hidden_layers(client):
    """MultiLayerNet puts the activation between every pair of Affine layers."""
    net = MultiLayerNet(6, [5, 4], 3, activation="sigmoid", dtype="float64", client=client)
    assert ops(net.graph) == ["Affine", "Sigmoid", "Affine", "Sigmoid", "Affine", "SoftmaxWithLoss"]
    assert net.param_names == ["W1", "b1", "W2", "b2", "W3", "b3"]
    assert net.params["W3"].shape == (4, 3) and net.params["W3"].dtype == np.float64


@pytest.mark.parametrize("init, expected", [(0.01, 0.01), ("he", np.sqrt(2 / 400)), ("relu", np.sqrt(2 / 400)),
                                            ("xavier", np.sqrt(1 / 400)), ("sigmoid", np.sqrt(1 / 400))])
def test_weight_init_scales(init, expected, client):
    """Weights are normal with the book's std 0.01, He's sqrt(2/n) or Xavier's sqrt(1/n) for n inputs."""
    net = TwoLayerNet(400, 300, 10, weight_init_std=init, seed=0, client=client)
    assert net.params["W1"].std() == pytest.approx(expected, rel=0.02)
    assert abs(net.params["W1"].mean()) < 0.05 * expected


def test_bad_settings_are_refused():
    """An unknown init, activation or a non-float dtype is a ValueError naming the choices."""
    with pytest.raises(ValueError, match="'he' or 'xavier'"):
        init_scale("lecun", 10)
    with pytest.raises(ValueError, match="relu, sigmoid"):
        MultiLayerNet(2, [2], 2, activation="tanh")
    with pytest.raises(ValueError, match="floating-point"):
        TwoLayerNet(2, 2, 2, dtype="int32")


def test_same_seed_same_weights():
    """A seed fixes the initial weights."""
    a, b = TwoLayerNet(8, 4, 2, seed=3), TwoLayerNet(8, 4, 2, seed=3)
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)


def test_one_run_gives_loss_scores_and_gradients(client, rng):
    """forward_backward returns the loss, the scores and every parameter's gradient, as numpy computes them."""
    net = TwoLayerNet(6, 5, 3, dtype="float64", seed=1, client=client)
    x, t = rng.standard_normal((4, 6)), np.array([0, 2, 1, 2])
    step = net.forward_backward(x, t)
    loss, scores, grads = two_layer_net(net.params, x, t)
    assert step.loss == pytest.approx(loss, rel=1e-12)
    np.testing.assert_allclose(step.scores, scores, rtol=1e-12)
    assert set(step.grads) == {"W1", "b1", "W2", "b2"}
    for name, grad in step.grads.items():
        np.testing.assert_allclose(grad, grads[name], rtol=1e-10, atol=1e-14)
    assert net.gradient(x, t).keys() == step.grads.keys()


def test_float32_network_gets_float32_gradients(client, rng):
    """A float32 network sends float32 feeds and gets float32 gradients back."""
    net = TwoLayerNet(6, 5, 3, seed=1, client=client)
    step = net.forward_backward(rng.standard_normal((4, 6)), np.array([0, 2, 1, 2]))
    assert all(g.dtype == np.float32 for g in step.grads.values())
    assert step.scores.dtype == np.float32


def test_predict_loss_and_accuracy(client, rng):
    """predict gives the scores without labels; loss and accuracy agree with numpy; one-hot labels work too."""
    net = TwoLayerNet(6, 5, 3, dtype="float64", seed=2, client=client)
    x, t = rng.standard_normal((10, 6)), rng.integers(0, 3, 10)
    loss, scores, _ = two_layer_net(net.params, x, t)
    np.testing.assert_allclose(net.predict(x), scores, rtol=1e-12)
    assert net.loss(x, t) == pytest.approx(loss, rel=1e-12)
    assert net.loss(x, np.eye(3)[t]) == pytest.approx(loss, rel=1e-12)
    assert net.accuracy(x, t) == np.mean(scores.argmax(1) == t)
    assert accuracy(scores, np.eye(3)[t]) == net.accuracy(x, t)


def test_a_batch_of_one_trains(client, rng):
    """With one sample the scores are not seeded: only the loss is differentiated."""
    net = TwoLayerNet(6, 5, 1, dtype="float64", client=client)
    step = net.forward_backward(rng.standard_normal((1, 6)), np.array([0]))
    assert step.loss == pytest.approx(0.0)
    assert not np.any(step.grads["W2"])


def test_register_gives_the_content_addressed_id(client):
    """The training graph is registered under its content id; two equal networks share it."""
    net = TwoLayerNet(7, 3, 2, client=client)
    assert net.register() == client.register(net.graph) == client.register(TwoLayerNet(7, 3, 2).graph)


def test_gradient_check_under_threshold_in_float64(client, rng):
    """The chapter's gradient check through CheckGradients: every mean |numerical - backprop| < 1e-6 in float64."""
    net = TwoLayerNet(12, 10, 4, dtype="float64", seed=0, client=client)
    checks = net.gradient_check(rng.random((3, 12)), np.array([0, 3, 1]))
    assert sorted(checks) == ["W1", "W2", "b1", "b2"]
    for name, check in checks.items():
        assert check.mean_abs_diff < 1e-6, name
        assert check.numerical.shape == net.params[name].shape
        assert np.abs(check.backprop).max() > 0, name  # the check compared real gradients, not zeros


def test_gradient_check_of_a_deeper_sigmoid_net(client, rng):
    """The check holds for a MultiLayerNet with two Sigmoid hidden layers too."""
    net = MultiLayerNet(5, [4, 4], 3, activation="sigmoid", weight_init_std="xavier", dtype="float64", seed=0,
                        client=client)
    checks = net.gradient_check(rng.random((3, 5)), np.array([2, 0, 1]))
    assert max(c.mean_abs_diff for c in checks.values()) < 1e-6


def test_training_on_digits_reaches_90_percent(client):
    """A short run (3 epochs, Adam) on scikit-learn's digits reaches at least 0.90 held-out accuracy."""
    data = load_digits_split(seed=0)
    net = TwoLayerNet(64, 50, 10, weight_init_std="he", seed=0, client=client)
    history = fit(net, Adam(lr=0.01), data.x_train, data.t_train, epochs=3, batch_size=32,
                  x_test=data.x_test, t_test=data.t_test, seed=0)
    assert history.epochs == 3
    assert history.steps == 3 * -(-len(data.x_train) // 32)
    assert history.loss[-1] < history.loss[0]
    assert history.test_acc[-1] >= 0.90


def test_fit_calls_back_every_step_and_epoch(client, rng):
    """fit reports each step's loss and each epoch's record, counting from 1."""
    net = TwoLayerNet(4, 3, 2, client=client)
    steps, epochs = [], []
    fit(net, Adam(), rng.random((10, 4)), rng.integers(0, 2, 10), epochs=2, batch_size=4,
        on_step=lambda e, s, loss: steps.append((e, s)), on_epoch=lambda e, h: epochs.append((e, h.epochs)))
    assert steps == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)]
    assert epochs == [(1, 1), (2, 2)]
