"""Convolution, Pooling and the global pools through the service, against onnx's reference evaluator and torch."""

from __future__ import annotations

import numpy as np
import pytest

import gradserve.client as gs
from gradserve.client.errors import InvalidArgument

onnx = pytest.importorskip("onnx")
from onnx import helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

_rng = np.random.default_rng(14)


def r(*shape):
    return _rng.standard_normal(shape)


def onnx_reference(op: str, feeds: dict[str, np.ndarray], attrs: dict, opset: int = 22) -> np.ndarray:
    """The first output of one ONNX node ``op`` as onnx.reference evaluates it."""
    names = list(feeds)
    node = helper.make_node(op, names, ["out"], **attrs)
    inputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
              for n, a in feeds.items()]
    output = helper.make_tensor_value_info("out", helper.np_dtype_to_tensor_dtype(feeds[names[0]].dtype), None)
    model = helper.make_model(helper.make_graph([node], "g", inputs, [output]),
                              opset_imports=[helper.make_opsetid("", opset)])
    return ReferenceEvaluator(model).run(None, feeds)[0]


def one_node(op: str, input_names, **attrs) -> gs.Graph:
    g = gs.Graph(dtype="float64")
    g.output(g.node(op, *(g.input(n) for n in input_names), name="layer", **attrs), "out")
    return g


def served(client, op: str, feeds: dict, **attrs):
    """Output and every input's gradient (seeded with ones) of one served node."""
    graph = one_node(op, list(feeds), **attrs)
    out = client.run(graph, feeds, grad=False).outputs["out"]
    return out, client.run(graph, feeds, seed_grads={"out": np.ones_like(out)}).grads


CONV_CASES = {
    "2d-valid": ({"x": r(2, 3, 6, 6), "W": r(4, 3, 3, 3), "b": r(4)}, {}),
    "2d-strides-pads": ({"x": r(2, 3, 7, 6), "W": r(5, 3, 3, 2), "b": r(5)}, {"strides": [2, 3], "pads": [1, 0, 2, 1]}),
    "2d-dilations": ({"x": r(1, 2, 8, 8), "W": r(3, 2, 3, 3), "b": r(3)}, {"dilations": [2, 3], "pads": [2, 2, 2, 2]}),
    "2d-group": ({"x": r(2, 6, 5, 5), "W": r(4, 3, 3, 3), "b": r(4)}, {"group": 2, "pads": [1, 1, 1, 1]}),
    "2d-depthwise": ({"x": r(1, 4, 5, 5), "W": r(4, 1, 3, 3), "b": r(4)}, {"group": 4}),
    "2d-same-upper": ({"x": r(1, 2, 7, 6), "W": r(3, 2, 4, 3), "b": r(3)},
                       {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    "2d-same-lower": ({"x": r(1, 2, 7, 6), "W": r(3, 2, 4, 3), "b": r(3)},
                       {"auto_pad": "SAME_LOWER", "strides": [2, 2]}),
    "1d": ({"x": r(2, 3, 9), "W": r(2, 3, 4), "b": r(2)}, {"strides": [2], "pads": [1, 2]}),
    "3d": ({"x": r(1, 2, 4, 5, 4), "W": r(3, 2, 2, 3, 2), "b": r(3)}, {"pads": [1, 0, 1, 0, 1, 0]}),
}


@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_convolution_matches_onnx_conv(client, case):
    """Convolution computes what onnx's reference Conv computes, for every attribute ONNX Conv has."""
    feeds, attrs = CONV_CASES[case]
    out, _ = served(client, "Convolution", feeds, **attrs)
    expected = onnx_reference("Conv", {"x": feeds["x"], "W": feeds["W"], "b": feeds["b"]}, attrs)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


POOL_CASES = {
    "max-2x2": ("MaxPool", {"kernel_shape": [2, 2], "strides": [2, 2]}, (2, 3, 6, 6)),
    "max-padded": ("MaxPool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [2, 2]}, (1, 2, 7, 7)),
    "max-ceil": ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}, (1, 2, 6, 8)),
    "max-dilated": ("MaxPool", {"kernel_shape": [2, 2], "dilations": [2, 2]}, (1, 2, 6, 6)),
    "max-same-upper": ("MaxPool", {"kernel_shape": [3, 2], "auto_pad": "SAME_UPPER", "strides": [2, 2]}, (1, 1, 5, 6)),
    "max-1d": ("MaxPool", {"kernel_shape": [3], "strides": [2], "pads": [1, 1]}, (2, 2, 9)),
    "max-3d": ("MaxPool", {"kernel_shape": [2, 2, 2]}, (1, 2, 3, 4, 3)),
    "avg-excluding-pad": ("AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, (1, 2, 5, 5)),
    "avg-including-pad": ("AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1},
                          (1, 2, 5, 5)),
    "avg-ceil": ("AveragePool", {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}, (1, 2, 5, 5)),
    "avg-ceil-including-pad": ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1],
                                               "ceil_mode": 1, "count_include_pad": 1}, (1, 1, 6, 6)),
    "avg-1d-same-lower": ("AveragePool", {"kernel_shape": [4], "auto_pad": "SAME_LOWER"}, (2, 2, 7)),
}


