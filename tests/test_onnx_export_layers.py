"""Every exportable built-in layer, on its conformance inputs: the exported ONNX model, run by onnx's reference
implementation, computes what the server computes; and the export imports back to the same outputs."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx.reference import ReferenceEvaluator  # noqa: E402

import gradserve.client as gs  # noqa: E402
from gradserve.client.onnx_export import _HANDLERS as EXPORTABLE  # noqa: E402
from gradserve.client.onnx_export import export_onnx  # noqa: E402
from gradserve.client.onnx_import import import_onnx  # noqa: E402
from gradserve.server.service.registry import load_registry  # noqa: E402
from layer_inputs import layer_cases  # noqa: E402
from layer_inputs_onnx import onnx_layer_cases  # noqa: E402

#: Layers with no ONNX operator of their own (the book's losses, Dropout's server-drawn mask) and forms ONNX
#: spells differently (the book's BatchNormalization, per flattened feature; SpaceToDepth's CRD needs opset 28).
NOT_EXPORTED = {"SoftmaxWithLoss", "Dropout"}
REFUSED_FORMS = {("BatchNormalization", "spatial"), ("SpaceToDepth", "CRD")}

#: Cases onnx's reference implementation cannot run, though the ONNX spec allows them.
REFERENCE_GAPS = {"Pad-0": "onnx.reference's Pad refuses negative pads (cropping), which the ONNX spec allows"}
#: ONNX types some operators for float32 and narrower only; those cases run in float32.
FLOAT32_ONLY = {"Celu"}

_LAYERS = load_registry().layers


def _cases():
    rng = np.random.default_rng(11)
    for op, given in {**layer_cases(rng), **onnx_layer_cases(rng)}.items():
        for k, (inputs, attrs) in enumerate(given):
            case_id = f"{op}-{k}"
            if op in FLOAT32_ONLY:
                inputs = {n: np.asarray(v).astype(np.float32) for n, v in inputs.items()}
            marks = [pytest.mark.skip(reason=REFERENCE_GAPS[case_id])] if case_id in REFERENCE_GAPS else []
            yield pytest.param(op, inputs, attrs, id=case_id, marks=marks)


def _graph(op, inputs, attrs):
    cls = _LAYERS[op].cls
    g = gs.Graph(dtype="float64")
    values = [g.input(name, dtype=np.asarray(inputs[name]).dtype.name, shape=list(np.shape(inputs[name])))
              for name in cls.inputs]
    out = g.node(op, *values, name="node", n_outputs=len(cls.outputs), **attrs)
    for name, value in zip(cls.outputs, out if isinstance(out, tuple) else (out,)):
        g.output(value, name)
    return g, cls


def test_every_builtin_layer_is_exported_or_listed():
    """Each registered built-in layer has an ONNX export, unless it is one of the few without an ONNX operator."""
    builtin = {name for name, entry in _LAYERS.items() if entry.plugin == "builtin"}
    assert builtin - set(EXPORTABLE) == NOT_EXPORTED


@pytest.mark.parametrize("op,inputs,attrs", list(_cases()))
def test_export_computes_what_the_server_computes(client, op, inputs, attrs):
    """onnx.reference on the exported layer equals the server's outputs, and re-importing gives them again."""
    if op in NOT_EXPORTED or any(op == o and (not attrs.get("spatial", False) if f == "spatial" else
                                             attrs.get("mode") == f) for o, f in REFUSED_FORMS):
        pytest.skip(f"{op} with {attrs} has no ONNX form at the exported opset (refused by name: see below)")
    g, cls = _graph(op, inputs, attrs)
    feeds = {name: np.asarray(inputs[name]) for name in cls.inputs}
    served = client.run(g, feeds, grad=False).outputs
    model = export_onnx(g)
    expected = dict(zip([o.name for o in model.graph.output], ReferenceEvaluator(model).run(None, feeds)))
    back = import_onnx(model)
    again = client.run(back.graph, back.feeds(feeds), grad=False).outputs
    for name in cls.outputs:
        np.testing.assert_allclose(np.asarray(expected[name], dtype=np.float64), served[name].astype(np.float64),
                                   rtol=1e-6, atol=1e-9, err_msg=f"{op} output {name}: onnx.reference vs server")
        # ONNX attributes are float32: a re-imported alpha or epsilon is rounded to it.
        np.testing.assert_allclose(again[name], served[name], rtol=1e-6, atol=1e-9,
                                   err_msg=f"{op} output {name} after re-import")


def test_forms_without_an_onnx_equivalent_are_refused_by_name():
    """The book's BatchNormalization (spatial=False) is refused naming the node and what ONNX has instead."""
    g = gs.Graph(dtype="float64")
    x, gamma, beta, mean, var = (g.input(n, shape=[4, 3]) for n in ("x", "gamma", "beta", "mean", "var"))
    out, _, _ = g.node("BatchNormalization", x, gamma, beta, mean, var, name="bn", n_outputs=3)
    g.output(out, "y")
    with pytest.raises(ValueError, match="BatchNormalization node bn: spatial=False"):
        export_onnx(g)


def test_space_to_depth_crd_is_refused_naming_the_opset():
    """SpaceToDepth's CRD order exists in ONNX only from opset 28: the export says so for the node."""
    g = gs.Graph(dtype="float64")
    g.output(g.node("SpaceToDepth", g.input("x", shape=[1, 1, 2, 2]), name="s2d", blocksize=2, mode="CRD"), "y")
    with pytest.raises(ValueError, match="SpaceToDepth node s2d: mode CRD needs opset 28"):
        export_onnx(g)
