"""The backprop engine in-process: the book's examples, accumulation, broadcasting, gradient checks."""

from __future__ import annotations

import numpy as np
import pytest

from gradserve.server.engine import execute as engine, gradcheck
from gradserve.server.engine.spec import GraphSpec, InputSpec, NodeSpec, OutputSpec
from gradserve.server.engine.plan import compile_graph
from layer_inputs import layer_cases
from layer_inputs_onnx import onnx_layer_cases


def graph(inputs, nodes, outputs) -> GraphSpec:
    """A GraphSpec from plain lists: nodes as (name, op, inputs[, attrs]), outputs as names or (name, value)."""
    return GraphSpec(
        tuple(InputSpec(i) if isinstance(i, str) else i for i in inputs),
        tuple(NodeSpec(n[0], n[1], tuple(n[2]), (), n[3] if len(n) > 3 else {}) for n in nodes),
        tuple(OutputSpec(o, o) if isinstance(o, str) else OutputSpec(*o) for o in outputs),
    )


def f64(**values):
    return {k: np.asarray(v, dtype=np.float64) for k, v in values.items()}


APPLE = graph(["apple", "apple_num", "tax"],
              [("apple_price", "Mul", ["apple", "apple_num"]), ("price", "Mul", ["apple_price", "tax"])],
              ["price"])

APPLE_ORANGE = graph(
    ["apple", "apple_num", "orange", "orange_num", "tax"],
    [("apple_price", "Mul", ["apple", "apple_num"]), ("orange_price", "Mul", ["orange", "orange_num"]),
     ("all_price", "Add", ["apple_price", "orange_price"]), ("price", "Mul", ["all_price", "tax"])],
    ["price"],
)


def test_seed_apple_example(registry):
    """The seed's apple graph: 200 x 5 x 1.1 = 1100, gradients 5.5, 220 and 1000."""
    outputs, grads = engine.run(compile_graph(APPLE, registry), f64(apple=200, apple_num=5, tax=1.1))
    assert outputs["price"] == pytest.approx(200 * 5 * 1.1)
    assert grads["apple"] == pytest.approx(5.5)
    assert grads["apple_num"] == pytest.approx(220)
    assert grads["tax"] == pytest.approx(1000)


def test_book_apple_example(registry):
    """The book's apple graph: 100 x 2 x 1.1 = 220, gradients 2.2, 110 and 200, as numpy computes them."""
    outputs, grads = engine.run(compile_graph(APPLE, registry), f64(apple=100, apple_num=2, tax=1.1))
    assert outputs["price"] == np.float64(100) * np.float64(2) * np.float64(1.1)
    assert (grads["apple"], grads["apple_num"], grads["tax"]) == (1.1 * 2, 1.1 * 100, 200.0)


def test_apple_orange_example(registry):
    """The book's apple-and-orange graph: 715 with gradients 2.2, 110, 3.3, 165 and 650."""
    feeds = f64(apple=100, apple_num=2, orange=150, orange_num=3, tax=1.1)
    outputs, grads = engine.run(compile_graph(APPLE_ORANGE, registry), feeds)
    assert outputs["price"] == pytest.approx(715)
    expected = {"apple": 2.2, "apple_num": 110, "orange": 3.3, "orange_num": 165, "tax": 650}
    assert {k: float(v) for k, v in grads.items()} == pytest.approx(expected)


def test_value_used_twice_sums_gradients(registry):
    """x * x has gradient 2x: gradients from both uses of x are summed."""
    plan = compile_graph(graph(["x"], [("sq", "Mul", ["x", "x"])], ["sq"]), registry)
    x = np.array([1.0, -2.0, 3.0])
    outputs, grads = engine.run(plan, {"x": x}, {"sq": np.ones(3)})
    np.testing.assert_array_equal(outputs["sq"], x * x)
    np.testing.assert_array_equal(grads["x"], 2 * x)


def test_fan_out_through_several_nodes_sums(registry):
    """A value feeding three nodes gets the sum of the three gradients (y = x*a + x*b + exp(x))."""
    spec = graph(["x", "a", "b"], [("xa", "Mul", ["x", "a"]), ("xb", "Mul", ["x", "b"]), ("ex", "Exp", ["x"]),
                                   ("s1", "Add", ["xa", "xb"]), ("y", "Add", ["s1", "ex"]), ("loss", "Sum", ["y"])],
                 ["loss"])
    x, a, b = np.array([0.5, -1.0]), np.array([2.0, 3.0]), np.array([-1.0, 4.0])
    _, grads = engine.run(compile_graph(spec, registry), {"x": x, "a": a, "b": b})
    np.testing.assert_allclose(grads["x"], a + b + np.exp(x))


