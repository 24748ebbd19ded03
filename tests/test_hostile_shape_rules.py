"""Every built-in layer's shape rule (output_types) gives the shapes and dtypes its forward computes."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from gradserve.plugins import Attr, Layer, SchemaError, TensorType
from layer_inputs import layer_cases

#: Attributes for the layers whose attributes are required, or whose rules depend on them.
ATTRS = {
    "Slice": [{"starts": [1], "ends": [-1]}, {"starts": [0, 3], "ends": [2, 0], "axes": [0, -1], "steps": [1, -1]}],
    "Expand": [{"shape": [2, 1, 1, 1]}, {"shape": [4]}],
    "Pad": [{"pads": [1, 0, 2, -1, 0, 1, 0, 0]}, {"pads": [1, 2], "mode": "reflect"}, {"pads": [1, 2, 0, 1]}],
    "Unsqueeze": [{"axes": [0]}, {"axes": [-1, 1]}],
    "Tile": [{"repeats": [2, 1, 1, 3]}, {"repeats": [3]}, {"repeats": [2, 2]}],
    "Cast": [{"to": "float32"}, {"to": "int32"}],
    "TopK": [{"k": 2}, {"k": 1, "axis": 0}],
    "DepthToSpace": [{"blocksize": 1}, {"blocksize": 2}],
    "SpaceToDepth": [{"blocksize": 1}, {"blocksize": 2}],
    "Pooling": [{"kernel_shape": [2, 2]}, {"kernel_shape": [3], "pads": [1, 1], "mode": "average"}],
    "BitShift": [{"direction": "LEFT"}],
    "Reshape": [{"shape": [-1]}, {"shape": [0, -1], "copy_zeros": True}],
    "Squeeze": [{}, {"axes": [0]}],
    "Sum": [{}, {"axis": [1], "keepdims": True}],
    "ReduceMax": [{}, {"axes": [0, -1], "keepdims": False}],
    "ArgMax": [{}, {"axis": -1, "keepdims": False}],
    "Concat": [{}, {"axis": -1}],
    "Gather": [{}, {"axis": 1}],
    "Convolution": [{}, {"pads": [1, 1, 1, 1], "strides": [2, 2]}],
    "LayerNormalization": [{}, {"axis": 1}],
    "BatchNormalization": [{}, {"spatial": True}],
    "Softmax": [{}, {"axis": 0}],
}

#: Layers whose rule refuses some inputs forward takes, on purpose: an Affine bias that broadcasts the
#: product to another shape computes, but its gradients cannot have the parameters' shapes.
STRICTER = {"Affine"}

SHAPES = [(2, 3, 4, 4), (3, 4), (4,), (), (1, 3, 1, 1), (2, 4, 1, 1)]
DTYPES = [np.float64, np.float32, np.int64, np.bool_]


def candidates(cls, rng):
    """Inputs for ``cls``: its gradient cases, then every combination of a few shapes and dtypes."""
    for inputs, attrs in layer_cases(rng).get(cls.name, []):
        yield [np.asarray(inputs[n]) for n in cls.inputs], attrs
    combos = itertools.product(SHAPES, repeat=len(cls.inputs)) if len(cls.inputs) < 4 else [
        [SHAPES[0]] * len(cls.inputs), [(5, 3)] + [(3,)] * (len(cls.inputs) - 1)]
    for shapes in combos:
        for dtype in DTYPES:
            arrays = [(rng.uniform(0.5, 2.0, s) if np.dtype(dtype).kind == "f" else rng.integers(0, 2, s)).astype(dtype)
                      for s in shapes]
            for attrs in ATTRS.get(cls.name, [{}]):
                yield arrays, attrs


def ruled_layers():
    """Every built-in layer class."""
    from gradserve.server.service.registry import load_registry
    registry = load_registry()
    return [entry.cls for name, entry in sorted(registry.layers.items())
            if entry.plugin == "builtin" or entry.cls.__module__.startswith("gradserve.plugins.builtin")]


@pytest.mark.parametrize("cls", ruled_layers(), ids=lambda c: c.name)
def test_the_shape_rule_agrees_with_forward(cls):
    """Wherever forward succeeds, output_types gives its outputs' shapes and dtypes (or None: unknown)."""
    rng = np.random.default_rng(0)
    agreed = 0
    for arrays, attrs in candidates(cls, rng):
        try:
            bound = cls.bind_attributes(attrs)
        except SchemaError:
            continue
        layer = cls(**bound)
        try:
            with np.errstate(all="ignore"):
                result = layer.forward(*arrays)
        except Exception:  # noqa: BLE001 - inputs forward refuses say nothing about the rule
            continue
        outs = result if isinstance(result, tuple) else (result,)
        try:
            said = cls(**bound).output_types(*(TensorType(a.shape, a.dtype, a) for a in arrays))
        except ValueError:
            if cls.name in STRICTER:
                continue
            raise
        if said is None:
            continue
        got = [(np.shape(o), np.asarray(o).dtype) for o in outs]
        assert [(tuple(t.shape), np.dtype(t.dtype)) for t in said] == got, (cls.name, attrs, [a.shape for a in arrays])
        agreed += 1
    if cls.name not in ("Range", "ConstantOfShape", "OneHot"):
        assert agreed, f"no case ran {cls.name}'s rule"


def test_every_builtin_layer_declares_a_shape_rule():
    """No built-in layer leaves its output sizes to be found by running it."""
    from gradserve.plugins import Layer
    missing = [cls.name for cls in ruled_layers() if cls.output_types is Layer.output_types]
    assert not missing


class Repeat(Layer):
    """x repeated `times` times along its only axis (a plugin's layer that declares no shape rule)."""

    inputs = ("x",)
    attributes = {"times": Attr("int", 2, "how many copies")}

    def forward(self, x):
        return np.tile(x, self.times)

    def backward(self, dout):
        return (dout.reshape(self.times, -1).sum(axis=0),)


def test_sizes_past_a_layer_without_a_rule_are_checked_from_what_it_computed(registry):
    """After a layer that declares no rule runs, the nodes that follow are size-checked before they run."""
    from gradserve.server.engine import execute
    from gradserve.server.engine.errors import LimitError
    from gradserve.server.engine.plan import SizeLimits, compile_graph
    from gradserve.server.engine.spec import GraphSpec, InputSpec, NodeSpec, OutputSpec
    from gradserve.server.service.registry import LayerEntry

    class WithRepeat:
        def get(self, op):
            return LayerEntry(Repeat, "test", "test", "0") if op == "Repeat" else registry.get(op)

        def names(self):
            return registry.names() + ["Repeat"]

    def outer_product_plan(times: int):
        spec = GraphSpec((InputSpec("x"),), (
            NodeSpec("r", "Repeat", ("x",), (), {"times": times}),
            NodeSpec("col", "Reshape", ("r",), (), {"shape": (times, 1)}),
            NodeSpec("row", "Reshape", ("r",), (), {"shape": (1, times)}),
            NodeSpec("outer", "Mul", ("col", "row")),
        ), (OutputSpec("out", "outer"),))
        return compile_graph(spec, WithRepeat(), sizes=SizeLimits(max_tensor_elements=1000, max_pass_elements=10_000))

    with pytest.raises(LimitError) as info:
        execute.forward(outer_product_plan(600), {"x": np.ones(1)})
    assert info.value.node == "outer" and "max-tensor-elements" in str(info.value)
    assert execute.forward(outer_product_plan(20), {"x": np.ones(1)}).outputs()["out"].shape == (20, 20)
