"""ONNX import and export: forward values against onnx.reference, gradients by central differences."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper, shape_inference
from onnx.reference import ReferenceEvaluator

import gradserve.client as gs
from gradserve.client.onnx_export import export_onnx
from gradserve.client.onnx_import import OnnxConversionError, import_onnx
from gradserve.server import cli

F64 = TensorProto.DOUBLE


def make_model(nodes, inputs, outputs, initializers=None, opset=18, elem=F64):
    """A checked ONNX model; inputs as {name: shape or ValueInfoProto}, outputs as names (typed by inference)."""
    graph = helper.make_graph(
        nodes, "test",
        [shape if isinstance(shape, onnx.ValueInfoProto) else helper.make_tensor_value_info(n, elem, shape)
         for n, shape in inputs.items()],
        [helper.ValueInfoProto(name=n) for n in outputs],
        [numpy_helper.from_array(v, n) for n, v in (initializers or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    typed = {o.name: o.type for o in shape_inference.infer_shapes(model).graph.output}
    for output in model.graph.output:
        output.type.CopyFrom(typed[output.name])
    onnx.checker.check_model(model, full_check=True)
    return model


def assert_forward_matches_reference(client, model, feeds):
    """Run the imported model on the server; every output equals onnx.reference's, dtype included."""
    imported = import_onnx(model)
    expected = ReferenceEvaluator(model).run(None, feeds)
    result = client.run(imported.graph, imported.feeds(feeds), grad=False)
    assert imported.outputs == [o.name for o in model.graph.output]
    for name, want in zip(imported.outputs, expected):
        assert result.outputs[name].dtype == want.dtype, name
        np.testing.assert_allclose(result.outputs[name], want, rtol=1e-12, atol=1e-12, err_msg=name)
    return imported, result


def assert_gradients_match_numerical(client, imported, feeds, result):
    """Backprop gradients of every float input and parameter equal central differences (float64)."""
    rng = np.random.default_rng(3)
    first = imported.outputs[0]
    seed = {first: rng.standard_normal(result.outputs[first].shape)}
    checks = client.check_gradients(imported.graph, imported.feeds(feeds), seed_grads=seed, eps=1e-6)
    floats = {n for n, v in imported.feeds(feeds).items() if np.asarray(v).dtype.kind == "f"}
    assert set(checks) == floats
    for check in checks.values():
        assert check.max_abs_diff < 1e-6 * max(1.0, float(np.abs(check.backprop).max())), check.name


def r(*shape, seed=0):
    return np.random.default_rng(seed + len(shape) * 7 + sum(shape)).standard_normal(shape)


def pos(*shape):
    return np.random.default_rng(1).uniform(0.5, 2.0, shape)


N = helper.make_node
I64 = lambda *values: np.array(values, dtype=np.int64)  # noqa: E731

