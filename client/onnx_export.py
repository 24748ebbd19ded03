"""Export a gradserve Graph to an ONNX model: the layers with an ONNX equivalent (gradserve[onnx])."""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

from gradserve.client.graph import Graph
from gradserve.client.onnx_import import OnnxConversionError
from gradserve.proto.attrs import attr_from_proto
from gradserve.proto.tensors import dtype_name

#: The opset written: the first where ReduceMean, like ReduceSum, takes its axes as an input.
OPSET = 18


def export_onnx(graph: Graph, params: Mapping[str, np.ndarray] | None = None, *,
                shapes: Mapping[str, list[int | None]] | None = None, dtype=None,
                name: str = "gradserve") -> onnx.ModelProto:
    """An ONNX model computing ``graph``'s outputs.

    ``params`` (name -> array) become initializers instead of model inputs.
    ONNX needs the rank of every model input: declare it in the graph
    (``g.input("x", shape=[-1, 784])``) or give it in ``shapes`` (-1 or None
    for a free dimension). Inputs declared without a dtype get ``dtype``
    (default: the Graph's). Raises ``OnnxConversionError`` naming every node
    whose layer has no ONNX equivalent.
    """
    proto = graph.to_proto()
    params = dict(params or {})
    shapes = dict(shapes or {})
    default_dtype = np.dtype(dtype or graph.dtype)
    unknown = sorted((set(params) | set(shapes)) - {i.name for i in proto.inputs})
    if unknown:
        raise ValueError(f"{unknown} are not inputs of the graph (its inputs: {', '.join(graph.input_names)})")
    out = _Exporter()
    inputs, shapeless = [], []
    for info in proto.inputs:
        if info.name in params:
            out.initializers.append(numpy_helper.from_array(np.asarray(params[info.name]), info.name))
            continue
        elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype_name(info.dtype)) if info.dtype else default_dtype)
        shape = shapes.get(info.name, list(info.shape.dims) if info.HasField("shape") else None)
        if shape is None:
            shapeless.append(info.name)
            continue
        inputs.append(helper.make_tensor_value_info(info.name, elem, [d if d is not None and d >= 0 else None
                                                                      for d in shape]))
    if shapeless:
        raise ValueError(f"ONNX needs the rank of every model input; {', '.join(map(repr, shapeless))} have none: "
                         f"declare it in the graph (g.input(name, shape=[-1, ...])), pass shapes={{name: [...]}}, "
                         "or pass the input in params")
    unsupported: dict[str, list[str]] = {}
    for node in proto.nodes:
        handler = _HANDLERS.get(node.op)
        if handler is None:
            unsupported.setdefault(node.op, []).append(node.name)
            continue
        outputs = list(node.outputs) or [node.name]
        handler(out, node.name, list(node.inputs), outputs, {k: attr_from_proto(v) for k, v in node.attrs.items()})
    if unsupported:
        raise OnnxConversionError("export the graph to ONNX", unsupported, [], _HANDLERS)
    for output in proto.outputs:
        if output.name != output.value:
            out.nodes.append(helper.make_node("Identity", [output.value], [output.name], name=f"{output.name}/output"))
    model = helper.make_model(
        helper.make_graph(out.nodes, name, inputs, [helper.ValueInfoProto(name=o.name) for o in proto.outputs],
                          out.initializers),
        opset_imports=[helper.make_opsetid("", OPSET)], producer_name="gradserve",
    )
    # Output types are whatever the nodes compute: ONNX shape inference fills them in.
    typed = {o.name: o.type for o in shape_inference.infer_shapes(model).graph.output}
    for output in model.graph.output:
        output.type.CopyFrom(typed[output.name])
    onnx.checker.check_model(model, full_check=True)
    return model


class _Exporter:
    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def add(self, op: str, inputs, outputs, name: str, **attrs) -> None:
        self.nodes.append(helper.make_node(op, list(inputs), list(outputs), name=name, **attrs))

    def const_ints(self, name: str, values) -> str:
        """An int64 initializer (shapes, axes): ONNX takes these as inputs, gradserve as attributes."""
        self.initializers.append(numpy_helper.from_array(np.asarray(values, dtype=np.int64), name))
        return name


def _same(op: str) -> Callable:
    def handle(out: _Exporter, name, inputs, outputs, attrs):
        out.add(op, inputs, outputs, name)
    return handle


def _softmax(out, name, inputs, outputs, attrs):
    out.add("Softmax", inputs, outputs, name, axis=attrs.get("axis", -1))


def _reduce(op: str) -> Callable:
    def handle(out: _Exporter, name, inputs, outputs, attrs):
        axis = attrs.get("axis")
        extra = {}
        if axis is not None:
            inputs = inputs + [out.const_ints(f"{name}/axes", axis)]
            if not axis:  # numpy reduces over no axes; ONNX's empty axes mean all of them unless told
                extra["noop_with_empty_axes"] = 1
        out.add(op, inputs, outputs, name, keepdims=int(bool(attrs.get("keepdims", False))), **extra)
    return handle


def _reshape(out, name, inputs, outputs, attrs):
    shape = list(attrs["shape"])
    # gradserve's 0 means length 0 unless copy_zeros; ONNX's means "copy" unless allowzero.
    extra = {"allowzero": 1} if 0 in shape and not attrs.get("copy_zeros", False) else {}
    out.add("Reshape", inputs + [out.const_ints(f"{name}/shape", shape)], outputs, name, **extra)


def _transpose(out, name, inputs, outputs, attrs):
    perm = attrs.get("perm")
    out.add("Transpose", inputs, outputs, name, **({"perm": list(perm)} if perm is not None else {}))


def _flatten(out, name, inputs, outputs, attrs):
    out.add("Flatten", inputs, outputs, name, axis=attrs.get("axis", 1))


def _gemm(out, name, inputs, outputs, attrs):
    out.add("Gemm", inputs, outputs, name, alpha=float(attrs.get("alpha", 1.0)), beta=float(attrs.get("beta", 1.0)),
            transA=int(bool(attrs.get("transA", False))), transB=int(bool(attrs.get("transB", False))))


def _affine(out, name, inputs, outputs, attrs):
    # Affine flattens x to (N, -1) and computes x @ W + b: ONNX's Flatten then Gemm.
    x, W, b = inputs
    out.add("Flatten", [x], [f"{name}/flat"], f"{name}/flatten", axis=1)
    out.add("Gemm", [f"{name}/flat", W, b], outputs, name)


def _constant(out, name, inputs, outputs, attrs):
    elements = attrs["value"] if attrs.get("value") is not None else attrs["value_ints"]
    array = np.array(elements, dtype=attrs.get("dtype", "float32")).reshape(attrs.get("shape", ()))
    out.add("Constant", [], outputs, name, value=numpy_helper.from_array(array, outputs[0]))


_HANDLERS: dict[str, Callable] = {
    **{op: _same(op) for op in ("Add", "Sub", "Mul", "Div", "MatMul", "Relu", "Sigmoid", "Tanh", "Exp", "Log",
                                "Neg", "Identity")},
    "Softmax": _softmax,
    "Sum": _reduce("ReduceSum"),
    "Mean": _reduce("ReduceMean"),
    "Reshape": _reshape,
    "Transpose": _transpose,
    "Flatten": _flatten,
    "Gemm": _gemm,
    "Affine": _affine,
    "Constant": _constant,
}
