"""Structure-only graphs exported from torch (tests/models/, written by scripts/export_models.py), weights filled
at random: gradserve's outputs equal onnxruntime's, and its gradients equal float64 central differences."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from gradserve.client.onnx_import import import_onnx  # noqa: E402
from model_weights import as_float32, fill_weights  # noqa: E402

MODELS = sorted((Path(__file__).parent / "models").glob("*.onnx"))
EPS = 1e-5
PER_TENSOR = 16  # tensors checked one by one in a large model (resnet18 has 63)


def example_input(model: onnx.ModelProto, rng: np.random.Generator) -> np.ndarray:
    info = model.graph.input[0]
    shape = [d.dim_value for d in info.type.tensor_type.shape.dim]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(info.type.tensor_type.elem_type)
    if dtype.kind == "i":  # token ids: below the smallest table the model gathers from
        return rng.integers(0, 50, shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


@pytest.fixture(scope="module", params=MODELS, ids=[path.stem for path in MODELS])
def case(request):
    model = fill_weights(onnx.load(request.param))
    rng = np.random.default_rng(1)
    x = example_input(model, rng)
    training = any(node.op_type == "BatchNormalization" and any(a.name == "training_mode" and a.i for a in node.attribute)
                   for node in model.graph.node)
    return model, import_onnx(model), x, training


def test_forward_matches_onnxruntime(client, case):
    """The imported graph's float64 output equals onnxruntime's on the same weights and input, to float32
    precision (onnxruntime runs the float32 copy: it has no float64 kernels for Conv, Erf, ...)."""
    model, imported, x, training = case
    session = ort.InferenceSession(as_float32(model).SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"x": x.astype(np.float32) if x.dtype.kind == "f" else x})[0]
    res = client.run(imported.graph, imported.feeds({"x": x}), grad=False, training=training)
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(res.outputs["y"], expected, rtol=1e-4, atol=1e-5 * scale)


def test_gradients_match_central_differences(client, case):
    """Each gradient agrees with float64 central differences of sum(y * dy): along one random direction over all
    inputs and parameters at once, and along a random direction per tensor (every tensor of the small models;
    the input and an even spread of the rest for the large ones, whose every gradient the torch lane checks)."""
    model, imported, x, training = case
    feeds = imported.feeds({"x": x})
    wrt = [name for name, value in feeds.items() if value.dtype.kind == "f"]
    rng = np.random.default_rng(2)
    first = client.run(imported.graph, feeds, grad=False, training=training).outputs["y"]
    dy = rng.standard_normal(first.shape)
    res = client.run(imported.graph, feeds, grad=wrt, seed_grads={"y": dy}, training=training)
    # A BatchNormalization's running statistics are float initializers that take no gradient: only they lack one.
    statistics = {name for node in model.graph.node if node.op_type == "BatchNormalization" for name in node.input[3:5]}
    assert set(wrt) - set(res.grads) == statistics & set(wrt)
    wrt = [name for name in wrt if name in res.grads]

    def loss(direction):
        moved = {**feeds, **{name: feeds[name] + v for name, v in direction.items()}}
        out = client.run(imported.graph, moved, grad=False, training=training).outputs["y"]
        return float(np.sum(out * dy))

    def check(names):
        direction = {name: rng.standard_normal(feeds[name].shape) for name in names}
        norm = np.sqrt(sum(float(np.sum(v * v)) for v in direction.values()))
        direction = {name: v / norm for name, v in direction.items()}
        numerical = (loss({n: EPS * v for n, v in direction.items()})
                     - loss({n: -EPS * v for n, v in direction.items()})) / (2 * EPS)
        backprop = sum(float(np.sum(res.grads[name] * v)) for name, v in direction.items())
        assert backprop == pytest.approx(numerical, rel=1e-5, abs=1e-7), names if len(names) < 3 else "all"

    check(wrt)
    spread = wrt if len(wrt) <= PER_TENSOR else [wrt[round(i)] for i in np.linspace(0, len(wrt) - 1, PER_TENSOR)]
    for name in dict.fromkeys(([n for n in wrt if n == "x"]) + spread):
        check([name])
