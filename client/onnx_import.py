"""Import an ONNX model's graph into a gradserve Graph; initializers become parameters (gradserve[onnx])."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
from google.protobuf.message import DecodeError

try:
    import onnx
    from onnx import helper, numpy_helper, shape_inference
except ImportError as exc:  # the extra is optional: say how to get it
    raise ImportError("ONNX support needs the onnx package: pip install 'gradserve[onnx]'") from exc

from gradserve.client.graph import Graph, Value
from gradserve.proto.tensors import dtype_code

_LOGGER = logging.getLogger(__name__)

_ONNX_DOMAINS = ("", "ai.onnx")


class OnnxConversionError(ValueError):
    """A model or graph uses operators (or forms of them) the other side cannot express; lists every one.

    ``unsupported`` maps each unsupported op type to the names of its nodes;
    ``problems`` holds the other reasons, one per node.
    """

    def __init__(self, what: str, unsupported: Mapping[str, list[str]], problems: list[str], supported):
        self.unsupported = dict(unsupported)
        self.problems = list(problems)
        parts = []
        if self.unsupported:
            ops = "; ".join(f"{op} ({'nodes' if len(nodes) > 1 else 'node'} {', '.join(nodes)})"
                            for op, nodes in sorted(self.unsupported.items()))
            parts.append(f"unsupported operators: {ops}. Supported: {', '.join(sorted(supported))}")
        parts += self.problems
        super().__init__(f"cannot {what}: " + "; ".join(parts))


@dataclass
class ImportedModel:
    """An ONNX model as a gradserve Graph.

    ``params`` are the model's initializers, declared as graph inputs: feed
    them (``feeds()`` merges them with yours) and ask for their gradients.
    ``inputs`` are the model's own inputs, ``outputs`` its outputs.
    """

    graph: Graph
    params: dict[str, np.ndarray]
    inputs: list[str]
    outputs: list[str]

    def feeds(self, inputs: Mapping[str, np.ndarray] | None = None, **named: np.ndarray) -> dict[str, np.ndarray]:
        """The parameters plus the given inputs: what ``client.run(model.graph, ...)`` needs."""
        return {**self.params, **(inputs or {}), **named}


class _NodeProblem(Exception):
    """One node cannot be imported as it stands; the message says why and what would work."""


def import_onnx(model: onnx.ModelProto | str | os.PathLike | bytes, *, freeze: bool = False) -> ImportedModel:
    """Build a gradserve Graph from an ONNX model (a ModelProto, a file path, or serialized bytes).

    Initializers become graph inputs returned in ``params`` with their values,
    unless ``freeze`` makes them Constant nodes (then only the model's own
    inputs are fed, and the weights take no gradient). Raises
    ``OnnxConversionError`` naming every unsupported operator and its nodes.
    """
    if not isinstance(model, onnx.ModelProto):
        source = "the bytes" if isinstance(model, bytes) else os.fspath(model)
        try:
            model = onnx.load_model_from_string(model) if isinstance(model, bytes) else onnx.load(source)
        except DecodeError as exc:
            raise OnnxConversionError("import the model", {}, [f"{source} is not an ONNX model ({exc})"], ()) from None
    return _Importer(model, freeze).run()


class _Importer:
    def __init__(self, model: onnx.ModelProto, freeze: bool):
        self.model = model
        self.opset = next((o.version for o in model.opset_import if o.domain in _ONNX_DOMAINS), 1)
        self.freeze = freeze
        self.types = _value_types(model)
        self.initializers = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        self.static: dict[str, np.ndarray] = dict(self.initializers)  # values known at import time
        self.values: dict[str, Value] = {}  # ONNX value name -> the gradserve value that computes it
        self.params: dict[str, np.ndarray] = {}
        self.failed: set[str] = set()  # values whose producer could not be imported
        self.unsupported: dict[str, list[str]] = {}
        self.problems: list[str] = []
        float_inputs = [d for d, _ in (self.types.get(i.name, (None, None)) for i in model.graph.input)
                        if d is not None and d.kind == "f"]
        self.graph = Graph(dtype=float_inputs[0] if float_inputs else "float32")

    def run(self) -> ImportedModel:
        graph = self.model.graph
        for sparse in graph.sparse_initializer:
            self.problems.append(f"sparse initializer {sparse.values.name!r} is not supported; store it dense")
        inputs = []
        for info in graph.input:
            if info.name in self.initializers:  # IR < 4 lists initializers among the inputs too
                continue
            dtype, shape = self.types.get(info.name, (None, None))
            try:
                self.values[info.name] = self.graph.input(info.name, dtype=self._checked(dtype, info.name),
                                                          shape=shape)
            except _NodeProblem as exc:
                self.problems.append(str(exc))
                self.failed.add(info.name)
            inputs.append(info.name)
        for index, node in enumerate(graph.node):
            self._node(index, node)
        outputs = []
        for info in graph.output:
            if info.name in self.failed:
                continue
            try:
                self.graph.output(self.value(info.name), info.name)
            except _NodeProblem as exc:
                self.problems.append(f"graph output {info.name!r}: {exc}")
            outputs.append(info.name)
        if self.unsupported or self.problems:
            raise OnnxConversionError("import the ONNX model", self.unsupported, self.problems, _HANDLERS)
        return ImportedModel(self.graph, self.params, inputs, outputs)

    def _node(self, index: int, node: onnx.NodeProto) -> None:
        label = node.name or f"#{index} ({', '.join(node.output)})"
        op = node.op_type if node.domain in _ONNX_DOMAINS else f"{node.domain}.{node.op_type}"
        handler = _HANDLERS.get(op)
        if handler is None:
            self.unsupported.setdefault(op, []).append(label)
            self.failed.update(node.output)
            return
        if any(name in self.failed for name in node.input):
            self.failed.update(node.output)  # its input's producer is already reported
            return
        try:
            handler(self, node, _attributes(node))
        except _NodeProblem as exc:
            self.problems.append(f"{node.op_type} node {label}: {exc}")
            self.failed.update(node.output)

    # -- what handlers use --

    def value(self, name: str) -> Value:
        """The gradserve value for ONNX value ``name``; initializers and constants enter the graph on first use."""
        known = self.values.get(name)
        if known is not None:
            return known
        if name in self.initializers and not self.freeze:
            array = self.initializers[name]
            value = self.graph.input(name, dtype=self._checked(array.dtype, name), shape=array.shape)
            self.params[name] = array
        elif name in self.static:
            array = self.static[name]
            value = self.graph.node("Constant", name=name, value=[float(v) for v in array.reshape(-1)],
                                    shape=list(array.shape), dtype=self._checked(array.dtype, name))
        else:
            raise _NodeProblem(f"value {name!r} is neither a graph input, an initializer nor any node's output")
        self.values[name] = value
        return value

    def constant_input(self, node: onnx.NodeProto, index: int, what: str) -> np.ndarray | None:
        """Input ``index`` read at import time (None when absent); it must be an initializer or a Constant."""
        if index >= len(node.input) or not node.input[index]:
            return None
        name = node.input[index]
        if name not in self.static:
            raise _NodeProblem(f"its {what} ({name!r}) must be a constant (an initializer or a Constant node), "
                               "not computed at run time")
        return self.static[name]

    def emit(self, node: onnx.NodeProto, op: str, inputs, **attrs) -> Value:
        """Add a gradserve node computing ``node``'s first output, named like it (so names survive import)."""
        args = [item if isinstance(item, Value) else self.value(item) for item in inputs]
        value = self.graph.node(op, *args, name=node.output[0], **attrs)
        self.values[node.output[0]] = value
        return value

    def dtype_of(self, name: str) -> np.dtype | None:
        if name in self.static:
            return self.static[name].dtype
        return self.types.get(name, (None, None))[0]

    def shape_of(self, name: str) -> tuple[int, ...] | None:
        if name in self.static:
            return self.static[name].shape
        return self.types.get(name, (None, None))[1]

    @staticmethod
    def _checked(dtype, name: str) -> str | None:
        if dtype is None:
            return None
        try:
            dtype_code(dtype)
        except ValueError:
            raise _NodeProblem(f"value {name!r} has dtype {np.dtype(dtype).name}, which gradserve does not "
                               "carry") from None
        return np.dtype(dtype).name


