"""Export a gradserve Graph to an ONNX model: the layers with an ONNX equivalent (gradserve[onnx])."""

from __future__ import annotations

import logging
from typing import Callable, Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

from gradserve.client.graph import Graph
from gradserve.client.onnx_import import OnnxConversionError
from gradserve.proto.attrs import attr_from_proto
from gradserve.proto.tensors import dtype_name

_LOGGER = logging.getLogger(__name__)

#: The opset written: every reduction takes its axes as an input (18), and Gelu is an operator (20).
OPSET = 21


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
    problems: list[str] = []
    for node in proto.nodes:
        handler = _HANDLERS.get(node.op)
        if handler is None:
            unsupported.setdefault(node.op, []).append(node.name)
            continue
        outputs = list(node.outputs) or [node.name]
        try:
            handler(out, node.name, list(node.inputs), outputs, {k: attr_from_proto(v) for k, v in node.attrs.items()})
        except _ExportProblem as exc:
            problems.append(f"{node.op} node {node.name}: {exc}")
    if unsupported or problems:
        raise OnnxConversionError("export the graph to ONNX", unsupported, problems, _HANDLERS, OPSET)
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

    def const_floats(self, name: str, value) -> str:
        """A float64 scalar initializer (a CastLike gives it the type ONNX wants)."""
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=np.float64), name))
        return name


class _ExportProblem(Exception):
    """One node's attributes have no ONNX form at the opset written; the message says which."""


def _same(op: str, *names: str) -> Callable:
    """``op`` with the listed attributes passed on (bools as ONNX's 0/1 ints)."""
    def handle(out: _Exporter, name, inputs, outputs, attrs):
        given = {k: _onnx_value(attrs[k]) for k in names if attrs.get(k) is not None}
        out.add(op, inputs, outputs, name, **given)
    return handle


def _onnx_value(value):
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def _softmax(op: str) -> Callable:
    def handle(out, name, inputs, outputs, attrs):
        out.add(op, inputs, outputs, name, axis=attrs.get("axis", -1))
    return handle


def _reduce(op: str, axes_attr: str = "axes", keep_default: bool = True) -> Callable:
    def handle(out: _Exporter, name, inputs, outputs, attrs):
        axis = attrs.get(axes_attr)
        extra = {}
        if axis is not None:
            inputs = inputs + [out.const_ints(f"{name}/axes", axis)]
            if not axis:  # numpy reduces over no axes; ONNX's empty axes mean all of them unless told
                extra["noop_with_empty_axes"] = 1
        out.add(op, inputs, outputs, name, keepdims=int(bool(attrs.get("keepdims", keep_default))), **extra)
    return handle


def _with_ints(op: str, *pairs: tuple[str, str | None], keep: tuple[str, ...] = ()) -> Callable:
    """``op`` whose gradserve attributes become int64 constant inputs, in ``pairs`` order (None: an empty slot)."""
    def handle(out: _Exporter, name, inputs, outputs, attrs):
        extra = []
        for attr, _ in pairs:
            value = attrs.get(attr)
            extra.append("" if value is None else out.const_ints(f"{name}/{attr}", value))
        while extra and not extra[-1]:
            extra.pop()
        out.add(op, inputs + extra, outputs, name, **{k: _onnx_value(attrs[k]) for k in keep if k in attrs})
    return handle


def _reshape(out, name, inputs, outputs, attrs):
    shape = list(attrs["shape"])
    # gradserve's 0 means length 0 unless copy_zeros; ONNX's means "copy" unless allowzero.
    extra = {"allowzero": 1} if 0 in shape and not attrs.get("copy_zeros", False) else {}
    out.add("Reshape", inputs + [out.const_ints(f"{name}/shape", shape)], outputs, name, **extra)


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


def _tensor_type(dtype_name_: str) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype_name_))


def _cast(out, name, inputs, outputs, attrs):
    out.add("Cast", inputs, outputs, name, to=_tensor_type(attrs["to"]))


def _constant_of_shape(out, name, inputs, outputs, attrs):
    value = np.array([attrs.get("value", 0.0)], dtype=attrs.get("dtype", "float32"))
    out.add("ConstantOfShape", inputs, outputs, name, value=numpy_helper.from_array(value, f"{name}/value"))


def _eye_like(out, name, inputs, outputs, attrs):
    extra = {"dtype": _tensor_type(attrs["dtype"])} if attrs.get("dtype") else {}
    out.add("EyeLike", inputs, outputs, name, k=attrs.get("k", 0), **extra)


