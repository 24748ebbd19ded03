"""Gelu, Erf, LogSoftmax and Softmax on any axis through the service, against onnx's reference and torch."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gradserve.client as gs

onnx = pytest.importorskip("onnx")
from onnx import helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

_rng = np.random.default_rng(16)


def onnx_output(op: str, x: np.ndarray, attrs: dict, opset: int = 22) -> np.ndarray:
    dtype = helper.np_dtype_to_tensor_dtype(x.dtype)
    graph = helper.make_graph([helper.make_node(op, ["x"], ["out"], **attrs)], "g",
                              [helper.make_tensor_value_info("x", dtype, x.shape)],
                              [helper.make_tensor_value_info("out", dtype, None)])
    return ReferenceEvaluator(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])).run(
        None, {"x": x})[0]


def unary(op: str, **attrs) -> gs.Graph:
    g = gs.Graph(dtype="float64")
    g.output(g.node(op, g.input("x"), **attrs), "out")
    return g


CASES = [
    ("Gelu", "Gelu", {}, {}),
    ("Gelu", "Gelu", {"approximate": "tanh"}, {"approximate": "tanh"}),
    ("Erf", "Erf", {}, {}),
    ("LogSoftmax", "LogSoftmax", {}, {}),
    ("LogSoftmax", "LogSoftmax", {"axis": 0}, {"axis": 0}),
    ("Softmax", "Softmax", {"axis": 1}, {"axis": 1}),
    ("Softmax", "Softmax", {"axis": -3}, {"axis": -3}),
]


@pytest.mark.parametrize("ours, op, attrs, onnx_attrs", CASES, ids=[f"{c[0]}{c[2]}" for c in CASES])
def test_matches_onnx(client, ours, op, attrs, onnx_attrs):
    """Each activation equals onnx's reference op with the same attributes (float64, on a 3-D x)."""
    x = 3 * _rng.standard_normal((3, 4, 5))
    out = client.run(unary(ours, **attrs), {"x": x}, grad=False).outputs["out"]
    # onnx's reference Erf (and Gelu through it) computes in float32; the exact checks are against torch below.
    tol = 1e-7 if op in ("Erf", "Gelu") else 1e-12
    np.testing.assert_allclose(out, onnx_output(op, x, onnx_attrs), rtol=tol, atol=tol)


def test_erf_is_libms_erf_in_float64(client):
    """Erf equals math.erf element by element, far into the tails."""
    x = np.concatenate([np.linspace(-7, 7, 301), [0.0, 1e-300, -1e-10, 30.0]])
    out = client.run(unary("Erf"), {"x": x}, grad=False).outputs["out"]
    np.testing.assert_array_equal(out, [math.erf(v) for v in x])


def torch_reference(op: str, attrs: dict, x: np.ndarray, dout: np.ndarray):
    torch = pytest.importorskip("torch")
    t = torch.tensor(x, requires_grad=True)
    f = {
        "Gelu": lambda v: torch.nn.functional.gelu(v, approximate=attrs.get("approximate", "none")),
        "Erf": torch.erf,
        "LogSoftmax": lambda v: torch.log_softmax(v, dim=attrs.get("axis", -1)),
        "Softmax": lambda v: torch.softmax(v, dim=attrs.get("axis", -1)),
    }[op]
    out = f(t)
    out.backward(torch.tensor(dout))
    return out.detach().numpy(), t.grad.numpy()


@pytest.mark.parametrize("ours, op, attrs, onnx_attrs", CASES, ids=[f"{c[0]}{c[2]}" for c in CASES])
def test_values_and_gradients_match_torch(client, ours, op, attrs, onnx_attrs):
    """Output and dx equal torch autograd's for the same function (float64)."""
    x, dout = 2 * _rng.standard_normal((3, 4, 5)), _rng.standard_normal((3, 4, 5))
    expected, expected_dx = torch_reference(op, attrs, x, dout)
    result = client.run(unary(ours, **attrs), {"x": x}, seed_grads={"out": dout})
    np.testing.assert_allclose(result.outputs["out"], expected, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(result.grads["x"], expected_dx, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("op", ["Gelu", "Erf", "LogSoftmax"])
def test_float32_stays_float32(client, op):
    """float32 x gives a float32 output and gradient."""
    x = _rng.standard_normal((2, 3)).astype(np.float32)
    result = client.run(unary(op), {"x": x}, seed_grads={"out": np.ones((2, 3), np.float32)})
    assert result.outputs["out"].dtype == result.grads["x"].dtype == np.float32


def test_log_softmax_stays_finite_where_softmax_underflows(client):
    """LogSoftmax of scores 1000 apart is exact (-1000), where log(Softmax) would be -inf."""
    out = client.run(unary("LogSoftmax"), {"x": np.array([[0.0, 1000.0]])}, grad=False).outputs["out"]
    np.testing.assert_array_equal(out, [[-1000.0, 0.0]])