# (id, nodes, inputs {name: value}, initializers, opset)
CASES = [
    ("add-broadcast", [N("Add", ["x", "y"], ["out"])], {"x": r(3, 4), "y": r(4)}, {}, 18),
    ("sub", [N("Sub", ["x", "y"], ["out"])], {"x": r(2, 1), "y": r(2, 3)}, {}, 18),
    ("mul", [N("Mul", ["x", "y"], ["out"])], {"x": r(3, 4), "y": r(3, 1)}, {}, 18),
    ("div", [N("Div", ["x", "y"], ["out"])], {"x": r(3, 4), "y": pos(4)}, {}, 18),
    ("matmul-batched", [N("MatMul", ["x", "y"], ["out"])], {"x": r(2, 3, 4), "y": r(4, 5)}, {}, 18),
    ("relu", [N("Relu", ["x"], ["out"])], {"x": r(3, 4) + 0.05}, {}, 18),
    ("sigmoid", [N("Sigmoid", ["x"], ["out"])], {"x": r(3, 4)}, {}, 18),
    ("tanh", [N("Tanh", ["x"], ["out"])], {"x": r(3, 4)}, {}, 18),
    ("exp", [N("Exp", ["x"], ["out"])], {"x": r(3, 4)}, {}, 18),
    ("log", [N("Log", ["x"], ["out"])], {"x": pos(3, 4)}, {}, 18),
    ("identity", [N("Identity", ["x"], ["out"])], {"x": r(3)}, {}, 18),
    ("softmax-13-axis0", [N("Softmax", ["x"], ["out"], axis=0)], {"x": r(3, 4)}, {}, 13),
    ("softmax-13-default", [N("Softmax", ["x"], ["out"])], {"x": r(2, 3, 4)}, {}, 13),
    ("softmax-11-2d", [N("Softmax", ["x"], ["out"])], {"x": r(3, 4)}, {}, 11),
    ("gemm-bias", [N("Gemm", ["x", "W", "b"], ["out"])], {"x": r(5, 3)}, {"W": r(3, 4), "b": r(4)}, 18),
    ("gemm-trans-alpha-beta", [N("Gemm", ["x", "W", "b"], ["out"], alpha=0.5, beta=-2.0, transA=1, transB=1)],
     {"x": r(3, 5)}, {"W": r(4, 3), "b": r(5, 1)}, 18),
    ("gemm-no-c", [N("Gemm", ["x", "W"], ["out"], transB=1)], {"x": r(5, 3)}, {"W": r(4, 3)}, 11),
    ("reshape-initializer-zero", [N("Reshape", ["x", "shape"], ["out"])], {"x": r(2, 3, 4)},
     {"shape": I64(0, -1)}, 18),
    ("reshape-constant", [N("Constant", [], ["shape"], value=numpy_helper.from_array(I64(4, 6))),
                          N("Reshape", ["x", "shape"], ["out"])], {"x": r(2, 3, 4)}, {}, 18),
    ("flatten", [N("Flatten", ["x"], ["out"], axis=2)], {"x": r(2, 3, 4)}, {}, 18),
    ("flatten-default", [N("Flatten", ["x"], ["out"])], {"x": r(2, 3, 4)}, {}, 18),
    ("transpose", [N("Transpose", ["x"], ["out"], perm=[2, 0, 1])], {"x": r(2, 3, 4)}, {}, 18),
    ("reducesum-axes-input", [N("ReduceSum", ["x", "axes"], ["out"], keepdims=0)], {"x": r(2, 3, 4)},
     {"axes": I64(0, 2)}, 13),
    ("reducesum-axes-attr", [N("ReduceSum", ["x"], ["out"], axes=[1])], {"x": r(2, 3, 4)}, {}, 11),
    ("reducesum-all", [N("ReduceSum", ["x"], ["out"], keepdims=0)], {"x": r(2, 3)}, {}, 13),
    ("reducemean-axes-attr", [N("ReduceMean", ["x"], ["out"], axes=[-1], keepdims=0)], {"x": r(2, 3, 4)}, {}, 13),
    ("reducemean-axes-input", [N("ReduceMean", ["x", "axes"], ["out"])], {"x": r(2, 3, 4)}, {"axes": I64(1)}, 18),
    ("reducemean-empty-noop", [N("ReduceMean", ["x"], ["out"], noop_with_empty_axes=1)], {"x": r(2, 3)}, {}, 18),
    ("constant-tensor", [N("Constant", [], ["c"], value=numpy_helper.from_array(r(4, seed=3))),
                         N("Mul", ["x", "c"], ["out"])], {"x": r(3, 4)}, {}, 18),
]


