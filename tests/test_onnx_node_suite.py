"""ONNX's own backend node tests (shipped in the onnx package) through the importer and a real server.

Every single-node case of an operator the importer supports is imported and run: its outputs against the
expected outputs stored with the case, then, with the model and data in float64, the gradients of every float
input against central differences. A case whose form the importer refuses is counted and listed with the
refusal, which must name the op, the node and the opset. The inputs an exporter writes as constants (shapes,
axes, pads, ...) are graph inputs in these cases: where the importer says it needs one as a constant, the case
is imported again with that input as an initializer holding the case's data.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, numpy_helper  # noqa: E402

import gradserve.client as gs  # noqa: E402
from gradserve.client.onnx_import import OnnxConversionError, import_onnx  # noqa: E402
from gradserve.client.onnx_import_ops import HANDLERS  # noqa: E402
from gradserve.proto.tensors import TensorError  # noqa: E402

#: The issue's bar: distinct ONNX operators whose node tests run here.
MIN_OPS = 120
EPS = 1e-6
MAX_ELEMENTS = 300   # inputs up to this size: every element's gradient checked
SAMPLED = 24         # larger inputs: this many random elements ...
DIRECTIONS = 2       # ... and the directional derivative along this many random directions
_FLOATS = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE)


@dataclass
class SuiteRun:
    """What running the suite found, case by case."""

    passed: dict[str, str] = field(default_factory=dict)         # case -> op
    refused: dict[str, str] = field(default_factory=dict)        # case -> the importer's message
    forward_failures: dict[str, str] = field(default_factory=dict)
    gradient_failures: dict[str, str] = field(default_factory=dict)
    gradient_checked: dict[str, int] = field(default_factory=dict)  # case -> elements checked
    kinks: dict[str, int] = field(default_factory=dict)          # case -> elements with no derivative
    ops_of: dict[str, str] = field(default_factory=dict)         # every supported single-node case -> op

    @property
    def ops_passed(self) -> set[str]:
        return set(self.passed.values())


def _single_node_cases():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the generators cast out-of-range values on purpose
        from onnx.backend.test.loader import load_node_model_tests
        cases = load_node_model_tests()
    for case in cases:
        model = case.model if case.model is not None else onnx.load(f"{case.model_dir}/model.onnx")
        nodes = model.graph.node
        if len(nodes) == 1 and nodes[0].domain in ("", "ai.onnx") and nodes[0].op_type in HANDLERS:
            yield case.name, model, case.data_sets or (), case.rtol, case.atol


def _import(model, feeds):
    """Import ``model``; inputs the importer needs as constants become initializers holding their feeds."""
    promoted: set[str] = set()
    while True:
        try:
            return import_onnx(model), promoted
        except OnnxConversionError as exc:
            wanted = set(exc.needs_constant) & (set(feeds) - promoted)
            if not wanted:
                raise
        model = copy.deepcopy(model)
        promoted |= wanted
        kept = [i for i in model.graph.input if i.name not in wanted]
        del model.graph.input[:]
        model.graph.input.extend(kept)
        model.graph.initializer.extend(numpy_helper.from_array(np.asarray(feeds[n]), n) for n in wanted)


def _as_float64(model):
    """The same model computing in float64: float types, initializers, tensor attributes and Cast targets."""
    model = copy.deepcopy(model)
    graph = model.graph
    for info in list(graph.input) + list(graph.output) + list(graph.value_info):
        if info.type.HasField("tensor_type") and info.type.tensor_type.elem_type in _FLOATS:
            info.type.tensor_type.elem_type = TensorProto.DOUBLE
    for k, tensor in enumerate(graph.initializer):
        if tensor.data_type in _FLOATS:
            graph.initializer[k].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float64),
                                                                  tensor.name))
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type in _FLOATS:
                attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float64), attr.t.name))
            elif node.op_type == "Cast" and attr.name == "to" and attr.i in _FLOATS:
                attr.i = TensorProto.DOUBLE
    return model


def _array(value):
    return numpy_helper.to_array(value) if isinstance(value, onnx.TensorProto) else np.asarray(value)


def _wide(array):
    array = np.asarray(array)
    return array.astype(np.float64) if array.dtype.kind == "f" else array


def _check_forward(client, imported, feeds, expected, rtol, atol) -> str | None:
    result = client.run(imported.graph, imported.feeds({k: v for k, v in feeds.items() if k in imported.inputs}),
                        grad=False)
    for name, want in zip(imported.outputs, expected):
        got = result.outputs[name]
        want = np.asarray(want)
        if got.dtype != want.dtype and not (got.dtype.kind == want.dtype.kind == "f"):
            return f"output {name!r}: dtype {got.dtype}, expected {want.dtype}"
        if got.shape != want.shape:
            return f"output {name!r}: shape {got.shape}, expected {want.shape}"
        if want.dtype.kind in "fc":
            close = np.isclose(got.astype(np.float64), want.astype(np.float64), rtol=rtol, atol=atol, equal_nan=True)
        else:
            close = got == want
        if not np.all(close):
            return f"output {name!r}: {int(np.size(close) - np.sum(close))} of {np.size(close)} elements differ"
    return None


def _check_gradients(client, model, feeds, promoted, rng) -> tuple[str | None, int, int]:
    """Backprop vs central differences in float64; (failure, elements checked, elements with no derivative).

    Every element of an input up to MAX_ELEMENTS is checked; of a larger one (a 32x32 image), a random sample
    of SAMPLED elements and DIRECTIONS random directions. Where the central difference disagrees the point
    may have no derivative (Relu-like kinks at 0, Round at .5, ties in a Max): there the one-sided difference
    quotients differ (or one is of order 1/eps, a step), and backprop must lie between them (a subgradient,
    as torch's choices are).
    """
    wide = _as_float64(model)
    inputs = {n: _wide(v) for n, v in feeds.items()}
    imported, _ = _import(wide, inputs)
    run_feeds = imported.feeds({k: v for k, v in inputs.items() if k in imported.inputs})
    wrt = [n for n in imported.inputs if n not in promoted and np.asarray(run_feeds[n]).dtype.kind == "f"]
    result = client.run(imported.graph, run_feeds, grad=False)
    seeds = {n: rng.standard_normal(np.shape(v)) for n, v in result.outputs.items() if np.asarray(v).dtype.kind == "f"}
    if not wrt or not seeds:
        return None, 0, 0

    def loss(current):
        outs = client.run(imported.graph, current, grad=False).outputs
        return sum(float(np.sum(np.where(seeds[n] != 0, outs[n] * seeds[n], 0))) for n in seeds)

    grads = client.run(imported.graph, run_feeds, grad=wrt, seed_grads=seeds).grads
    wrt = [n for n in wrt if n in grads]  # a BatchNormalization's running statistics take no gradient
    # Small inputs: every element's central difference, computed on the server.
    small = [n for n in wrt if np.size(run_feeds[n]) <= MAX_ELEMENTS]
    central = ({c.name: np.asarray(c.numerical) for c in client.check_gradients(
        imported.graph, run_feeds, wrt=small, seed_grads=seeds, eps=EPS).values()} if small else {})
    base = loss(run_feeds)

    def one_sided(name, value, index):
        sides = []
        for sign in (1, -1):
            bumped = np.array(value, copy=True)
            bumped[index] += sign * EPS
            sides.append(sign * (loss({**run_feeds, name: bumped}) - base) / EPS)
        return sides

    checked = kinks = 0
    for name in wrt:
        value = np.asarray(run_feeds[name])
        backprop = np.asarray(grads[name], dtype=np.float64)
        positions = [p for p in np.ndindex(value.shape) if np.isfinite(value[p])]
        if name not in central and len(positions) > MAX_ELEMENTS:
            positions = [positions[k] for k in rng.choice(len(positions), SAMPLED, replace=False)]
            for _ in range(DIRECTIONS):
                v = rng.standard_normal(value.shape)
                v /= np.linalg.norm(v)
                numerical = (loss({**run_feeds, name: value + EPS * v}) -
                             loss({**run_feeds, name: value - EPS * v})) / (2 * EPS)
                along = float(np.sum(backprop * v))
                if not _close(along, numerical):
                    return (f"d/d{name} along a random direction: backprop {along:.8g}, numerical {numerical:.8g}",
                            checked, kinks)
        for index in positions:
            sides = None
            if name in central:
                estimate = central[name][index]
            else:
                sides = one_sided(name, value, index)
                estimate = (sides[0] + sides[1]) / 2
            if not np.isfinite(estimate):
                continue  # the output is not finite nearby: there is nothing to compare
            checked += 1
            b = backprop[index]
            if _close(b, estimate):
                continue
            sides = sides or one_sided(name, value, index)
            low, high = min(sides), max(sides)
            jump = max(abs(low), abs(high)) > 1e-2 / EPS  # a quotient of order 1/eps: the function steps here
            if jump or not _close(low, high) and (low <= b <= high or _close(b, low) or _close(b, high)):
                kinks += 1
                continue
            return (f"d/d{name} at {tuple(int(i) for i in index)}: backprop {b:.8g}, numerical {estimate:.8g} "
                    f"(one-sided {sides[1]:.8g} and {sides[0]:.8g})", checked, kinks)
    return None, checked, kinks


def _close(a, b):
    return np.abs(a - b) <= 1e-5 + 1e-4 * np.maximum(np.abs(a), np.abs(b))


@pytest.fixture(scope="module")
def suite(target) -> SuiteRun:
    """Every supported single-node case run once, through one client on the session's server."""
    run = SuiteRun()
    rng = np.random.default_rng(0)
    with gs.connect(target) as client:
        for name, model, data_sets, rtol, atol in _single_node_cases():
            op = model.graph.node[0].op_type
            run.ops_of[name] = op
            for inputs, expected in data_sets[:1]:
                feeds = {info.name: _array(value) for info, value in zip(model.graph.input, inputs)}
                expected = [_array(value) for value in expected]
                try:
                    imported, promoted = _import(model, feeds)
                except OnnxConversionError as exc:
                    run.refused[name] = str(exc)
                    continue
                try:
                    problem = _check_forward(client, imported, feeds, expected, rtol, atol)
                except (gs.GradserveError, TensorError) as exc:
                    problem = f"the server refused it: {exc}"
                if problem:
                    run.forward_failures[name] = problem
                    continue
                try:
                    problem, checked, kinks = _check_gradients(client, model, feeds, promoted, rng)
                except (gs.GradserveError, OnnxConversionError, TensorError) as exc:
                    problem, checked, kinks = f"the float64 run failed: {exc}", 0, 0
                if problem:
                    run.gradient_failures[name] = problem
                    continue
                run.gradient_checked[name], run.kinks[name] = checked, kinks
                run.passed[name] = op
    return run


def _listing(failures: dict[str, str]) -> str:
    return "\n".join(f"  {name}: {why}" for name, why in sorted(failures.items()))


def test_the_suite_covers_enough_operators(suite, capsys):
    """At least MIN_OPS distinct ONNX operators pass their node tests; the counts are printed."""
    with capsys.disabled():
        print(f"\nONNX node tests: {len(suite.passed)} single-node cases of {len(suite.ops_passed)} operators pass "
              f"forward and gradient ({sum(suite.gradient_checked.values())} gradient elements checked, "
              f"{sum(suite.kinks.values())} of them where no derivative exists); {len(suite.refused)} refused:\n"
              + "\n".join(f"  {name}" for name in sorted(suite.refused)))
    assert len(suite.ops_passed) >= MIN_OPS, sorted(suite.ops_passed)


def test_every_supported_case_passes_forward(suite):
    """Each case the importer accepts computes the outputs stored with it, within the case's tolerances."""
    assert not suite.forward_failures, "\n" + _listing(suite.forward_failures)


def test_every_supported_case_passes_gradients(suite):
    """Each case's float64 gradients of every float input match central differences."""
    assert not suite.gradient_failures, "\n" + _listing(suite.gradient_failures)


def test_every_refusal_names_the_op_the_node_and_the_opset(suite):
    """A refused case is refused with a message naming its operator, its node and the model's opset."""
    unclear = {name: why for name, why in suite.refused.items()
               if suite.ops_of[name] not in why or "opset" not in why or "node" not in why}
    assert not unclear, "\n" + _listing(unclear)
