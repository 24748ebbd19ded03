"""The conformance kit (gradserve.testing): it fails broken layers and passes every built-in layer."""

from __future__ import annotations

import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import gradserve.plugins.builtin as builtin
from gradserve.plugins import Attr, Layer, hookimpl, reduce_to_shape
from gradserve.server.service.registry import load_registry
from gradserve.testing import Case, ConformanceError, check_layer, plugin_cases, plugin_layers
from layer_inputs import layer_cases
from layer_inputs_onnx import onnx_layer_cases

_rng = np.random.default_rng(7)


def normal(*shape):
    return _rng.standard_normal(shape)


def away_from_zero(*shape):
    """Values at least 0.1 from zero, where Relu's kink cannot spoil a numerical gradient."""
    return _rng.choice([-1.0, 1.0], size=shape) * _rng.uniform(0.1, 1.0, size=shape)


def positive(*shape):
    return _rng.uniform(0.5, 2.0, size=shape)


def batchnorm_inputs(*x_shape):
    features = int(np.prod(x_shape[1:]))
    return {"x": normal(*x_shape), "gamma": positive(features), "beta": normal(features),
            "running_mean": normal(features), "running_var": positive(features)}


def builtin_cases() -> dict[str, list[Case]]:
    """Cases for every built-in layer: the engine tests' inputs (layer_inputs.py) and more."""
    given_cases = {**layer_cases(_rng), **onnx_layer_cases(_rng)}
    cases = {op: [Case(inputs, attrs) for inputs, attrs in given] for op, given in given_cases.items()}
    # What only the kit checks: training with a seed, scalars against arrays, 1-D @ 1-D, 4-D batch norm.
    extra = {
        "Mul": [Case({"x": normal(2, 3), "y": normal()}, id="scalar")],
        "Div": [Case({"x": normal(), "y": positive(2, 3)}, id="scalar")],
        "MatMul": [Case({"x": normal(3), "y": normal(3)}, id="dot"), Case({"x": normal(2, 3), "y": normal(3)}),
                   # batch axes broadcast both ways: the gradients sum back over the copies
                   Case({"x": normal(2, 1, 3, 4), "y": normal(5, 4, 2)}, id="batch-broadcast"),
                   Case({"x": normal(3, 4), "y": normal(2, 4, 5)}, id="matrix-times-batch")],
        "Dropout": [Case({"x": normal(3, 4)}, {"ratio": 0.3}, training=True, seed=11)],
        "BatchNormalization": [Case(batchnorm_inputs(5, 3), training=True, id="training"),
                               Case(batchnorm_inputs(4, 2, 2, 2), training=True, id="training-4d")],
    }
    for op, more in extra.items():
        cases.setdefault(op, []).extend(more)
    return cases


BUILTIN_CASES = builtin_cases()
BUILTINS = {name: entry.cls for name, entry in load_registry().layers.items() if entry.plugin == "builtin"}


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_every_builtin_layer_conforms(name, check_layer):
    """Every built-in layer the registry serves passes the kit for each of its cases (broadcast shapes included)."""
    assert name in BUILTIN_CASES, f"add conformance cases for the built-in layer {name}"
    for case in BUILTIN_CASES[name]:
        report = check_layer(BUILTINS[name], case.inputs, case.attrs, training=case.training, seed=case.seed)
        # Integer and bool results (Equal, ArgMax, an integer Abs) have no gradient to check.
        floats = any(np.asarray(out).dtype.kind == "f" for out in report.outputs.values())
        assert "numerical gradient" in report.checks or not floats


def test_plugin_cases_cover_the_builtin_module():
    """plugin_cases() finds the layers through the module's register_layers hook, one item per case."""
    items = plugin_cases(builtin, BUILTIN_CASES)
    assert {item.layer.name for item in items} == set(plugin_layers(builtin)) == set(BUILTIN_CASES)
    assert {"Mul-scalar", "Dropout[ratio=0.3,training]"} <= {str(item) for item in items}


# -- broken layers, each with the one mistake the kit must catch --


class WrongGradientMul(Layer):
    """Mul whose dx uses x instead of y."""

    inputs = ("x", "y")

    def forward(self, x, y):
        self.x, self.y = x, y
        return x * y

    def backward(self, dout):
        return dout * self.x, dout * self.x


class InputMutatingRelu(Layer):
    """Relu that clips its input in place."""

    inputs = ("x",)

    def forward(self, x):
        self.mask = x <= 0
        np.maximum(x, 0, out=x)
        return x.copy()

    def backward(self, dout):
        return (np.where(self.mask, 0.0, dout),)