@pytest.mark.parametrize("nodes,feeds,initializers,opset", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_operator_forward_and_gradients(client, nodes, feeds, initializers, opset):
    """Each supported operator: forward equals onnx.reference, gradients equal central differences."""
    model = make_model(nodes, {k: v.shape for k, v in feeds.items()}, ["out"], initializers, opset)
    imported, result = assert_forward_matches_reference(client, model, feeds)
    assert sorted(imported.params) == sorted(n for n in initializers if n not in ("shape", "axes"))
    assert_gradients_match_numerical(client, imported, feeds, result)


def test_opset11_softmax_normalizes_over_all_trailing_axes(client):
    """Before opset 13, Softmax(axis=1) of a (2, 3, 4) x is the softmax of x as (2, 12), per the ONNX spec.

    onnx.reference applies opset-13 semantics to every version, so the expected value is the spec's formula.
    """
    model = make_model([N("Softmax", ["x"], ["out"], axis=1)], {"x": [2, 3, 4]}, ["out"], opset=11)
    feeds = {"x": r(2, 3, 4)}
    imported = import_onnx(model)
    result = client.run(imported.graph, feeds, grad=False)
    flat = np.exp(feeds["x"].reshape(2, 12))
    np.testing.assert_allclose(result.outputs["out"], (flat / flat.sum(axis=1, keepdims=True)).reshape(2, 3, 4),
                               rtol=1e-12)
    assert_gradients_match_numerical(client, imported, feeds, result)


def test_scalar_constant_attributes(client):
    """Constant's value_float and value_ints forms import with ONNX's dtypes (float32, int64)."""
    nodes = [N("Constant", [], ["c"], value_float=2.5), N("Mul", ["x", "c"], ["scaled"]),
             N("Constant", [], ["shape"], value_ints=[-1]), N("Reshape", ["scaled", "shape"], ["out"])]
    feeds = {"x": r(2, 3).astype(np.float32)}
    model = make_model(nodes, {"x": [2, 3]}, ["out"], elem=TensorProto.FLOAT)
    assert_forward_matches_reference(client, model, feeds)


def mlp_model(opset=18, elem=F64):
    """x -> Gemm -> Relu -> MatMul + b -> Softmax -> ReduceMean: a small classifier with four parameters."""
    dtype = helper.tensor_dtype_to_np_dtype(elem)
    params = {"W1": r(4, 5, seed=1).astype(dtype), "b1": r(5, seed=2).astype(dtype),
              "W2": r(5, 3, seed=3).astype(dtype), "b2": r(3, seed=4).astype(dtype)}
    nodes = [
        N("Gemm", ["x", "W1", "b1"], ["h"], name="fc1"),
        N("Relu", ["h"], ["a"], name="relu1"),
        N("MatMul", ["a", "W2"], ["z0"], name="fc2"),
        N("Add", ["z0", "b2"], ["z"], name="bias2"),
        N("Softmax", ["z"], ["probs"], name="softmax", axis=-1),
        N("ReduceMean", ["probs"], ["score"], name="mean", keepdims=0),
    ]
    return make_model(nodes, {"x": ["batch", 4]}, ["probs", "score"], params, opset, elem)


def test_mlp_forward_and_gradients_of_every_parameter(client):
    """A Gemm/Relu/MatMul/Softmax classifier: both outputs match the reference; W1, b1, W2, b2 gradients check."""
    model = mlp_model()
    feeds = {"x": r(6, 4, seed=5)}
    imported, result = assert_forward_matches_reference(client, model, feeds)
    assert sorted(imported.params) == ["W1", "W2", "b1", "b2"]
    assert imported.inputs == ["x"]
    grads = client.run(imported.graph, imported.feeds(feeds)).grads  # the scalar "score" seeds itself
    assert sorted(grads) == ["W1", "W2", "b1", "b2", "x"]
    assert_gradients_match_numerical(client, imported, feeds, result)


def test_float32_model_keeps_float32(client):
    """A float32 model runs in float32: outputs and gradients keep the dtype of the model."""
    model = mlp_model(elem=TensorProto.FLOAT)
    feeds = {"x": r(6, 4).astype(np.float32)}
    imported = import_onnx(model)
    want = ReferenceEvaluator(model).run(None, feeds)
    result = client.run(imported.graph, imported.feeds(feeds))
    np.testing.assert_allclose(result.outputs["probs"], want[0], rtol=1e-5, atol=1e-6)
    assert {v.dtype for v in list(result.outputs.values()) + list(result.grads.values())} == {np.dtype(np.float32)}


def test_freeze_bakes_initializers_into_constants(client):
    """With freeze=True the model needs only its own inputs; values equal the reference's."""
    model = mlp_model()
    feeds = {"x": r(6, 4, seed=5)}
    frozen = import_onnx(model, freeze=True)
    assert frozen.params == {} and frozen.graph.input_names == ["x"]
    result = client.run(frozen.graph, feeds, grad=False)
    np.testing.assert_allclose(result.outputs["probs"], ReferenceEvaluator(model).run(None, feeds)[0], rtol=1e-12)


def test_every_unsupported_operator_is_named_with_its_nodes():
    """Unsupported operators are all listed in one error, each with the names of its nodes and the opset."""
    nodes = [
        N("LpPool", ["x"], ["c"], name="lp1", kernel_shape=[2, 2]),
        N("Relu", ["c"], ["r1"], name="relu"),
        N("LpPool", ["r1"], ["p2"], name="lp2", kernel_shape=[2, 2]),
        N("Unique", ["p2"], ["out"], name="unique"),
    ]
    model = make_model(nodes, {"x": [1, 1, 8, 8]}, ["out"])
    with pytest.raises(OnnxConversionError) as info:
        import_onnx(model)
    error = info.value
    assert error.unsupported == {"LpPool": ["lp1", "lp2"], "Unique": ["unique"]}
    message = str(error)
    assert "unsupported operators at opset 18:" in message
    assert "LpPool (nodes lp1, lp2)" in message
    assert "Unique (node unique)" in message and "Supported: Abs, Acos," in message


def test_shape_computed_at_run_time_is_a_clear_error():
    """A Reshape whose shape is a run-time value cannot be imported; the error names the node and the fix."""
    s = helper.make_tensor_value_info("s", TensorProto.INT64, [2])
    model = make_model([N("Reshape", ["x", "s"], ["out"], name="reshape")], {"x": [2, 3], "s": s}, ["out"])
    with pytest.raises(OnnxConversionError,
                       match=r"Reshape node reshape \(opset 18\): its shape \('s'\) must be a constant"):
        import_onnx(model)


def test_import_from_file_and_bytes(tmp_path):
    """A path and serialized bytes import to the same graph as the ModelProto."""
    model = mlp_model()
    path = tmp_path / "mlp.onnx"
    onnx.save(model, path)
    expected = import_onnx(model).graph.to_proto()
    assert import_onnx(path).graph.to_proto() == expected
    assert import_onnx(model.SerializeToString()).graph.to_proto() == expected


def two_layer_net() -> gs.Graph:
    """The book's TwoLayerNet forward, with extra layers that have ONNX equivalents."""
    g = gs.Graph(dtype="float64")
    x = g.input("x", shape=[-1, 2, 3])
    W1, b1, W2, b2 = (g.input(name, shape=shape) for name, shape in
                      (("W1", [6, 5]), ("b1", [5]), ("W2", [6, 5]), ("b2", [6])))
    h = g.Sigmoid(g.Affine(x, W1, b1, name="affine1"), name="sigmoid")
    z = g.Gemm(h, W2, b2, alpha=2.0, transB=True, name="affine2")
    g.output(g.Softmax(z, axis=-1, name="softmax"), "probs")
    shaped = g.Transpose(g.Reshape(g.Tanh(z), shape=[0, 3, -1], copy_zeros=True), perm=[0, 2, 1])
    loss = g.Mean(g.Flatten(g.Exp(shaped) / 2.0, axis=1) - g.Neg(z) * 0.5)
    g.output(g.Sum(g.Log(g.Relu(h) + 1.0), axis=[1], keepdims=True), "logsum")
    g.output(loss, "loss")
    return g


TLN_FEEDS = {"x": r(4, 2, 3, seed=9), "W1": r(6, 5, seed=10), "b1": r(5, seed=11), "W2": r(6, 5, seed=12),
             "b2": r(6, seed=13)}


def test_export_matches_server_and_reimports(client):
    """Export -> onnx.reference equals the server's outputs; export -> import runs with the same outputs and grads."""
    graph = two_layer_net()
    model = export_onnx(graph)
    onnx.checker.check_model(model, full_check=True)
    want = client.run(graph, TLN_FEEDS)
    got = dict(zip([o.name for o in model.graph.output], ReferenceEvaluator(model).run(None, TLN_FEEDS)))
    assert sorted(got) == sorted(want.outputs)
    for name, value in want.outputs.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-12, atol=1e-12, err_msg=name)
    back = import_onnx(model)
    again = client.run(back.graph, back.feeds(TLN_FEEDS))
    for name, value in want.outputs.items():
        np.testing.assert_allclose(again.outputs[name], value, rtol=1e-12, atol=1e-12, err_msg=name)
    for name, value in want.grads.items():
        np.testing.assert_allclose(again.grads[name], value, rtol=1e-12, atol=1e-12, err_msg=name)