def _value_types(model: onnx.ModelProto) -> dict[str, tuple[np.dtype | None, tuple[int, ...] | None]]:
    """dtype and shape (-1 where unknown) of every value ONNX shape inference can type."""
    try:
        inferred = shape_inference.infer_shapes(model)
    except Exception as exc:  # noqa: BLE001 - inference is a help, not a requirement
        _LOGGER.debug("ONNX shape inference failed (%s); using the declared types only", exc)
        inferred = model
    graph = inferred.graph
    types = {}
    for info in list(graph.input) + list(graph.value_info) + list(graph.output):
        tensor = info.type.tensor_type
        if not info.type.HasField("tensor_type") or not tensor.elem_type:
            continue
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type))
        except (KeyError, TypeError, ValueError):
            dtype = None
        shape = None
        if tensor.HasField("shape"):
            shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
        types[info.name] = (dtype, shape)
    return types


def _attributes(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


# -- one handler per ONNX operator --

def _same(op: str) -> Callable:
    def handle(imp: _Importer, node, attrs):
        imp.emit(node, op, list(node.input))
    return handle


def _div(imp: _Importer, node, attrs):
    dtype = imp.dtype_of(node.input[0])
    if dtype is not None and dtype.kind in "iub":
        raise _NodeProblem(f"integer Div truncates in ONNX; gradserve's Div is true division ({dtype.name} inputs)")
    imp.emit(node, "Div", list(node.input))


def _softmax(imp: _Importer, node, attrs):
    x = node.input[0]
    if imp.opset >= 13:
        imp.emit(node, "Softmax", [x], axis=attrs.get("axis", -1))
        return
    # Before opset 13, Softmax normalizes over all axes from `axis` on, as if x were flattened to 2-D there.
    axis = attrs.get("axis", 1)
    shape = imp.shape_of(x)
    if shape is not None and shape:
        axis %= len(shape)
    if axis == -1 or (shape is not None and axis >= len(shape) - 1):
        imp.emit(node, "Softmax", [x], axis=-1)
        return
    if shape is None or shape[axis:].count(-1) > 1:
        raise _NodeProblem(f"opset-{imp.opset} Softmax over the axes from {axis} on needs x's rank and all but one "
                           "of those dimensions known; declare x's shape or upgrade the model to opset 13")
    rows = imp.graph.node("Flatten", imp.value(x), name=f"{node.output[0]}/flatten", axis=axis)
    normalized = imp.graph.node("Softmax", rows, name=f"{node.output[0]}/softmax", axis=-1)
    imp.emit(node, "Reshape", [normalized], shape=[0] * axis + list(shape[axis:]), copy_zeros=True)


def _gemm(imp: _Importer, node, attrs):
    a, b = node.input[0], node.input[1]
    c = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if c is None:  # Gemm's C is optional; ours is not, and a scalar zero adds nothing
        dtype = imp.dtype_of(a)
        dtype = np.dtype(imp.graph.dtype) if dtype is None else dtype
        c = imp.graph.node("Constant", name=f"{node.output[0]}/zero", value=[0.0], shape=[], dtype=dtype.name)
    imp.emit(node, "Gemm", [a, b, c], alpha=float(attrs.get("alpha", 1.0)), beta=float(attrs.get("beta", 1.0)),
             transA=bool(attrs.get("transA", 0)), transB=bool(attrs.get("transB", 0)))


def _reshape(imp: _Importer, node, attrs):
    shape = attrs.get("shape")  # opset < 5 gave the shape as an attribute
    if shape is None:
        shape = imp.constant_input(node, 1, "shape")
    shape = [int(d) for d in np.asarray(shape).reshape(-1)]
    copy_zeros = not attrs.get("allowzero", 0) and 0 in shape
    imp.emit(node, "Reshape", [node.input[0]], shape=shape, **({"copy_zeros": True} if copy_zeros else {}))


def _flatten(imp: _Importer, node, attrs):
    imp.emit(node, "Flatten", [node.input[0]], axis=int(attrs.get("axis", 1)))


def _transpose(imp: _Importer, node, attrs):
    perm = attrs.get("perm")
    imp.emit(node, "Transpose", [node.input[0]], **({"perm": [int(p) for p in perm]} if perm is not None else {}))


def _reduce(op: str) -> Callable:
    def handle(imp: _Importer, node, attrs):
        # ReduceSum took axes as an attribute before opset 13, ReduceMean before opset 18; accept both forms.
        axes = attrs.get("axes")
        if axes is None:
            axes = imp.constant_input(node, 1, "axes")
        axes = None if axes is None else [int(a) for a in np.asarray(axes).reshape(-1)]
        if not axes:
            if attrs.get("noop_with_empty_axes", 0):
                imp.emit(node, "Identity", [node.input[0]])
                return
            axes = None
        keep = bool(attrs.get("keepdims", 1))
        imp.emit(node, op, [node.input[0]], keepdims=keep, **({"axis": axes} if axes is not None else {}))
    return handle


def _constant(imp: _Importer, node, attrs):
    if "value" in attrs:
        array = numpy_helper.to_array(attrs["value"])
    elif "value_float" in attrs or "value_int" in attrs:
        array = np.asarray(attrs.get("value_float", attrs.get("value_int")),
                           dtype=np.float32 if "value_float" in attrs else np.int64)
    elif "value_floats" in attrs or "value_ints" in attrs:
        array = np.asarray(attrs.get("value_floats", attrs.get("value_ints")),
                           dtype=np.float32 if "value_floats" in attrs else np.int64)
    else:
        raise _NodeProblem(f"only tensor, float(s) and int(s) constants are supported, not {sorted(attrs)}")
    imp._checked(array.dtype, node.output[0])
    imp.static[node.output[0]] = array  # enters the graph only if a run-time node uses it


_HANDLERS: dict[str, Callable] = {
    **{op: _same(op) for op in ("Add", "Sub", "Mul", "MatMul", "Relu", "Sigmoid", "Tanh", "Exp", "Log", "Neg",
                                "Identity")},
    "Div": _div,
    "Softmax": _softmax,
    "Gemm": _gemm,
    "Reshape": _reshape,
    "Flatten": _flatten,
    "Transpose": _transpose,
    "ReduceSum": _reduce("Sum"),
    "ReduceMean": _reduce("Mean"),
    "Constant": _constant,
}