def test_broadcast_gradients_have_input_shapes(registry):
    """Elementwise layers reduce gradients back to each input's shape under broadcasting."""
    for op in ("Add", "Sub", "Mul", "Div"):
        plan = compile_graph(graph(["x", "y"], [("z", op, ["x", "y"]), ("s", "Sum", ["z"])], ["s"]), registry)
        x, y = np.ones((2, 3, 4)), np.full((3, 1), 2.0)
        _, grads = engine.run(plan, {"x": x, "y": y})
        assert grads["x"].shape == x.shape and grads["y"].shape == y.shape, op


def test_dtype_is_preserved(registry):
    """float32 in, float32 out: values and gradients keep the feeds' dtype."""
    feeds = {k: np.float32(v) * np.ones((), np.float32) for k, v in dict(apple=200, apple_num=5, tax=1.1).items()}
    outputs, grads = engine.run(compile_graph(APPLE, registry), feeds)
    assert outputs["price"].dtype == np.float32
    assert all(g.dtype == np.float32 for g in grads.values())


def test_labels_take_no_gradient(registry):
    """Integer labels feed SoftmaxWithLoss but get no gradient; x does."""
    plan = compile_graph(graph(["x", "t"], [("loss", "SoftmaxWithLoss", ["x", "t"])], ["loss"]), registry)
    _, grads = engine.run(plan, {"x": np.zeros((2, 3)), "t": np.array([0, 2])})
    assert set(grads) == {"x"}
    np.testing.assert_allclose(grads["x"], (np.full((2, 3), 1 / 3) - np.eye(3)[[0, 2]]) / 2)


def test_only_requested_gradients_are_returned(registry):
    """wrt limits the gradients to the named inputs."""
    _, grads = engine.run(compile_graph(APPLE, registry), f64(apple=200, apple_num=5, tax=1.1), wrt=["tax"])
    assert list(grads) == ["tax"]


def test_non_scalar_output_needs_a_seed(registry):
    """Backward of a non-scalar output without a given gradient is refused, naming the outputs."""
    plan = compile_graph(graph(["x"], [("y", "Relu", ["x"])], ["y"]), registry)
    with pytest.raises(engine.FeedError, match="give a gradient for one of: y"):
        engine.run(plan, {"x": np.ones(3)})


def test_seed_gradient_scales_result(registry):
    """A given output gradient seeds backward (dprice = 2 doubles every gradient)."""
    _, grads = engine.run(compile_graph(APPLE, registry), f64(apple=200, apple_num=5, tax=1.1),
                          {"price": np.float64(2.0)})
    assert grads["apple"] == pytest.approx(11.0)


def test_multi_output_node_values_are_addressable(registry):
    """BatchNormalization's three outputs are values name:out, name:running_mean_out, name:running_var_out."""
    spec = graph(["x", "g", "b", "m", "v"], [("bn", "BatchNormalization", ["x", "g", "b", "m", "v"])],
                 [("y", "bn:out"), ("mean", "bn:running_mean_out")])
    plan = compile_graph(spec, registry)
    x = np.arange(6.0).reshape(3, 2)
    state = engine.forward(plan, {"x": x, "g": np.ones(2), "b": np.zeros(2), "m": np.zeros(2), "v": np.ones(2)},
                           training=True)
    np.testing.assert_allclose(state.outputs()["mean"], 0.1 * x.mean(axis=0))


def test_plan_is_cached_by_content(registry):
    """Equal graphs have equal ids; any change gives another id."""
    same = graph(["apple", "apple_num", "tax"],
                 [("apple_price", "Mul", ["apple", "apple_num"]), ("price", "Mul", ["apple_price", "tax"])], ["price"])
    other = graph(["apple", "apple_num", "tax"],
                  [("apple_price", "Mul", ["apple", "apple_num"]), ("price", "Add", ["apple_price", "tax"])], ["price"])
    assert APPLE.graph_id() == same.graph_id() != other.graph_id()
    assert GraphSpec.from_canonical(APPLE.canonical()).graph_id() == APPLE.graph_id()


CASES = {**layer_cases(np.random.default_rng(7)), **onnx_layer_cases(np.random.default_rng(7))}