def test_export_with_params_writes_initializers_and_reimports_them():
    """params become initializers on export, and import returns them as parameters with the same values."""
    graph = two_layer_net()
    weights = {k: v for k, v in TLN_FEEDS.items() if k != "x"}
    model = export_onnx(graph, weights)
    assert [i.name for i in model.graph.input] == ["x"]
    back = import_onnx(model)
    assert back.inputs == ["x"] and sorted(back.params) == sorted(weights)
    for name, value in weights.items():
        np.testing.assert_array_equal(back.params[name], value)


def test_import_export_import_round_trip(client):
    """An ONNX model imported, exported and imported again computes the same as the original."""
    model = mlp_model()
    first = import_onnx(model)
    exported = export_onnx(first.graph, first.params)
    feeds = {"x": r(6, 4, seed=5)}
    want = ReferenceEvaluator(model).run(None, feeds)
    np.testing.assert_allclose(ReferenceEvaluator(exported).run(None, feeds)[0], want[0], rtol=1e-12)
    second = import_onnx(exported)
    result = client.run(second.graph, second.feeds(feeds), grad=False)
    np.testing.assert_allclose(result.outputs["probs"], want[0], rtol=1e-12)
    np.testing.assert_allclose(result.outputs["score"], want[1], rtol=1e-12)