class BookRelu(Layer):
    """The book's Relu: backward zeroes dout in place."""

    inputs = ("x",)

    def forward(self, x):
        self.mask = x <= 0
        out = x.copy()
        out[self.mask] = 0
        return out

    def backward(self, dout):
        dout[self.mask] = 0
        return (dout,)


class UnreducedAdd(Layer):
    """Add that forgets to reduce the broadcast gradient to y's shape."""

    inputs = ("x", "y")

    def forward(self, x, y):
        return x + y

    def backward(self, dout):
        return dout, dout


class HalfMul(Layer):
    """Mul that returns no gradient for y."""

    inputs = ("x", "y")

    def forward(self, x, y):
        self.y = y
        return x * y

    def backward(self, dout):
        return dout * self.y, None


class MisreadNeedsMatMul(Layer):
    """MatMul that reads needs_input_grad backwards: it skips the gradient it is asked for."""

    inputs = ("x", "y")

    def forward(self, x, y):
        self.x, self.y = x, y
        return x @ y

    def backward(self, dout):
        needs = self.needs_input_grad or (True, True)
        dx = dout @ self.y.T if needs[1] else None
        dy = self.x.T @ dout if needs[0] else None
        return dx, dy


def caught(layer_cls, inputs) -> ConformanceError:
    with pytest.raises(ConformanceError) as info:
        check_layer(layer_cls, inputs)
    return info.value


def test_kit_catches_a_wrong_gradient():
    """A wrong backward fails the numerical check, naming the input and showing both numbers."""
    error = caught(WrongGradientMul, {"x": normal(2, 3), "y": normal(2, 3)})
    assert (error.check, error.input) == ("numerical gradient", "x")
    assert "worst at index" in str(error) and "backprop" in str(error) and "numerical" in str(error)


class NanGradientMul(WrongGradientMul):
    """Mul whose dx is NaN where it should be y."""

    def backward(self, dout):
        return np.full_like(dout * self.y, np.nan), dout * self.x


def test_kit_catches_a_nan_gradient():
    """A NaN gradient never passes: each comparison treats NaN as a disagreement."""
    error = caught(NanGradientMul, {"x": normal(2, 3), "y": normal(2, 3)})
    assert error.input == "x"


def test_kit_catches_a_mutated_input():
    """Writing into an input during forward fails the input mutation check with the changed element."""
    x = away_from_zero(2, 3)
    x[0, 0] = -0.5
    error = caught(InputMutatingRelu, {"x": x})
    assert (error.check, error.input) == ("input mutation", "x")
    assert "forward wrote into input 'x'" in str(error) and "was -0.5, now 0.0" in str(error)


def test_kit_catches_a_mutated_dout():
    """The book's in-place Relu.backward fails the dout mutation check."""
    error = caught(BookRelu, {"x": away_from_zero(2, 3)})
    assert error.check == "dout mutation"
    assert "backward wrote into the dout of output 'out'" in str(error)


def test_kit_catches_a_wrong_gradient_shape():
    """A broadcast gradient not reduced to its input's shape fails the gradient shape check with both shapes."""
    error = caught(UnreducedAdd, {"x": normal(2, 3), "y": normal(3)})
    assert (error.check, error.input) == ("gradient shape", "y")
    assert "shape (2, 3), the input has shape (3,)" in str(error)


def test_kit_catches_a_missing_gradient():
    """None for a differentiable input fails the missing gradient check."""
    error = caught(HalfMul, {"x": normal(2, 3), "y": normal(2, 3)})
    assert (error.check, error.input) == ("missing gradient", "y")


def test_kit_catches_a_layer_that_skips_the_gradient_it_is_asked_for():
    """needs_input_grad marking one input: a layer that then returns None for that input fails the check."""
    error = caught(MisreadNeedsMatMul, {"x": normal(2, 3), "y": normal(3, 4)})
    assert (error.check, error.input) == ("needed gradients", "x")
    assert "needs_input_grad (True, False)" in str(error)


def test_kit_leaves_the_callers_arrays_alone():
    """check_layer works on copies: even a mutating layer does not change the arrays a test passed in."""
    x = np.array([-1.0, 2.0])
    caught(InputMutatingRelu, {"x": x})
    assert x.tolist() == [-1.0, 2.0]


