"""Graph validation: every malformed graph or feed raises a specific error that names the node."""

from __future__ import annotations

import numpy as np
import pytest

from gradserve.server.engine import execute as engine
from gradserve.server.engine.errors import (
    ArityError,
    AttributeValueError,
    ComputeError,
    CycleError,
    FeedError,
    GraphError,
    NameConflictError,
    UnknownOpError,
)
from gradserve.server.engine.spec import GraphSpec, InputSpec, NodeSpec, OutputSpec
from gradserve.server.engine.plan import compile_graph


def spec(nodes, inputs=("x", "y"), outputs=(("out", "n1"),)):
    return GraphSpec(
        tuple(i if isinstance(i, InputSpec) else InputSpec(i) for i in inputs),
        tuple(NodeSpec(*n) for n in nodes),
        tuple(OutputSpec(*o) for o in outputs),
    )


def test_unknown_op_lists_known_layers(registry):
    """An unknown op names the node and lists the layers the server has."""
    with pytest.raises(UnknownOpError) as info:
        compile_graph(spec([("n1", "Mull", ("x", "y"))]), registry)
    assert info.value.node == "n1"
    assert "'Mull'" in str(info.value) and "Mul, " in str(info.value)


def test_wrong_arity(registry):
    """A node with the wrong number of inputs says how many the layer takes."""
    with pytest.raises(ArityError, match=r"node 'n1': Mul takes 2 inputs \(x, y\), got 1"):
        compile_graph(spec([("n1", "Mul", ("x",))]), registry)


def test_wrong_output_count(registry):
    """Naming two outputs for a one-output layer is an arity error."""
    with pytest.raises(ArityError, match="node 'n1': Mul has 1 outputs"):
        compile_graph(spec([("n1", "Mul", ("x", "y"), ("a", "b"))]), registry)


def test_unknown_attribute(registry):
    """An attribute the layer does not declare is refused, listing the layer's attributes."""
    with pytest.raises(AttributeValueError, match=r"node 'n1': unknown attribute 'axes' for Sum \(its attributes: axis, keepdims\)"):
        compile_graph(spec([("n1", "Sum", ("x",), (), {"axes": (0,)})], inputs=("x",)), registry)


def test_wrong_attribute_type(registry):
    """An attribute of the wrong type says what was expected."""
    with pytest.raises(AttributeValueError, match="node 'n1': attribute 'keepdims' of Sum: expected bool, got str"):
        compile_graph(spec([("n1", "Sum", ("x",), (), {"keepdims": "yes"})], inputs=("x",)), registry)


def test_missing_required_attribute(registry):
    """A required attribute left out is named."""
    with pytest.raises(AttributeValueError, match="node 'n1': attribute 'shape' of Reshape is required"):
        compile_graph(spec([("n1", "Reshape", ("x",))], inputs=("x",)), registry)


def test_dangling_input(registry):
    """An input name nothing defines is a dangling name, and the node is named."""
    with pytest.raises(NameConflictError, match="node 'n1': input 'z' is neither a graph input nor any node's output"):
        compile_graph(spec([("n1", "Mul", ("x", "z"))]), registry)


def test_duplicate_node_name(registry):
    """Two nodes with one name are refused."""
    with pytest.raises(NameConflictError, match="node 'n1': two nodes share this name"):
        compile_graph(spec([("n1", "Mul", ("x", "y")), ("n1", "Add", ("x", "y"))]), registry)


def test_duplicate_value_name(registry):
    """A node output that shadows a graph input is refused."""
    with pytest.raises(NameConflictError, match="node 'n1': output value 'x' is already a graph input"):
        compile_graph(spec([("n1", "Mul", ("x", "y"), ("x",))], outputs=(("out", "x"),)), registry)


def test_duplicate_input_name(registry):
    """A graph input declared twice is refused."""
    with pytest.raises(NameConflictError, match="graph input 'x' is declared twice"):
        compile_graph(spec([("n1", "Mul", ("x", "x"))], inputs=("x", "x")), registry)