def _pad(out, name, inputs, outputs, attrs):
    x = inputs[0]
    pads = out.const_ints(f"{name}/pads", attrs["pads"])
    extra = []
    if attrs.get("value", 0.0):
        # ONNX's constant_value has x's type; gradserve's float attribute works for the float x it pads.
        extra = [f"{name}/value"]
        out.add("CastLike", [out.const_floats(f"{name}/value_raw", attrs["value"]), x], extra, f"{name}/cast")
    out.add("Pad", [x, pads, *extra], outputs, name, mode=attrs.get("mode", "constant"))


def _trilu(out, name, inputs, outputs, attrs):
    out.add("Trilu", inputs + [out.const_ints(f"{name}/k", attrs.get("k", 0))], outputs, name,
            upper=int(bool(attrs.get("upper", True))))


def _cumsum(out, name, inputs, outputs, attrs):
    out.add("CumSum", inputs + [out.const_ints(f"{name}/axis", attrs.get("axis", 0))], outputs, name,
            exclusive=int(bool(attrs.get("exclusive", False))), reverse=int(bool(attrs.get("reverse", False))))


def _topk(out, name, inputs, outputs, attrs):
    out.add("TopK", inputs + [out.const_ints(f"{name}/k", [attrs["k"]])], outputs, name, axis=attrs.get("axis", -1),
            largest=int(bool(attrs.get("largest", True))), sorted=int(bool(attrs.get("sorted", True))))


def _swish(out, name, inputs, outputs, attrs):
    # Swish is an operator only from opset 24: x * sigmoid(alpha * x).
    x = inputs[0]
    alpha = out.const_floats(f"{name}/alpha", attrs.get("alpha", 1.0))
    out.add("CastLike", [alpha, x], [f"{name}/alpha_x"], f"{name}/cast")
    out.add("Mul", [x, f"{name}/alpha_x"], [f"{name}/scaled"], f"{name}/scale")
    out.add("Sigmoid", [f"{name}/scaled"], [f"{name}/gate"], f"{name}/sigmoid")
    out.add("Mul", [x, f"{name}/gate"], outputs, name)


def _space_to_depth(out, name, inputs, outputs, attrs):
    if attrs.get("mode", "DCR") != "DCR":
        raise _ExportProblem(f"mode {attrs['mode']} needs opset 28; opset {OPSET} has DCR only")
    out.add("SpaceToDepth", inputs, outputs, name, blocksize=attrs["blocksize"])


def _transpose(out, name, inputs, outputs, attrs):
    perm = attrs.get("perm")
    # ONNX's perm has no negative axes; its length is the rank, so they resolve here.
    given = {"perm": [p % len(perm) for p in perm]} if perm is not None else {}
    out.add("Transpose", inputs, outputs, name, **given)


def _compress(out, name, inputs, outputs, attrs):
    # ONNX's condition is bool; gradserve's takes any numbers, as numpy's truth.
    out.add("Cast", [inputs[1]], [f"{name}/condition"], f"{name}/cast", to=onnx.TensorProto.BOOL)
    out.add("Compress", [inputs[0], f"{name}/condition"], outputs, name,
            **({"axis": attrs["axis"]} if attrs.get("axis") is not None else {}))


_WINDOW = ("kernel_shape", "strides", "pads", "dilations", "auto_pad")


def _convolution(out, name, inputs, outputs, attrs):
    out.add("Conv", inputs, outputs, name, group=attrs.get("group", 1),
            **{k: _onnx_value(attrs[k]) for k in _WINDOW if attrs.get(k) is not None})


def _pooling(out, name, inputs, outputs, attrs):
    mode = attrs.get("mode", "max")
    op = {"max": "MaxPool", "average": "AveragePool"}.get(mode)
    if op is None:
        raise _ExportProblem(f"Pooling mode {mode!r} has no ONNX operator")
    extra = {"ceil_mode": int(bool(attrs.get("ceil_mode", False)))}
    if op == "AveragePool":
        extra["count_include_pad"] = int(bool(attrs.get("count_include_pad", False)))
    out.add(op, inputs, outputs, name, **{k: _onnx_value(attrs[k]) for k in _WINDOW if attrs.get(k) is not None},
            **extra)