def pooling_attrs(op: str, attrs: dict) -> dict:
    """ONNX MaxPool/AveragePool attributes as the Pooling layer's (the importer's 1:1 mapping)."""
    ours = {k: (bool(v) if k in ("ceil_mode", "count_include_pad") else v) for k, v in attrs.items()}
    return {**ours, "mode": "max" if op == "MaxPool" else "average"}


@pytest.mark.parametrize("case", sorted(POOL_CASES))
def test_pooling_matches_onnx_pools(client, case):
    """Pooling computes what onnx's reference MaxPool and AveragePool compute (pads, ceil_mode, count_include_pad)."""
    op, attrs, shape = POOL_CASES[case]
    x = r(*shape)
    out, _ = served(client, "Pooling", {"x": x}, **pooling_attrs(op, attrs))
    np.testing.assert_allclose(out, onnx_reference(op, {"x": x}, attrs), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (2, 3, 7), (1, 2, 2, 3, 2)], ids=["2d", "1d", "3d"])
def test_global_pools_match_onnx(client, op, shape):
    """GlobalAveragePool and GlobalMaxPool keep (N, C) and give length-one spatial axes, as ONNX's."""
    x = r(*shape)
    out, _ = served(client, op, {"x": x})
    spatial = tuple(range(2, x.ndim))
    # onnx's reference GlobalMaxPool (1.23) reduces the wrong axes for other ranks than 4: the definition there.
    expected = onnx_reference(op, {"x": x}, {}) if x.ndim == 4 else \
        (x.mean if op == "GlobalAveragePool" else x.max)(axis=spatial, keepdims=True)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


def test_max_pooling_takes_integers(client):
    """Max pooling of int64 images gives int64 maxima (ONNX MaxPool allows integer tensors)."""
    x = _rng.integers(-50, 50, size=(1, 2, 5, 5))
    result = client.run(one_node("Pooling", ["x"], kernel_shape=[2, 2], pads=[1, 1, 1, 1]), {"x": x}, grad=False)
    # onnx's reference MaxPool (1.23) pads integers with NaN and fails: compare with its float result.
    expected = onnx_reference("MaxPool", {"x": x.astype(np.float64)}, {"kernel_shape": [2, 2], "pads": [1, 1, 1, 1]})
    assert result.outputs["out"].dtype == np.int64
    np.testing.assert_array_equal(result.outputs["out"], expected)


