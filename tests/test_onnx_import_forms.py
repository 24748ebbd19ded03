"""The forms real exporters write: shape arithmetic folded at import, constants kept exact, opsets checked."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

from gradserve.client.onnx_import import MAX_OPSET, OnnxConversionError, import_onnx  # noqa: E402

N = helper.make_node


def model_of(nodes, inputs, outputs, initializers=None, opset=17):
    """A model whose inputs are {name: (elem type, shape)} and whose outputs are names (typed by inference)."""
    graph = helper.make_graph(nodes, "forms",
                              [helper.make_tensor_value_info(n, t, s) for n, (t, s) in inputs.items()],
                              [helper.ValueInfoProto(name=n) for n in outputs],
                              [numpy_helper.from_array(v, n) for n, v in (initializers or {}).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return onnx.shape_inference.infer_shapes(model)


def torch_style_flatten(batch):
    """x.view(x.size(0), -1) as torch.onnx.export writes it: Shape, Gather, Unsqueeze, Concat, Reshape."""
    nodes = [
        N("Shape", ["x"], ["shape"], name="shape"),
        N("Constant", [], ["zero"], value=numpy_helper.from_array(np.array(0, dtype=np.int64))),
        N("Gather", ["shape", "zero"], ["n"], name="gather", axis=0),
        N("Constant", [], ["axes"], value=numpy_helper.from_array(np.array([0], dtype=np.int64))),
        N("Unsqueeze", ["n", "axes"], ["n1"], name="unsqueeze"),
        N("Constant", [], ["rest"], value=numpy_helper.from_array(np.array([-1], dtype=np.int64))),
        N("Concat", ["n1", "rest"], ["target"], name="concat", axis=0),
        N("Reshape", ["x", "target"], ["flat"], name="reshape"),
        N("Relu", ["flat"], ["y"], name="relu"),
    ]
    return model_of(nodes, {"x": (TensorProto.DOUBLE, [batch, 3, 4])}, ["y"])


def test_shape_arithmetic_is_folded_at_import(client):
    """Shape -> Gather -> Unsqueeze -> Concat of a known shape folds: only Reshape and Relu reach the server."""
    model = torch_style_flatten(2)
    imported = import_onnx(model)
    assert [node.op for node in imported.graph.to_proto().nodes] == ["Reshape", "Relu"]
    x = np.random.default_rng(0).standard_normal((2, 3, 4))
    result = client.run(imported.graph, {"x": x}, grad=["x"], seed_grads={"y": np.ones((2, 12))})
    np.testing.assert_array_equal(result.outputs["y"], ReferenceEvaluator(model).run(None, {"x": x})[0])
    np.testing.assert_array_equal(result.grads["x"], (x > 0).astype(float))


def test_a_shape_known_only_at_run_time_is_refused_naming_the_node():
    """With a free batch dimension the Reshape's target is computed at run time: refused, naming node and input."""
    with pytest.raises(OnnxConversionError) as info:
        import_onnx(torch_style_flatten("batch"))
    message = str(info.value)
    assert "Reshape node reshape (opset 17): its shape ('target') must be a constant" in message
    assert info.value.needs_constant == ["target"]


def test_int64_constants_stay_exact(client):
    """An int64 constant above 2**53 reaches the server exactly (value_ints, not float64)."""
    big = np.array([2**53 + 1, -(2**62) + 3], dtype=np.int64)
    nodes = [N("Constant", [], ["c"], value=numpy_helper.from_array(big)), N("Add", ["i", "c"], ["y"])]
    model = model_of(nodes, {"i": (TensorProto.INT64, [2])}, ["y"])
    result = client.run(import_onnx(model).graph, {"i": np.array([1, 2], dtype=np.int64)}, grad=False)
    np.testing.assert_array_equal(result.outputs["y"], big + [1, 2])