def _batch_norm(out, name, inputs, outputs, attrs):
    if not attrs.get("spatial", False):
        raise _ExportProblem("spatial=False (statistics per flattened feature, the book's) has no ONNX form; "
                             "ONNX's BatchNormalization is spatial=True")
    given = {"epsilon": attrs.get("epsilon", 1e-6), "momentum": attrs.get("momentum", 0.9)}
    if attrs.get("training_mode"):  # ONNX's training mode: batch statistics, the running ones updated
        out.add("BatchNormalization", inputs, outputs, name, training_mode=1, **given)
        return
    if attrs.get("training_mode") is None:
        _LOGGER.info("BatchNormalization node %s follows the request's training flag; exported in inference mode",
                     name)
    # Inference: the running statistics pass through unchanged.
    out.add("BatchNormalization", inputs, outputs[:1], name, **given)
    for k, value in ((1, inputs[3]), (2, inputs[4])):
        out.add("Identity", [value], [outputs[k]], f"{name}/{outputs[k]}")


_HANDLERS: dict[str, Callable] = {
    **{op: _same(op) for op in (
        "Add", "Sub", "Mul", "Div", "MatMul", "Relu", "Sigmoid", "Tanh", "Exp", "Log", "Neg", "Identity",
        "Abs", "Sqrt", "Reciprocal", "Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh",
        "Atanh", "Softplus", "Softsign", "Mish", "Sign", "Floor", "Ceil", "Round", "HardSwish", "Pow", "PRelu",
        "Where", "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Not", "And", "Or", "Xor", "IsNaN",
        "BitwiseNot", "BitwiseAnd", "BitwiseOr", "BitwiseXor", "Max", "Min", "Clip", "Size", "NonZero", "Det", "Erf",
        "GlobalAveragePool", "GlobalMaxPool", "Range")},
    **{op: _same(op, "alpha") for op in ("Elu", "Celu", "LeakyRelu", "ThresholdedRelu")},
    "Selu": _same("Selu", "alpha", "gamma"),
    "HardSigmoid": _same("HardSigmoid", "alpha", "beta"),
    "Shrink": _same("Shrink", "bias", "lambd"),
    "IsInf": _same("IsInf", "detect_negative", "detect_positive"),
    "BitShift": _same("BitShift", "direction"),
    "Mod": _same("Mod", "fmod"),
    "Hardmax": _same("Hardmax", "axis"),
    "ArgMax": _same("ArgMax", "axis", "keepdims", "select_last_index"),
    "ArgMin": _same("ArgMin", "axis", "keepdims", "select_last_index"),
    "Concat": lambda out, name, inputs, outputs, attrs: out.add("Concat", inputs, outputs, name,
                                                                axis=attrs.get("axis", 0)),
    "Gather": _same("Gather", "axis"),
    "GatherElements": _same("GatherElements", "axis"),
    "GatherND": _same("GatherND", "batch_dims"),
    "ScatterElements": _same("ScatterElements", "axis", "reduction"),
    "ScatterND": _same("ScatterND", "reduction"),
    "Compress": _compress,
    "ReverseSequence": _same("ReverseSequence", "batch_axis", "time_axis"),
    "OneHot": _same("OneHot", "axis"),
    "DepthToSpace": _same("DepthToSpace", "blocksize", "mode"),
    "SpaceToDepth": _space_to_depth,
    "Shape": _same("Shape", "start", "end"),
    "Gelu": _same("Gelu", "approximate"),
    "LayerNormalization": _same("LayerNormalization", "axis", "epsilon"),
    "Softmax": _softmax("Softmax"),
    "LogSoftmax": _softmax("LogSoftmax"),
    "Sum": _reduce("ReduceSum", "axis", keep_default=False),
    "Mean": _reduce("ReduceMean", "axis", keep_default=False),
    **{op: _reduce(op) for op in ("ReduceMax", "ReduceMin", "ReduceProd", "ReduceSumSquare", "ReduceL1", "ReduceL2",
                                  "ReduceLogSum", "ReduceLogSumExp")},
    "Slice": _with_ints("Slice", ("starts", None), ("ends", None), ("axes", None), ("steps", None)),
    "Expand": _with_ints("Expand", ("shape", None)),
    "Squeeze": _with_ints("Squeeze", ("axes", None)),
    "Unsqueeze": _with_ints("Unsqueeze", ("axes", None)),
    "Tile": _with_ints("Tile", ("repeats", None)),
    "Pad": _pad,
    "Trilu": _trilu,
    "CumSum": _cumsum,
    "TopK": _topk,
    "Cast": _cast,
    "ConstantOfShape": _constant_of_shape,
    "EyeLike": _eye_like,
    "Swish": _swish,
    "Reshape": _reshape,
    "Transpose": _transpose,
    "Flatten": _same("Flatten", "axis"),
    "Gemm": _gemm,
    "Affine": _affine,
    "Constant": _constant,
    "Convolution": _convolution,
    "Pooling": _pooling,
    "BatchNormalization": _batch_norm,
}