def test_cycle(registry):
    """Nodes that depend on each other form a cycle; one of them is named."""
    with pytest.raises(CycleError, match=r"node 'n[12]': the node is on a cycle"):
        compile_graph(spec([("n1", "Mul", ("x", "n2")), ("n2", "Add", ("n1", "y"))]), registry)


def test_unknown_output(registry):
    """A graph output naming an undefined value is refused."""
    with pytest.raises(GraphError, match="graph output 'out' names value 'nope'"):
        compile_graph(spec([("n1", "Mul", ("x", "y"))], outputs=(("out", "nope"),)), registry)


def test_no_outputs(registry):
    """A graph with no outputs is refused."""
    with pytest.raises(GraphError, match="no outputs"):
        compile_graph(spec([("n1", "Mul", ("x", "y"))], outputs=()), registry)


def test_missing_and_extra_feeds(registry):
    """Feeds must match the graph's inputs exactly, and the message lists them."""
    plan = compile_graph(spec([("n1", "Mul", ("x", "y"))]), registry)
    with pytest.raises(FeedError, match="missing feed for graph input 'y'"):
        engine.forward(plan, {"x": np.ones(2)})
    with pytest.raises(FeedError, match="feed 'w' is not a graph input"):
        engine.forward(plan, {"x": np.ones(2), "y": np.ones(2), "w": np.ones(2)})


def test_declared_dtype_and_shape_are_checked(registry):
    """An input declared float32 of shape (-1, 3) refuses float64 and (2, 4) feeds."""
    plan = compile_graph(spec([("n1", "Relu", ("x",))], inputs=(InputSpec("x", "float32", (-1, 3)),)), registry)
    engine.forward(plan, {"x": np.ones((5, 3), np.float32)})
    with pytest.raises(FeedError, match="input 'x' expects dtype float32, got float64"):
        engine.forward(plan, {"x": np.ones((5, 3))})
    with pytest.raises(FeedError, match=r"input 'x' expects shape \[-1, 3\] \(-1 = any\), got \[2, 4\]"):
        engine.forward(plan, {"x": np.ones((2, 4), np.float32)})


def test_shape_mismatch_names_node(registry):
    """(2,3) * (4,) cannot broadcast: the error names the node and both shapes."""
    plan = compile_graph(spec([("n1", "Mul", ("x", "y"))]), registry)
    with pytest.raises(ComputeError, match=r"node 'n1': Mul.forward failed on \(float64\[2, 3\], float64\[4\]\)"):
        engine.forward(plan, {"x": np.ones((2, 3)), "y": np.ones(4)})


def test_bad_labels_name_node(registry):
    """Labels out of range for SoftmaxWithLoss are refused with the node's name."""
    plan = compile_graph(spec([("n1", "SoftmaxWithLoss", ("x", "t"))], inputs=("x", "t")), registry)
    with pytest.raises(ComputeError, match=r"node 'n1'.*labels must lie in \[0, 3\)"):
        engine.forward(plan, {"x": np.ones((2, 3)), "t": np.array([0, 3])})


def test_unknown_wrt_and_seed_names(registry):
    """Gradients for a non-input, or a seed for a non-output, are refused naming the choices."""
    plan = compile_graph(spec([("n1", "Mul", ("x", "y"))]), registry)
    state = engine.forward(plan, {"x": np.ones(()), "y": np.ones(())})
    with pytest.raises(FeedError, match=r"cannot take gradients for 'q': not a graph input \(inputs: x, y\)"):
        state.backward(wrt=["q"])
    with pytest.raises(FeedError, match=r"gradient given for 'n1', which is not a graph output \(outputs: out\)"):
        state.backward({"n1": np.ones(())})


def test_affine_without_batch_axis_says_so(registry):
    """A 0-d x for Affine is refused with what the layer needs, naming the node."""
    plan = compile_graph(spec([("n1", "Affine", ("x", "W", "b"))], inputs=("x", "W", "b")), registry)
    with pytest.raises(ComputeError, match="node 'n1'.*x must have a batch axis"):
        engine.forward(plan, {"x": np.ones(()), "W": np.ones((1, 2)), "b": np.ones(2)})