def test_export_names_every_layer_without_onnx_equivalent():
    """Exporting a graph with layers ONNX lacks lists each such layer and its nodes."""
    g = gs.Graph()
    x, t = g.inputs("x", "t", shape=[-1, 4])
    g.output(g.SoftmaxWithLoss(g.Dropout(x, name="drop"), t, name="loss"), "loss")
    with pytest.raises(OnnxConversionError) as info:
        export_onnx(g)
    assert info.value.unsupported == {"Dropout": ["drop"], "SoftmaxWithLoss": ["loss"]}


def test_cli_import_onnx_registers_and_prints_id_and_parameters(client, target, tmp_path, capsys):
    """`gradserve import-onnx model.onnx --target --name` registers the graph; the name runs it on the server."""
    model = mlp_model()
    path = tmp_path / "mlp.onnx"
    onnx.save(model, path)
    assert cli.main(["import-onnx", str(path), "--target", target, "--name", "onnx-mlp"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["parameters"] == ["W1", "W2", "b1", "b2"]
    assert printed["inputs"] == ["x"] and printed["outputs"] == ["probs", "score"]
    imported = import_onnx(model)
    assert printed["graph_id"] == client.register(imported.graph)
    feeds = {"x": r(6, 4, seed=5)}
    by_name = client.run("onnx-mlp", imported.feeds(feeds), grad=False)
    np.testing.assert_allclose(by_name.outputs["probs"], ReferenceEvaluator(model).run(None, feeds)[0], rtol=1e-12)


def test_export_asks_for_the_rank_of_undeclared_inputs():
    """ONNX needs input ranks: an input without a declared shape is named, with how to give one."""
    g = gs.Graph()
    x, y = g.inputs("x", "y")
    g.output(x * y, "out")
    with pytest.raises(ValueError, match=r"'x', 'y' have none: declare it in the graph"):
        export_onnx(g)
    model = export_onnx(g, shapes={"x": [-1, 3], "y": [3]})
    assert [len(i.type.tensor_type.shape.dim) for i in model.graph.input] == [2, 1]


def test_integer_div_is_refused_rather_than_computed_differently():
    """ONNX's integer Div truncates and gradserve's does not: the import names the node instead of diverging."""
    model = make_model([N("Div", ["x", "y"], ["out"], name="div")], {"x": [3], "y": [3]}, ["out"],
                       elem=TensorProto.INT64)
    with pytest.raises(OnnxConversionError, match=r"Div node div \(opset 18\): integer Div truncates"):
        import_onnx(model)


def test_cli_import_onnx_reports_unsupported_operators(target, tmp_path, capsys):
    """`gradserve import-onnx` on a model with an unsupported operator exits 1 naming it, without a traceback."""
    path = tmp_path / "conv.onnx"
    onnx.save(make_model([N("LpPool", ["x"], ["out"], name="lp1", kernel_shape=[2, 2])], {"x": [1, 1, 4, 4]},
                         ["out"]), path)
    assert cli.main(["import-onnx", str(path), "--target", target]) == 1
    assert "unsupported operators at opset 18: LpPool (node lp1)" in capsys.readouterr().err
