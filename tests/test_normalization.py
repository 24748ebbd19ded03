"""BatchNormalization (per channel, ONNX's) and LayerNormalization through the service, against onnx and torch."""

from __future__ import annotations

import numpy as np
import pytest

import gradserve.client as gs
from gradserve.client.errors import InvalidArgument

onnx = pytest.importorskip("onnx")
from onnx import helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

_rng = np.random.default_rng(15)


def r(*shape):
    return _rng.standard_normal(shape)


def pos(*shape):
    return _rng.uniform(0.5, 2.0, shape)


def onnx_outputs(op: str, feeds: dict, attrs: dict, n_outputs: int, opset: int = 22) -> list[np.ndarray]:
    """Every output of one ONNX node as onnx.reference evaluates it."""
    outs = [f"o{i}" for i in range(n_outputs)]
    node = helper.make_node(op, list(feeds), outs, **attrs)
    dtype = helper.np_dtype_to_tensor_dtype(np.dtype(np.float64))
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, dtype, a.shape) for n, a in feeds.items()],
                              [helper.make_tensor_value_info(o, dtype, None) for o in outs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return ReferenceEvaluator(model).run(None, feeds)


def batchnorm_graph(**attrs) -> gs.Graph:
    g = gs.Graph(dtype="float64")
    out, mean, var = g.BatchNormalization(*g.inputs("x", "gamma", "beta", "running_mean", "running_var"),
                                          n_outputs=3, **attrs)
    g.output(out, "out")
    g.output(mean, "running_mean")
    g.output(var, "running_var")
    return g


def bn_feeds(shape=(4, 3, 5, 6)):
    c = shape[1]
    return {"x": r(*shape), "gamma": pos(c), "beta": r(c), "running_mean": r(c), "running_var": pos(c)}


@pytest.mark.parametrize("shape", [(4, 3, 5, 6), (4, 3, 7), (4, 3)], ids=["2d", "1d", "no-spatial"])
def test_spatial_batchnorm_inference_matches_onnx(client, shape):
    """spatial=True outside training: (x - running_mean) / sqrt(running_var + epsilon) per channel, as ONNX."""
    feeds = bn_feeds(shape)
    result = client.run(batchnorm_graph(spatial=True, epsilon=1e-5), feeds, grad=False)
    (expected,) = onnx_outputs("BatchNormalization", feeds, {"epsilon": 1e-5}, 1)
    np.testing.assert_allclose(result.outputs["out"], expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(result.outputs["running_mean"], feeds["running_mean"])


def test_spatial_batchnorm_training_matches_onnx_training_mode(client):
    """In training, spatial=True gives ONNX's training_mode output and running statistics (population variance)."""
    feeds = bn_feeds()
    # ONNX float attributes are float32: momentum and epsilon are picked exact in float32.
    attrs = {"epsilon": 2.0**-16, "momentum": 0.75}
    result = client.run(batchnorm_graph(spatial=True, **attrs), feeds, grad=False, training=True)
    expected = onnx_outputs("BatchNormalization", feeds, {**attrs, "training_mode": 1}, 3)
    for name, want in zip(("out", "running_mean", "running_var"), expected):
        np.testing.assert_allclose(result.outputs[name], want, rtol=1e-12, atol=1e-12, err_msg=name)


def test_spatial_batchnorm_training_gradients_match_torch(client):
    """dx, dgamma and dbeta of a training pass equal torch's batch_norm autograd (float64)."""
    torch = pytest.importorskip("torch")
    feeds = bn_feeds()
    dout = r(*feeds["x"].shape)
    result = client.run(batchnorm_graph(spatial=True, epsilon=1e-5), feeds, seed_grads={"out": dout},
                        grad=["x", "gamma", "beta"], training=True)
    t = {k: torch.tensor(feeds[k], requires_grad=True) for k in ("x", "gamma", "beta")}
    out = torch.nn.functional.batch_norm(t["x"], torch.tensor(feeds["running_mean"]),
                                         torch.tensor(feeds["running_var"]), t["gamma"], t["beta"],
                                         training=True, eps=1e-5)
    out.backward(torch.tensor(dout))
    np.testing.assert_allclose(result.outputs["out"], out.detach().numpy(), rtol=1e-10, atol=1e-10)
    for name in ("x", "gamma", "beta"):
        np.testing.assert_allclose(result.grads[name], t[name].grad.numpy(), rtol=1e-9, atol=1e-10, err_msg=name)


def test_batchnorm_default_is_the_books_per_feature_normalization(client):
    """spatial=False (the default) normalizes each flattened feature of a 4-D x on its own, as the book does."""
    x = r(6, 2, 3, 3)
    features = 18
    feeds = {"x": x, "gamma": pos(features), "beta": r(features), "running_mean": np.zeros(features),
             "running_var": np.ones(features)}
    out = client.run(batchnorm_graph(), feeds, grad=False, training=True).outputs["out"]
    flat = x.reshape(6, -1)
    xn = (flat - flat.mean(axis=0)) / np.sqrt(flat.var(axis=0) + 1e-6)
    np.testing.assert_allclose(out, (feeds["gamma"] * xn + feeds["beta"]).reshape(x.shape), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("feeds, attrs, message", [
    (bn_feeds(), {"spatial": True, "epsilon": 1e-5}, None),
    ({**bn_feeds(), "gamma": pos(4)}, {"spatial": True}, "gamma has 4 elements, x has 3 channels"),
    ({**bn_feeds((2, 3)), "x": r(2, 4)}, {}, "gamma has 3 elements, x has 4 features"),
], ids=["fits", "channels", "features"])
def test_batchnorm_statistics_must_fit_x(client, feeds, attrs, message):
    """gamma, beta and the running statistics with another size than x's channels are INVALID_ARGUMENT."""
    if message is None:
        client.run(batchnorm_graph(**attrs), feeds, grad=False)
        return
    with pytest.raises(InvalidArgument, match=message):
        client.run(batchnorm_graph(**attrs), feeds, grad=False)


def layernorm_graph(**attrs) -> gs.Graph:
    g = gs.Graph(dtype="float64")
    out, mean, inv = g.LayerNormalization(*g.inputs("x", "scale", "bias"), n_outputs=3, **attrs)
    g.output(out, "out")
    g.output(mean, "mean")
    g.output(inv, "inv_std_dev")
    return g


@pytest.mark.parametrize("shape, axis", [((3, 4, 5), -1), ((3, 4, 5), 1), ((2, 6), 0)])
def test_layernorm_matches_onnx(client, shape, axis):
    """LayerNormalization's three outputs equal onnx's reference (opset 17) for any axis."""
    normalized = shape[axis:]
    feeds = {"x": r(*shape), "scale": pos(*normalized), "bias": r(*normalized)}
    # epsilon exact in float32, as ONNX's float attributes are.
    result = client.run(layernorm_graph(axis=axis, epsilon=2.0**-12), feeds, grad=False)
    expected = onnx_outputs("LayerNormalization", feeds, {"axis": axis, "epsilon": 2.0**-12}, 3)
    for name, want in zip(("out", "mean", "inv_std_dev"), expected):
        np.testing.assert_allclose(result.outputs[name], want, rtol=1e-12, atol=1e-12, err_msg=name)


def test_layernorm_gradients_match_torch(client):
    """dx, dscale and dbias equal torch's layer_norm autograd over the last two axes."""
    torch = pytest.importorskip("torch")
    feeds = {"x": r(3, 4, 5), "scale": pos(4, 5), "bias": r(4, 5)}
    dout = r(3, 4, 5)
    result = client.run(layernorm_graph(axis=1), feeds, seed_grads={"out": dout})
    t = {k: torch.tensor(v, requires_grad=True) for k, v in feeds.items()}
    out = torch.nn.functional.layer_norm(t["x"], (4, 5), t["scale"], t["bias"], eps=1e-5)
    out.backward(torch.tensor(dout))
    np.testing.assert_allclose(result.outputs["out"], out.detach().numpy(), rtol=1e-10, atol=1e-10)
    for name in feeds:
        np.testing.assert_allclose(result.grads[name], t[name].grad.numpy(), rtol=1e-9, atol=1e-10, err_msg=name)


def test_layernorm_gradients_through_mean_and_inv_std_match_central_differences(client):
    """Seeding all three outputs: backprop equals the server's float64 central differences."""
    feeds = {"x": r(2, 3, 4), "scale": pos(4), "bias": r(4)}
    seeds = {"out": r(2, 3, 4), "mean": r(2, 3, 1), "inv_std_dev": r(2, 3, 1)}
    checks = client.check_gradients(layernorm_graph(), feeds, seed_grads=seeds, eps=1e-6)
    for name, check in checks.items():
        assert check.max_abs_diff < 1e-7, (name, check.max_abs_diff)


def test_layernorm_float32_stays_float32(client):
    """float32 x gives float32 outputs and gradients."""
    feeds = {"x": r(3, 4).astype(np.float32), "scale": pos(4).astype(np.float32), "bias": r(4).astype(np.float32)}
    result = client.run(layernorm_graph(), feeds, seed_grads={"out": np.ones((3, 4), np.float32)})
    assert {a.dtype for a in (*result.outputs.values(), *result.grads.values())} == {np.dtype(np.float32)}


def test_layernorm_refuses_a_scale_of_another_shape(client):
    """A scale that does not broadcast to the normalized axes is INVALID_ARGUMENT naming both shapes."""
    message = r"scale of shape \(3,\) does not broadcast to the normalized shape \(4,\)"
    with pytest.raises(InvalidArgument, match=message):
        client.run(layernorm_graph(), {"x": r(2, 4), "scale": pos(3), "bias": r(4)})


def test_training_mode_attribute_overrides_the_request(client):
    """training_mode=True normalizes with the batch's statistics in a non-training request, False the reverse."""
    feeds = bn_feeds()
    attrs = {"spatial": True, "epsilon": 2.0**-16, "momentum": 0.75}
    batch = client.run(batchnorm_graph(**attrs), feeds, grad=False, training=True).outputs
    running = client.run(batchnorm_graph(**attrs), feeds, grad=False).outputs
    forced_batch = client.run(batchnorm_graph(training_mode=True, **attrs), feeds, grad=False).outputs
    forced_running = client.run(batchnorm_graph(training_mode=False, **attrs), feeds, grad=False, training=True).outputs
    for name in ("out", "running_mean", "running_var"):
        np.testing.assert_array_equal(forced_batch[name], batch[name])
        np.testing.assert_array_equal(forced_running[name], running[name])