def test_variadic_ops_become_chains_with_every_gradient(client):
    """Max of three inputs and Concat of three import as chains; each input gets its gradient."""
    nodes = [N("Max", ["a", "b", "c"], ["m"]), N("Concat", ["a", "m", "c"], ["y"], axis=1)]
    shape = (TensorProto.DOUBLE, [2, 3])
    model = model_of(nodes, {"a": shape, "b": shape, "c": shape}, ["y"])
    rng = np.random.default_rng(1)
    feeds = {n: rng.standard_normal((2, 3)) for n in "abc"}
    imported = import_onnx(model)
    dy = rng.standard_normal((2, 9))
    result = client.run(imported.graph, feeds, grad=["a", "b", "c"], seed_grads={"y": dy})
    np.testing.assert_array_equal(result.outputs["y"], ReferenceEvaluator(model).run(None, feeds)[0])
    winner = np.argmax(np.stack([feeds[n] for n in "abc"]), axis=0)
    for k, n in enumerate("abc"):
        expected = dy[:, 3:6] * (winner == k) + {"a": dy[:, :3], "b": 0, "c": dy[:, 6:]}[n]
        np.testing.assert_allclose(result.grads[n], expected, err_msg=n)


def test_split_becomes_one_slice_per_output(client):
    """Split with sizes as an input gives each output its part, and their gradients join back."""
    nodes = [N("Split", ["x", "sizes"], ["p", "q"], axis=1), N("Mul", ["p", "p"], ["y"]), N("Neg", ["q"], ["z"])]
    model = model_of(nodes, {"x": (TensorProto.DOUBLE, [2, 5])}, ["y", "z"],
                     {"sizes": np.array([2, 3], dtype=np.int64)}, opset=18)
    x = np.arange(10.0).reshape(2, 5)
    result = client.run(import_onnx(model).graph, {"x": x}, grad=["x"],
                        seed_grads={"y": np.ones((2, 2)), "z": np.ones((2, 3))})
    np.testing.assert_array_equal(result.outputs["z"], -x[:, 2:])
    np.testing.assert_array_equal(result.grads["x"], np.concatenate([2 * x[:, :2], -np.ones((2, 3))], axis=1))


@pytest.mark.parametrize("opset", [6, MAX_OPSET + 1])
def test_opsets_outside_the_range_are_refused(opset):
    """A model older than opset 7 or newer than the installed onnx knows is refused, naming its opset."""
    graph = helper.make_graph([N("Relu", ["x"], ["y"], name="relu")], "old",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    with pytest.raises(OnnxConversionError, match=rf"opset {opset} is outside the opsets read here \(7 to "
                                                  rf"{MAX_OPSET}.*for its nodes \(Relu\)"):
        import_onnx(model)


def test_unsupported_forms_name_the_op_the_node_and_the_opset():
    """A supported op in a form gradserve cannot compute is refused with its node, the opset and the reason."""
    nodes = [N("ScatterND", ["x", "i", "u"], ["y"], name="scatter", reduction="mul")]
    model = model_of(nodes, {"x": (TensorProto.FLOAT, [4]), "u": (TensorProto.FLOAT, [1])}, ["y"],
                     {"i": np.array([[1]], dtype=np.int64)}, opset=18)
    with pytest.raises(OnnxConversionError, match=r"ScatterND node scatter \(opset 18\): reduction 'mul' is not "
                                                  r"supported; none and add are"):
        import_onnx(model)


def test_training_mode_batch_norm_keeps_its_mode(client):
    """A BatchNormalization exported in training mode uses the batch's statistics, whatever the request says."""
    c = 3
    stats = {"gamma": np.ones(c), "beta": np.zeros(c), "mean": np.zeros(c), "var": np.ones(c)}
    nodes = [N("BatchNormalization", ["x", "gamma", "beta", "mean", "var"], ["y", "m", "v"], training_mode=1)]
    model = model_of(nodes, {"x": (TensorProto.DOUBLE, [4, c, 2, 2])}, ["y", "m", "v"], stats, opset=15)
    imported = import_onnx(model)
    x = np.random.default_rng(2).standard_normal((4, c, 2, 2))
    result = client.run(imported.graph, imported.feeds(x=x), grad=False)
    expected = ReferenceEvaluator(model).run(None, {"x": x})
    for name, want in zip(["y", "m", "v"], expected):
        np.testing.assert_allclose(result.outputs[name], want, rtol=1e-6, atol=1e-9, err_msg=name)