def test_kit_catches_undeclared_randomness():
    """A layer drawing from np.random instead of self.rng fails the determinism check."""

    class GlobalNoise(Layer):
        """Adds noise from numpy's global generator."""

        inputs = ("x",)

        def forward(self, x):
            return x + np.random.standard_normal(x.shape)

        def backward(self, dout):
            return (dout,)

    assert caught(GlobalNoise, {"x": normal(2)}).check == "determinism"


def test_kit_catches_a_precision_change():
    """A float64 numpy scalar that promotes float32 outputs fails the output dtype check."""

    class Halve(Layer):
        """Halves x."""

        inputs = ("x",)

        def forward(self, x):
            return x * np.float64(0.5)

        def backward(self, dout):
            return (dout * 0.5,)

    error = caught(Halve, {"x": normal(3)})
    assert error.check == "output dtype" and "float64 for float32 inputs" in str(error)


def test_kit_checks_the_schema_first():
    """A layer without a docstring or with an undocumented attribute fails the schema check."""

    class Scale(Layer):
        inputs = ("x",)
        attributes = {"factor": Attr("float", 2.0)}

        def forward(self, x):
            return x * self.factor

        def backward(self, dout):
            return (dout * self.factor,)

    assert caught(Scale, {"x": normal(3)}).check == "schema"
    Scale.__doc__ = "Scales x."
    assert "no doc" in str(caught(Scale, {"x": normal(3)}))


def test_plugin_cases_require_a_case_for_every_registered_layer():
    """A plugin module whose layers lack cases fails registration, naming the untested layer."""

    @hookimpl
    def register_layers(register):
        register(WrongGradientMul)
        register(HalfMul)

    module = types.ModuleType("two_layer_plugin")
    module.register_layers = register_layers
    with pytest.raises(ConformanceError, match=r"no test case for registered layer\(s\) \['HalfMul'\]"):
        plugin_cases(module, {"WrongGradientMul": Case({"x": normal(2), "y": normal(2)})})


def test_plugin_layers_needs_a_hookimpl():
    """A register_layers without @hookimpl would be ignored by the server, so the kit refuses it."""
    module = types.ModuleType("undecorated_plugin")
    module.register_layers = lambda register: register(HalfMul)
    with pytest.raises(ConformanceError, match="no @hookimpl-decorated register_layers"):
        plugin_layers(module)


def test_reduce_to_shape_is_what_fixes_the_unreduced_add():
    """The fix the gradient shape message suggests (reduce_to_shape) makes the layer pass."""

    class ReducedAdd(UnreducedAdd):
        """Add with its broadcast gradients reduced."""

        def forward(self, x, y):
            self.shapes = x.shape, y.shape
            return x + y

        def backward(self, dout):
            return reduce_to_shape(dout, self.shapes[0]), reduce_to_shape(dout, self.shapes[1])

    check_layer(ReducedAdd, {"x": normal(2, 3), "y": normal(3)})


def test_author_guide_plugin_is_complete_and_conforms(monkeypatch):
    """docs/plugins.md's plugin is under 40 lines with its pyproject, and its own test code passes the kit."""
    guide = (Path(__file__).resolve().parent.parent / "docs" / "plugins.md").read_text()
    blocks = re.findall(r"```(\w+)\n(.*?)```", guide, re.S)
    source = next(code for lang, code in blocks if lang == "python" and "@hookimpl" in code)
    pyproject = next(code for lang, code in blocks if lang == "toml")
    assert len(source.splitlines()) + len(pyproject.splitlines()) < 40
    module_name = re.search(r'\[project\.entry-points\.gradserve\]\n\w+ = "(\w+)"', pyproject).group(1)
    module = types.ModuleType(module_name)
    exec(compile(source, f"{module_name}.py", "exec"), module.__dict__)
    monkeypatch.setitem(sys.modules, module_name, module)
    test_code = next(code for lang, code in blocks if lang == "python" and "plugin_cases(" in code)
    namespace: dict = {}
    exec(compile(test_code, "test_from_the_guide.py", "exec"), namespace)
    for item in plugin_cases(module, namespace["CASES"]):
        namespace["test_layer_conforms"](item)


def test_kit_imports_neither_grpc_nor_the_server():
    """A plugin author's tests need numpy and gradserve.plugins only: the kit and its pytest plugin pull in no more."""
    code = (
        "import sys, gradserve.testing, gradserve.testing.pytest_plugin\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] == 'grpc' or m.startswith('gradserve.server')]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
