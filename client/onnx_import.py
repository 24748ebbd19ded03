"""Import an ONNX model's graph into a gradserve Graph; initializers become parameters (gradserve[onnx]).

Shape arithmetic (Shape, Gather on shapes, Concat, Unsqueeze, Cast, Range of constants, ...) is folded at
import with onnx's own reference implementation, so what reaches the server is the network itself; the
per-operator translations live in onnx_import_ops.py.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Mapping

import numpy as np
from google.protobuf.message import DecodeError

try:
    import onnx
    from onnx import helper, numpy_helper, shape_inference
    from onnx.reference import ReferenceEvaluator
except ImportError as exc:  # the extra is optional: say how to get it
    raise ImportError("ONNX support needs the onnx package: pip install 'gradserve[onnx]'") from exc

from gradserve.client.graph import Graph, Value
from gradserve.client.onnx_import_ops import FOLDABLE, HANDLERS, MIN_OPSET, NodeProblem
from gradserve.proto.tensors import dtype_code

_LOGGER = logging.getLogger(__name__)

_ONNX_DOMAINS = ("", "ai.onnx")

#: The newest opset the installed onnx package defines: the newest we read.
MAX_OPSET = onnx.defs.onnx_opset_version()


class OnnxConversionError(ValueError):
    """A model or graph uses operators (or forms of them) the other side cannot express; lists every one.

    ``unsupported`` maps each unsupported op type to the names of its nodes;
    ``problems`` holds the other reasons, one per node; ``needs_constant``
    names the run-time values that would have to be constants (initializers).
    """

    def __init__(self, what: str, unsupported: Mapping[str, list[str]], problems: list[str], supported,
                 opset: int | None = None, needs_constant=()):
        self.unsupported = dict(unsupported)
        self.problems = list(problems)
        self.needs_constant = list(needs_constant)
        parts = []
        if self.unsupported:
            ops = "; ".join(f"{op} ({'nodes' if len(nodes) > 1 else 'node'} {', '.join(nodes)})"
                            for op, nodes in sorted(self.unsupported.items()))
            at = f" at opset {opset}" if opset is not None else ""
            parts.append(f"unsupported operators{at}: {ops}. Supported: {', '.join(sorted(supported))}")
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


def import_onnx(model: onnx.ModelProto | str | os.PathLike | bytes, *, freeze: bool = False) -> ImportedModel:
    """Build a gradserve Graph from an ONNX model (a ModelProto, a file path, or serialized bytes).

    Initializers become graph inputs returned in ``params`` with their values,
    unless ``freeze`` makes them Constant nodes (then only the model's own
    inputs are fed, and the weights take no gradient). Integer initializers
    (shapes, axes, indices) stay constants either way. Raises
    ``OnnxConversionError`` naming every unsupported operator, its nodes and
    the opset, and every node whose form cannot be imported, with the reason.
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
        # Values known at import time. Float initializers are parameters: known, but never folded into others.
        self.static: dict[str, np.ndarray] = dict(self.initializers)
        self.foldable: set[str] = {n for n, a in self.initializers.items() if a.dtype.kind != "f" or freeze}
        self.values: dict[str, Value] = {}  # ONNX value name -> the gradserve value that computes it
        self.params: dict[str, np.ndarray] = {}
        self.failed: set[str] = set()  # values whose producer could not be imported
        self.unsupported: dict[str, list[str]] = {}
        self.problems: list[str] = []
        self.needs_constant: list[str] = []
        float_inputs = [d for d, _ in (self.types.get(i.name, (None, None)) for i in model.graph.input)
                        if d is not None and d.kind == "f"]
        self.graph = Graph(dtype=float_inputs[0] if float_inputs else "float32")

    def run(self) -> ImportedModel:
        graph = self.model.graph
        if not MIN_OPSET <= self.opset <= MAX_OPSET:
            ops = sorted({n.op_type for n in graph.node})
            raise OnnxConversionError("import the ONNX model", {}, [
                f"the model's opset {self.opset} is outside the opsets read here ({MIN_OPSET} to {MAX_OPSET}, the "
                f"newest the installed onnx knows) for its nodes ({', '.join(ops)}); convert it with "
                "onnx.version_converter.convert_version"], HANDLERS, self.opset)
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
            except NodeProblem as exc:
                self.problems.append(f"graph input {info.name!r}: {exc}")
                self.failed.add(info.name)
            inputs.append(info.name)
        self.bad_inputs = set(self.failed)
        for index, node in enumerate(graph.node):
            self._node(index, node)
        outputs = []
        for info in graph.output:
            if info.name in self.failed:
                continue
            try:
                self.graph.output(self.value(info.name), info.name)
            except NodeProblem as exc:
                self.problems.append(f"graph output {info.name!r}: {exc}")
            outputs.append(info.name)
        if self.unsupported or self.problems:
            raise OnnxConversionError("import the ONNX model", self.unsupported, self.problems, HANDLERS,
                                      self.opset, self.needs_constant)
        return ImportedModel(self.graph, self.params, inputs, outputs)

    def _node(self, index: int, node: onnx.NodeProto) -> None:
        label = node.name or f"#{index} ({', '.join(node.output)})"
        op = node.op_type if node.domain in _ONNX_DOMAINS else f"{node.domain}.{node.op_type}"
        handler = HANDLERS.get(op)
        if handler is None:
            self.unsupported.setdefault(op, []).append(label)
            self.failed.update(node.output)
            return
        if any(name in self.failed for name in node.input):
            bad = [name for name in node.input if name in self.bad_inputs]
            if bad:  # a graph input that cannot be carried: say which node it stops
                self.problems.append(f"{node.op_type} node {label} (opset {self.opset}) cannot take graph input "
                                     f"{bad[0]!r} (above)")
            self.failed.update(node.output)  # else its input's producer is already reported
            return
        try:
            if not self._fold(op, node):
                handler(self, node, attributes(node))
        except NodeProblem as exc:
            self.problems.append(f"{node.op_type} node {label} (opset {self.opset}): {exc}")
            self.failed.update(node.output)

    def _fold(self, op: str, node: onnx.NodeProto) -> bool:
        """Compute ``node`` now when all its inputs are known constants (shape arithmetic); True when done."""
        if op == "Shape" and self.full_shape(node.input[0]) is not None and node.input[0] not in self.foldable:
            fed = {node.input[0]: np.zeros(self.full_shape(node.input[0]), dtype=np.float32)}
        elif op in FOLDABLE and all(not name or name in self.foldable for name in node.input):
            fed = {name: self.static[name] for name in node.input if name}
        else:
            return False
        inputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
                  for n, a in fed.items()]
        single = helper.make_model(
            helper.make_graph([node], "fold", inputs, [helper.ValueInfoProto(name=o) for o in node.output if o]),
            opset_imports=[helper.make_opsetid("", self.opset)], ir_version=self.model.ir_version)
        try:
            results = ReferenceEvaluator(single).run(None, fed)
        except Exception as exc:  # noqa: BLE001 - the reference refusing the constants is the model's problem
            raise NodeProblem(f"folding it at import (its inputs are constants) failed: {exc}") from None
        for name, result in zip([o for o in node.output if o], results):
            self.static[name] = np.asarray(result)
            self.foldable.add(name)
        return True

    # -- what handlers use --

    def value(self, name: str) -> Value:
        """The gradserve value for ONNX value ``name``; initializers and constants enter the graph on first use."""
        known = self.values.get(name)
        if known is not None:
            return known
        if name in self.initializers and not self.freeze and self.initializers[name].dtype.kind == "f":
            array = self.initializers[name]
            value = self.graph.input(name, dtype=self._checked(array.dtype, name), shape=array.shape)
            self.params[name] = array
        elif name in self.static:
            value = self.constant(self.static[name], name)
        else:
            raise NodeProblem(f"value {name!r} is neither a graph input, an initializer nor any node's output")
        self.values[name] = value
        return value

    def constant(self, array: np.ndarray, name: str | None = None) -> Value:
        """A Constant node holding ``array`` exactly (integers and bools through value_ints)."""
        array = np.asarray(array)
        dtype = self._checked(array.dtype, name or "constant")
        flat = array.reshape(-1)
        given = ({"value_ints": [int(v) for v in flat]} if array.dtype.kind in "biu" else
                 {"value": [float(v) for v in flat]})
        return self.graph.node("Constant", name=name, shape=list(array.shape), dtype=dtype, **given)

    def constant_input(self, node: onnx.NodeProto, index: int, what: str) -> np.ndarray | None:
        """Input ``index`` read at import time (None when absent); it must be known: an initializer or a constant."""
        if index >= len(node.input) or not node.input[index]:
            return None
        name = node.input[index]
        if name not in self.static:
            self.needs_constant.append(name)
            raise NodeProblem(f"its {what} ({name!r}) must be a constant (an initializer or a Constant node), "
                              "not computed at run time")
        return self.static[name]

    def emit(self, node: onnx.NodeProto, op: str, inputs, **attrs) -> Value:
        """Add a gradserve node computing ``node``'s first output, named like it (so names survive import)."""
        args = [item if isinstance(item, Value) else self.value(item) for item in inputs]
        value = self.graph.node(op, *args, name=node.output[0], **attrs)
        self.values[node.output[0]] = value
        return value

    def emit_all(self, node: onnx.NodeProto, op: str, inputs, n_outputs: int, **attrs) -> None:
        """Add a gradserve node of ``n_outputs`` outputs standing for ``node``'s, in order (omitted ones skipped)."""
        args = [item if isinstance(item, Value) else self.value(item) for item in inputs]
        values = self.graph.node(op, *args, name=self.fresh(node.output[0] or node.op_type), n_outputs=n_outputs,
                                 **attrs)
        for name, value in zip(node.output, values):
            if name:
                self.values[name] = value

    def step(self, node: onnx.NodeProto, op: str, inputs, **attrs) -> Value:
        """An intermediate gradserve node of a translation (a chain link, a decomposition's part)."""
        args = [item if isinstance(item, Value) else self.value(item) for item in inputs]
        return self.graph.node(op, *args, name=self.fresh(f"{node.output[0]}/{op.lower()}"), **attrs)

    def alias(self, node: onnx.NodeProto, value: Value) -> None:
        """``node``'s first output is ``value``, through an Identity named like it."""
        self.emit(node, "Identity", [value])

    def fresh(self, base: str) -> str:
        names = self.graph._names
        name, k = base, 1
        while name in names:
            name, k = f"{base}.{k}", k + 1
        return name

    def dtype_of(self, name: str) -> np.dtype | None:
        if name in self.static:
            return self.static[name].dtype
        return self.types.get(name, (None, None))[0]

    def shape_of(self, name: str) -> tuple[int, ...] | None:
        if name in self.static:
            return self.static[name].shape
        return self.types.get(name, (None, None))[1]

    def full_shape(self, name: str) -> tuple[int, ...] | None:
        """``name``'s shape when every dimension is known at import, else None."""
        shape = self.shape_of(name)
        return shape if shape is not None and all(d >= 0 for d in shape) else None

    @staticmethod
    def _checked(dtype, name: str) -> str | None:
        if dtype is None:
            return None
        try:
            dtype_code(dtype)
        except ValueError:
            raise NodeProblem(f"value {name!r} has dtype {np.dtype(dtype).name}, which gradserve does not "
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


def attributes(node: onnx.NodeProto) -> dict:
    """A node's attributes as Python values (tensors as numpy arrays)."""
    out = {}
    for a in node.attribute:
        value = helper.get_attribute_value(a)
        out[a.name] = numpy_helper.to_array(value) if isinstance(value, onnx.TensorProto) else value
    return out