def test_every_builtin_layer_has_a_gradient_case(registry):
    """The gradient-check table covers every layer of the built-in plugin."""
    builtin = {name for name, entry in registry.layers.items() if entry.distribution == "gradserve"}
    assert builtin <= set(CASES), f"add cases for {sorted(builtin - set(CASES))}"


@pytest.mark.parametrize("op,index", [(op, i) for op, cases in CASES.items() for i in range(len(cases))])
def test_layer_gradient_matches_numerical(registry, op, index):
    """Every built-in layer's backprop equals central differences in float64 (random inputs, broadcasting)."""
    feeds, attrs = CASES[op][index]
    entry = registry.get(op)
    names = list(entry.cls.inputs)
    first = "node" if len(entry.cls.outputs) == 1 else f"node:{entry.cls.outputs[0]}"
    spec = graph(names, [("node", op, names, attrs)], [("out", first)])
    plan = compile_graph(spec, registry)
    out = engine.forward(plan, feeds).outputs()["out"]
    if out.dtype.kind != "f":
        pytest.skip(f"{op} gives {out.dtype} here: no gradient flows through it")
    seed = {"out": np.random.default_rng(1).standard_normal(out.shape)}
    seeded = op == "Dropout"  # a fixed mask: the same seed in every forward
    checks = gradcheck.check_gradients(plan, feeds, output_grads=seed, eps=1e-6) if not seeded else \
        _dropout_check(plan, feeds, seed)
    for check in checks:
        assert check.max_abs_diff < 1e-6 * max(1.0, float(np.abs(check.backprop).max())), (op, check.name)


def _dropout_check(plan, feeds, seed):
    """Dropout in training with a fixed seed is linear in x: its gradient is the mask times dout."""
    state = engine.forward(plan, feeds, training=True, seed=3)
    grads = state.backward(seed)
    mask = state.outputs()["out"] != 0
    return [gradcheck.InputCheck("x", seed["out"] * mask, grads["x"])]


def test_engine_asks_affine_for_no_gradient_of_its_data_input(registry):
    """With wrt the parameters only, the engine marks Affine's x as not needed (the layer skips that GEMM) and the
    parameters' gradients are the ones a full backward gives; a trace still gets every gradient."""
    spec = graph(["x", "W", "b", "t"], [("fc", "Affine", ["x", "W", "b"]), ("act", "Relu", ["fc"]),
                                        ("loss", "SoftmaxWithLoss", ["act", "t"])], ["loss"])
    plan = compile_graph(spec, registry)
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((4, 5)), "W": rng.standard_normal((5, 3)), "b": rng.standard_normal(3),
             "t": np.array([0, 2, 1, 0])}
    every = engine.forward(plan, feeds).backward()
    state = engine.forward(plan, feeds)
    params = state.backward(wrt=["W", "b"])
    fc = state.layers[[step.node for step in plan.steps].index("fc")]
    assert fc.needs_input_grad == (False, True, True)
    assert set(params) == {"W", "b"} and all(np.array_equal(params[k], every[k]) for k in params)
    traced: dict = {}
    engine.forward(plan, feeds).backward(wrt=["W", "b"], value_grads=traced)
    assert np.array_equal(traced["x"], every["x"])
    assert engine.forward(plan, feeds).layers[0].needs_input_grad is None  # nothing asked before backward
    retained = engine.forward(plan, feeds)  # a session: Backward for the parameters, then for everything
    retained.backward(wrt=["W", "b"])
    again = retained.backward()
    assert set(again) == set(every) and all(np.array_equal(again[k], every[k]) for k in every)


def test_forward_only_runs_no_backward(registry):
    """wrt FORWARD_ONLY gives outputs and no gradients, and needs no seed (a non-scalar output without one)."""
    plan = compile_graph(graph(["x"], [("y", "Relu", ["x"])], ["y"]), registry)
    x = np.array([-1.0, 2.0])
    outputs, grads = engine.run(plan, {"x": x}, wrt=engine.FORWARD_ONLY)
    assert grads == {} and np.array_equal(outputs["y"], [0.0, 2.0])
    state, grads = engine.forward_backward(plan, {"x": x}, wrt=engine.FORWARD_ONLY, value_grads={})
    assert grads == {} and np.array_equal(state.named_values()["y"], [0.0, 2.0])
    with pytest.raises(Exception, match="no output is a scalar"):
        engine.run(plan, {"x": x})  # with gradients asked, the same call needs a seed