@pytest.mark.parametrize("op, feeds, attrs", [
    ("Convolution", CONV_CASES["2d-group"][0], CONV_CASES["2d-group"][1]),
    ("Convolution", CONV_CASES["2d-dilations"][0], {"dilations": [2, 3], "strides": [2, 1]}),
    ("Pooling", {"x": r(1, 2, 6, 8)}, pooling_attrs("MaxPool", POOL_CASES["max-ceil"][1])),
    ("Pooling", {"x": r(1, 1, 6, 6)}, pooling_attrs("AveragePool", POOL_CASES["avg-ceil-including-pad"][1])),
], ids=["conv-group", "conv-dilated-strided", "max-ceil", "avg-ceil-including-pad"])
def test_gradients_match_the_servers_central_differences(client, op, feeds, attrs):
    """Backprop through a served node equals float64 central differences computed on the server."""
    graph = one_node(op, list(feeds), **attrs)
    out = client.run(graph, feeds, grad=False).outputs["out"]
    checks = client.check_gradients(graph, feeds, seed_grads={"out": _rng.standard_normal(out.shape)}, eps=1e-6)
    assert set(checks) == set(feeds)
    for name, check in checks.items():
        assert check.max_abs_diff < 1e-7, (name, check.max_abs_diff)


TORCH_CASES = {
    "conv-group-dilated": ("Convolution", {"x": r(2, 4, 7, 7), "W": r(6, 2, 3, 3), "b": r(6)},
                           {"group": 2, "dilations": [2, 1], "strides": [1, 2], "pads": [2, 1, 2, 1]}),
    "conv-1d": ("Convolution", {"x": r(2, 3, 9), "W": r(4, 3, 3), "b": r(4)}, {"pads": [1, 1]}),
    "maxpool": ("Pooling", {"x": r(2, 3, 7, 7)}, {"mode": "max", "kernel_shape": [3, 3], "strides": [2, 2],
                                                   "pads": [1, 1, 1, 1], "ceil_mode": True}),
    "avgpool": ("Pooling", {"x": r(2, 3, 7, 7)}, {"mode": "average", "kernel_shape": [3, 3], "strides": [2, 2],
                                                   "pads": [1, 1, 1, 1], "count_include_pad": True}),
}


def torch_reference(op: str, feeds: dict, attrs: dict, dout: np.ndarray):
    """Output and input gradients from torch autograd for the same node."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    t = {k: torch.tensor(v, requires_grad=True) for k, v in feeds.items()}
    rank = feeds["x"].ndim - 2
    pads = attrs.get("pads", [0] * 2 * rank)
    assert pads[:rank] == pads[rank:], "torch pads symmetrically"
    if op == "Convolution":
        conv = {1: F.conv1d, 2: F.conv2d}[rank]
        out = conv(t["x"], t["W"], t["b"], stride=attrs.get("strides", 1), padding=pads[:rank],
                   dilation=attrs.get("dilations", 1), groups=attrs.get("group", 1))
    elif attrs["mode"] == "max":
        out = F.max_pool2d(t["x"], attrs["kernel_shape"], attrs["strides"], pads[:rank],
                           ceil_mode=attrs.get("ceil_mode", False))
    else:
        out = F.avg_pool2d(t["x"], attrs["kernel_shape"], attrs["strides"], pads[:rank],
                           ceil_mode=attrs.get("ceil_mode", False),
                           count_include_pad=attrs.get("count_include_pad", False))
    out.backward(torch.tensor(dout))
    return out.detach().numpy(), {k: v.grad.numpy() for k, v in t.items()}


@pytest.mark.parametrize("case", sorted(TORCH_CASES))
def test_values_and_gradients_match_torch_autograd(client, case):
    """Output and every input's gradient equal torch autograd's (float64) for convolutions and pools."""
    op, feeds, attrs = TORCH_CASES[case]
    out = client.run(one_node(op, list(feeds), **attrs), feeds, grad=False).outputs["out"]
    dout = _rng.standard_normal(out.shape)
    expected_out, expected_grads = torch_reference(op, feeds, attrs, dout)
    grads = client.run(one_node(op, list(feeds), **attrs), feeds, seed_grads={"out": dout}).grads
    np.testing.assert_allclose(out, expected_out, rtol=1e-10, atol=1e-10)
    for name in feeds:
        np.testing.assert_allclose(grads[name], expected_grads[name], rtol=1e-10, atol=1e-10, err_msg=name)


def test_float32_stays_float32(client):
    """float32 images and filters give float32 outputs and gradients."""
    feeds = {k: v.astype(np.float32) for k, v in CONV_CASES["2d-valid"][0].items()}
    g = gs.Graph(dtype="float32")
    h = g.Convolution(g.input("x"), g.input("W"), g.input("b"), pads=[1, 1, 1, 1])
    g.output(g.Sum(g.Pooling(h, kernel_shape=[2, 2], strides=[2, 2])), "loss")
    result = client.run(g, feeds)
    assert result.outputs["loss"].dtype == np.float32
    assert {a.dtype for a in result.grads.values()} == {np.dtype(np.float32)}


def test_images_as_data_skip_their_gradient(client):
    """Asking only for W and b (x is data) gives those gradients, equal to the full run's."""
    feeds, attrs = CONV_CASES["2d-strides-pads"]
    graph = one_node("Convolution", list(feeds), **attrs)
    dout = {"out": np.ones_like(client.run(graph, feeds, grad=False).outputs["out"])}
    full = client.run(graph, feeds, seed_grads=dout).grads
    params = client.run(graph, feeds, grad=["W", "b"], seed_grads=dout).grads
    assert set(params) == {"W", "b"}
    for name in ("W", "b"):
        np.testing.assert_allclose(params[name], full[name], rtol=1e-12)


@pytest.mark.parametrize("op, feeds, attrs, message", [
    ("Convolution", {"x": r(1, 3, 5, 5), "W": r(2, 2, 3, 3), "b": r(2)}, {}, "C/group"),
    ("Convolution", {"x": r(1, 4, 5, 5), "W": r(3, 2, 3, 3), "b": r(3)}, {"group": 2}, "M divisible by group"),
    ("Convolution", {"x": r(1, 2, 3, 3), "W": r(2, 2, 5, 5), "b": r(2)}, {}, "does not fit"),
    ("Convolution", {"x": r(1, 2, 5, 5), "W": r(2, 2, 3, 3), "b": r(3)}, {}, "one per filter"),
    ("Convolution", {"x": r(1, 2, 5, 5), "W": r(2, 2, 3, 3), "b": r(2)}, {"strides": [1]}, "strides has 1 values"),
    ("Convolution", {"x": r(1, 2, 5, 5), "W": r(2, 2, 3, 3), "b": r(2)}, {"strides": [0, 1]}, "strides"),
    ("Convolution", {"x": r(2, 5), "W": r(2, 2, 3), "b": r(2)}, {}, r"\(N, C, \*spatial\)"),
    ("Pooling", {"x": r(1, 1, 4, 4)}, {"kernel_shape": [2, 2], "pads": [2, 0, 0, 0]}, "pads smaller than the window"),
    ("Pooling", {"x": r(1, 1, 4, 4)}, {"kernel_shape": [2, 2], "mode": "min"}, "'max' or 'average'"),
    ("Pooling", {"x": r(1, 1, 4, 4)}, {"kernel_shape": [2, 2], "auto_pad": "SAME"}, "auto_pad must be"),
    ("Pooling", {"x": r(1, 1, 4, 4)}, {"kernel_shape": [2, 2], "auto_pad": "VALID", "pads": [1, 1, 1, 1]},
     "not both"),
], ids=["channels", "group", "too-small", "bias", "strides-rank", "zero-stride", "rank", "pool-pad", "mode",
        "auto-pad", "pads-and-auto-pad"])
def test_bad_settings_are_invalid_argument(client, op, feeds, attrs, message):
    """A setting that does not fit the input is INVALID_ARGUMENT saying what to change, and the server goes on."""
    with pytest.raises(InvalidArgument, match=message):
        client.run(one_node(op, list(feeds), **attrs), feeds)
    assert client.run(one_node("Relu", ["x"]), {"x": r(2)}, grad=False).outputs["out"].shape == (2,)
