"""How each ONNX operator becomes gradserve layers: one handler per op type, listed in HANDLERS.

A handler gets the importer (``imp``), the node and its attributes, and adds gradserve nodes through
``imp.emit`` (the node's output), ``imp.step`` (an intermediate) and ``imp.constant_input`` (an input that
must be known at import, such as a shape or axes). ONNX's variadic operators (Concat, Max, Min, Sum, Mean)
become chains of the two-input layers; Split becomes one Slice per output.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from onnx import helper

#: The oldest opset read (numpy broadcasting everywhere from 7 on); forms that changed since (attributes that
#: became inputs) are read in both forms.
MIN_OPSET = 7


class NodeProblem(Exception):
    """One node cannot be imported as it stands; the message says why and what would work."""


def _ints(values) -> list[int]:
    return [int(v) for v in np.asarray(values).reshape(-1)]


def _arg(imp, node, attrs, name: str, index: int, what: str | None = None):
    """An argument given as attribute ``name`` (older opsets) or as constant input ``index`` (newer)."""
    if name in attrs:
        return attrs[name]
    return imp.constant_input(node, index, what or name)


def _same(op: str) -> Callable:
    def handle(imp, node, attrs):
        imp.emit(node, op, list(node.input))
    return handle


def _with(op: str, **kinds) -> Callable:
    """Same-named attributes passed on: ``kinds`` maps each to float, int, bool or str."""
    def handle(imp, node, attrs):
        imp.emit(node, op, list(node.input), **{k: kind(attrs[k]) for k, kind in kinds.items() if k in attrs})
    return handle


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _div(imp, node, attrs):
    dtype = imp.dtype_of(node.input[0])
    if dtype is not None and dtype.kind in "iub":
        raise NodeProblem(f"integer Div truncates in ONNX; gradserve's Div is true division ({dtype.name} inputs)")
    imp.emit(node, "Div", list(node.input))


def _mod(imp, node, attrs):
    imp.emit(node, "Mod", list(node.input), fmod=bool(attrs.get("fmod", 0)))


def _chain(op: str) -> Callable:
    """A variadic ONNX op as a left fold of the two-input layer ``op``."""
    def handle(imp, node, attrs):
        inputs = list(node.input)
        if len(inputs) == 1:
            imp.emit(node, "Identity", inputs)
            return
        value = inputs[0]
        for item in inputs[1:-1]:
            value = imp.step(node, op, [value, item], **_axis_of(attrs))
        imp.emit(node, op, [value, inputs[-1]], **_axis_of(attrs))
    return handle


def _axis_of(attrs) -> dict:
    return {"axis": int(attrs["axis"])} if "axis" in attrs else {}


def _mean(imp, node, attrs):
    if len(node.input) == 1:
        imp.emit(node, "Identity", list(node.input))
        return
    total = node.input[0]
    for item in node.input[1:]:
        total = imp.step(node, "Add", [total, item])
    dtype = imp.dtype_of(node.input[0]) or np.dtype(imp.graph.dtype)
    imp.emit(node, "Div", [total, imp.constant(np.asarray(len(node.input), dtype=dtype))])


def _clip(imp, node, attrs):
    x = node.input[0]
    dtype = imp.dtype_of(x) or np.dtype(imp.graph.dtype)
    kind = np.dtype(dtype).kind
    lowest = -np.inf if kind == "f" else np.iinfo(dtype).min
    highest = np.inf if kind == "f" else np.iinfo(dtype).max
    bounds = []
    for index, attr, fill in ((1, "min", lowest), (2, "max", highest)):
        if attr in attrs:  # opset < 11 gave the bounds as attributes
            bounds.append(imp.constant(np.asarray(attrs[attr], dtype=dtype)))
        elif index < len(node.input) and node.input[index]:
            bounds.append(node.input[index])
        else:
            bounds.append(imp.constant(np.asarray(fill, dtype=dtype)))
    imp.emit(node, "Clip", [x, *bounds])


def _softmax(imp, node, attrs, op="Softmax"):
    x = node.input[0]
    if imp.opset >= 13:
        imp.emit(node, op, [x], axis=int(attrs.get("axis", -1)))
        return
    # Before opset 13, Softmax normalizes over all axes from `axis` on, as if x were flattened to 2-D there.
    axis = attrs.get("axis", 1)
    shape = imp.shape_of(x)
    if shape is not None and shape:
        axis %= len(shape)
    if axis == -1 or (shape is not None and axis >= len(shape) - 1):
        imp.emit(node, op, [x], axis=-1)
        return
    if shape is None or shape[axis:].count(-1) > 1:
        raise NodeProblem(f"opset-{imp.opset} {op} over the axes from {axis} on needs x's rank and all but one "
                          "of those dimensions known; declare x's shape or upgrade the model to opset 13")
    rows = imp.step(node, "Flatten", [x], axis=axis)
    normalized = imp.step(node, op, [rows], axis=-1)
    imp.emit(node, "Reshape", [normalized], shape=[0] * axis + list(shape[axis:]), copy_zeros=True)


def _hardmax(imp, node, attrs):
    if imp.opset < 13:
        raise NodeProblem("Hardmax before opset 13 works on x flattened to 2-D; upgrade the model to opset 13")
    imp.emit(node, "Hardmax", [node.input[0]], axis=int(attrs.get("axis", -1)))


def _gemm(imp, node, attrs):
    a, b = node.input[0], node.input[1]
    c = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if c is None:  # Gemm's C is optional; ours is not, and a scalar zero adds nothing
        dtype = imp.dtype_of(a) or np.dtype(imp.graph.dtype)
        c = imp.constant(np.zeros((), dtype=dtype))
    imp.emit(node, "Gemm", [a, b, c], alpha=float(attrs.get("alpha", 1.0)), beta=float(attrs.get("beta", 1.0)),
             transA=bool(attrs.get("transA", 0)), transB=bool(attrs.get("transB", 0)))


def _reshape(imp, node, attrs):
    shape = _ints(_arg(imp, node, attrs, "shape", 1))
    zeros = 0 in shape and not attrs.get("allowzero", 0)
    imp.emit(node, "Reshape", [node.input[0]], shape=shape, **({"copy_zeros": True} if zeros else {}))


def _flatten(imp, node, attrs):
    imp.emit(node, "Flatten", [node.input[0]], axis=int(attrs.get("axis", 1)))


def _transpose(imp, node, attrs):
    perm = attrs.get("perm")
    imp.emit(node, "Transpose", [node.input[0]], **({"perm": _ints(perm)} if perm is not None else {}))


def _reduce_axes(imp, node, attrs):
    """(axes or None for all, or "noop") of a Reduce* node, whichever form the opset uses."""
    axes = _arg(imp, node, attrs, "axes", 1)
    axes = None if axes is None else _ints(axes)
    if not axes:
        return "noop" if attrs.get("noop_with_empty_axes", 0) else None
    return axes


def _reduce(op: str, axes_attr: str = "axes") -> Callable:
    def handle(imp, node, attrs):
        axes = _reduce_axes(imp, node, attrs)
        if axes == "noop":
            imp.emit(node, "Identity", [node.input[0]])
            return
        keep = bool(attrs.get("keepdims", 1))
        imp.emit(node, op, [node.input[0]], keepdims=keep, **({axes_attr: axes} if axes is not None else {}))
    return handle


def _arg_extremum(op: str) -> Callable:
    def handle(imp, node, attrs):
        imp.emit(node, op, [node.input[0]], axis=int(attrs.get("axis", 0)), keepdims=bool(attrs.get("keepdims", 1)),
                 select_last_index=bool(attrs.get("select_last_index", 0)))
    return handle


def _constant(imp, node, attrs):
    if "value" in attrs:
        array = np.asarray(attrs["value"])
    elif "value_float" in attrs or "value_int" in attrs:
        array = np.asarray(attrs.get("value_float", attrs.get("value_int")),
                           dtype=np.float32 if "value_float" in attrs else np.int64)
    elif "value_floats" in attrs or "value_ints" in attrs:
        array = np.asarray(attrs.get("value_floats", attrs.get("value_ints")),
                           dtype=np.float32 if "value_floats" in attrs else np.int64)
    else:
        raise NodeProblem(f"only tensor, float(s) and int(s) constants are supported, not {sorted(attrs)}")
    imp._checked(array.dtype, node.output[0])
    imp.static[node.output[0]] = array  # enters the graph only if a run-time node uses it
    imp.foldable.add(node.output[0])


def _concat(imp, node, attrs):
    inputs = [i for i in node.input if i]
    axis = int(attrs["axis"])
    # Empty pieces add nothing (exporters write them for shapes); dropping them keeps the chain short.
    kept = [i for i in inputs if imp.shape_of(i) is None or 0 not in imp.shape_of(i)[axis:axis + 1]] or inputs[:1]
    if len(kept) == 1:
        imp.emit(node, "Identity", kept)
        return
    value = kept[0]
    for item in kept[1:-1]:
        value = imp.step(node, "Concat", [value, item], axis=axis)
    imp.emit(node, "Concat", [value, kept[-1]], axis=axis)


def _slice(imp, node, attrs):
    if "starts" in attrs:  # opset < 10
        starts, ends, axes, steps = attrs["starts"], attrs["ends"], attrs.get("axes"), None
    else:
        starts = imp.constant_input(node, 1, "starts")
        ends = imp.constant_input(node, 2, "ends")
        axes = imp.constant_input(node, 3, "axes")
        steps = imp.constant_input(node, 4, "steps")
    given = {"starts": _ints(starts), "ends": _ints(ends)}
    if axes is not None:
        given["axes"] = _ints(axes)
    if steps is not None:
        given["steps"] = _ints(steps)
    imp.emit(node, "Slice", [node.input[0]], **given)


def _split(imp, node, attrs):
    x = node.input[0]
    shape = imp.shape_of(x)
    axis = int(attrs.get("axis", 0))
    if shape is None or shape[axis] < 0:
        raise NodeProblem(f"Split needs the length of axis {axis} of {x!r} known at import")
    length = shape[axis]
    sizes = _arg(imp, node, attrs, "split", 1)
    outputs = list(node.output)
    if sizes is None:
        parts = len(outputs)
        # Opset 18's num_outputs: equal parts, the last smaller; before it, equal parts that must divide.
        size = -(-length // parts)
        sizes = [size] * (parts - 1) + [length - size * (parts - 1)]
    sizes = _ints(sizes)
    if len(sizes) != len(outputs) or sum(sizes) != length:
        raise NodeProblem(f"split sizes {sizes} do not cut axis {axis} of length {length} into {len(outputs)}")
    start = 0
    for out, size in zip(outputs, sizes):
        if out:
            value = imp.graph.node("Slice", imp.value(x), name=imp.fresh(out), starts=[start], ends=[start + size],
                                   axes=[axis])
            imp.values[out] = value
        start += size


def _gather(op: str) -> Callable:
    def handle(imp, node, attrs):
        imp.emit(node, op, list(node.input), axis=int(attrs.get("axis", 0)))
    return handle


def _expand(imp, node, attrs):
    imp.emit(node, "Expand", [node.input[0]], shape=_ints(imp.constant_input(node, 1, "shape")))


def _pad(imp, node, attrs):
    x = node.input[0]
    mode = _text(attrs.get("mode", b"constant"))
    pads = _ints(_arg(imp, node, attrs, "pads", 1))
    value = attrs.get("value", None)
    if value is None:
        value = imp.constant_input(node, 2, "constant_value")
    axes = imp.constant_input(node, 3, "axes")
    if axes is not None:  # opset 18: pads for the listed axes only
        rank = len(imp.shape_of(x) or ())
        if not rank:
            raise NodeProblem(f"Pad with axes needs the rank of {x!r} known at import")
        full = [0] * (2 * rank)
        axes = [a % rank for a in _ints(axes)]
        for k, a in enumerate(axes):
            full[a], full[rank + a] = pads[k], pads[len(axes) + k]
        pads = full
    given = {"pads": pads, "mode": mode}
    if value is not None and np.size(value):
        given["value"] = float(np.asarray(value).reshape(-1)[0])
    imp.emit(node, "Pad", [x], **given)


def _squeeze(op: str) -> Callable:
    def handle(imp, node, attrs):
        axes = _arg(imp, node, attrs, "axes", 1)
        imp.emit(node, op, [node.input[0]], **({"axes": _ints(axes)} if axes is not None else {}))
    return handle


def _tile(imp, node, attrs):
    imp.emit(node, "Tile", [node.input[0]], repeats=_ints(imp.constant_input(node, 1, "repeats")))


def _numpy_dtype(code: int, what: str) -> str:
    try:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(code))
    except (KeyError, TypeError, ValueError):
        dtype = None
    if dtype is None or dtype.kind not in "biuf" or dtype.name not in _CARRIED:
        raise NodeProblem(f"{what} {helper.tensor_dtype_to_string(code)} is not a dtype gradserve carries "
                          f"({', '.join(_CARRIED)})")
    return dtype.name


_CARRIED = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool")


def _cast(imp, node, attrs):
    imp.emit(node, "Cast", [node.input[0]], to=_numpy_dtype(int(attrs["to"]), "the target type"))


def _cast_like(imp, node, attrs):
    dtype = imp.dtype_of(node.input[1])
    if dtype is None:
        raise NodeProblem(f"the dtype of {node.input[1]!r} is unknown at import")
    imp.emit(node, "Cast", [node.input[0]], to=np.dtype(dtype).name)


def _shape(imp, node, attrs):
    given = {"start": int(attrs["start"])} if "start" in attrs else {}
    if "end" in attrs:
        given["end"] = int(attrs["end"])
    imp.emit(node, "Shape", [node.input[0]], **given)


def _constant_of_shape(imp, node, attrs):
    value = np.asarray(attrs.get("value", np.zeros(1, dtype=np.float32)))
    dtype = _numpy_dtype(helper.np_dtype_to_tensor_dtype(value.dtype), "the value's type")
    imp.emit(node, "ConstantOfShape", [node.input[0]], value=float(value.reshape(-1)[0]), dtype=dtype)


def _eye_like(imp, node, attrs):
    given = {"k": int(attrs.get("k", 0))}
    if "dtype" in attrs:
        given["dtype"] = _numpy_dtype(int(attrs["dtype"]), "the dtype")
    imp.emit(node, "EyeLike", [node.input[0]], **given)


def _depth_to_space(imp, node, attrs):
    imp.emit(node, "DepthToSpace", [node.input[0]], blocksize=int(attrs["blocksize"]),
             mode=_text(attrs.get("mode", b"DCR")))


def _trilu(imp, node, attrs):
    k = imp.constant_input(node, 1, "k")
    imp.emit(node, "Trilu", [node.input[0]], upper=bool(attrs.get("upper", 1)),
             k=0 if k is None else int(np.asarray(k).reshape(-1)[0]))


def _cumsum(imp, node, attrs):
    axis = int(np.asarray(imp.constant_input(node, 1, "axis")).reshape(-1)[0])
    imp.emit(node, "CumSum", [node.input[0]], axis=axis, exclusive=bool(attrs.get("exclusive", 0)),
             reverse=bool(attrs.get("reverse", 0)))


def _topk(imp, node, attrs):
    k = attrs["k"] if "k" in attrs else imp.constant_input(node, 1, "K")
    imp.emit_all(node, "TopK", [node.input[0]], 2, k=int(np.asarray(k).reshape(-1)[0]), axis=int(attrs.get("axis", -1)),
                 largest=bool(attrs.get("largest", 1)), sorted=bool(attrs.get("sorted", 1)))


def _one_hot(imp, node, attrs):
    imp.emit(node, "OneHot", list(node.input), axis=int(attrs.get("axis", -1)))


def _dropout(imp, node, attrs):
    training = imp.constant_input(node, 2, "training_mode")
    if training is not None and bool(np.asarray(training)):
        raise NodeProblem("Dropout in training mode draws its mask from ONNX's generator; export in eval mode, "
                          "or use gradserve's Dropout layer (training=True in the request)")
    x = node.input[0]
    imp.emit(node, "Identity", [x])
    if len(node.output) > 1 and node.output[1]:  # the mask: every element kept
        shape = imp.step(node, "Shape", [x])
        mask = imp.graph.node("ConstantOfShape", shape, name=node.output[1], value=1.0, dtype="bool")
        imp.values[node.output[1]] = mask


def _range(imp, node, attrs):
    imp.emit(node, "Range", list(node.input))


def _scatter(op: str) -> Callable:
    def handle(imp, node, attrs):
        reduction = _text(attrs.get("reduction", b"none"))
        if reduction not in ("none", "add"):
            raise NodeProblem(f"reduction {reduction!r} is not supported; none and add are (they have gradients)")
        given = {"reduction": reduction}
        if op == "ScatterElements":
            given["axis"] = int(attrs.get("axis", 0))
        imp.emit(node, op, list(node.input), **given)
    return handle


def _compress(imp, node, attrs):
    imp.emit(node, "Compress", list(node.input), **_axis_of(attrs))


def _reverse_sequence(imp, node, attrs):
    imp.emit(node, "ReverseSequence", list(node.input), batch_axis=int(attrs.get("batch_axis", 1)),
             time_axis=int(attrs.get("time_axis", 0)))


# -- normalizations ONNX defines as functions: imported as their composition, so backward comes with them --

def _rank(imp, name: str) -> int:
    shape = imp.shape_of(name)
    if shape is None:
        raise NodeProblem(f"the rank of {name!r} must be known at import")
    return len(shape)


def _float(imp, name: str, value: float):
    """A scalar constant of ``name``'s float dtype."""
    return imp.constant(np.asarray(value, dtype=imp.dtype_of(name) or np.dtype(imp.graph.dtype)))


def _normalize(imp, node, x, axes, epsilon: float, *, center: bool = True):
    """(x - mean) / sqrt(var + epsilon) over ``axes`` (without centering: x / sqrt(mean(x²) + epsilon))."""
    if center:
        mean = imp.step(node, "Mean", [x], axis=axes, keepdims=True)
        x = imp.step(node, "Sub", [x, mean])
    square = imp.step(node, "Mul", [x, x])
    var = imp.step(node, "Mean", [square], axis=axes, keepdims=True)
    std = imp.step(node, "Sqrt", [imp.step(node, "Add", [var, _float(imp, node.input[0], epsilon)])])
    return imp.step(node, "Div", [x, std])


def _per_channel(imp, node, value, rank: int):
    """A (C,) scale or bias shaped (C, 1, ...) to broadcast over (N, C, ...)."""
    return imp.step(node, "Unsqueeze", [value], axes=list(range(1, rank - 1))) if rank > 2 else value


def _instance_norm(imp, node, attrs):
    x, scale, bias = node.input
    rank = _rank(imp, x)
    y = _normalize(imp, node, x, list(range(2, rank)), float(attrs.get("epsilon", 1e-5)))
    scaled = imp.step(node, "Mul", [y, _per_channel(imp, node, scale, rank)])
    imp.emit(node, "Add", [scaled, _per_channel(imp, node, bias, rank)])


def _group_norm(imp, node, attrs):
    x, scale, bias = node.input
    shape = imp.full_shape(x)
    if shape is None:
        raise NodeProblem(f"the shape of {x!r} must be known at import")
    groups = int(attrs["num_groups"])
    n, c = shape[0], shape[1]
    grouped = imp.step(node, "Reshape", [x], shape=[n, groups, -1])
    y = imp.step(node, "Reshape", [_normalize(imp, node, grouped, [2], float(attrs.get("epsilon", 1e-5)))],
                 shape=list(shape))
    if imp.shape_of(scale) == (groups,) and groups != c:  # opset 18: one scale and bias per group
        scale = imp.step(node, "Reshape", [imp.step(node, "Expand", [imp.step(node, "Unsqueeze", [scale], axes=[1])],
                                                    shape=[groups, c // groups])], shape=[c])
        bias = imp.step(node, "Reshape", [imp.step(node, "Expand", [imp.step(node, "Unsqueeze", [bias], axes=[1])],
                                                   shape=[groups, c // groups])], shape=[c])
    scaled = imp.step(node, "Mul", [y, _per_channel(imp, node, scale, len(shape))])
    imp.emit(node, "Add", [scaled, _per_channel(imp, node, bias, len(shape))])


def _rms_norm(imp, node, attrs):
    x, scale = node.input[0], node.input[1]
    rank = _rank(imp, x)
    axis = int(attrs.get("axis", -1)) % rank
    y = _normalize(imp, node, x, list(range(axis, rank)), float(attrs.get("epsilon", 1e-5)), center=False)
    imp.emit(node, "Mul", [y, scale])


def _mean_variance_norm(imp, node, attrs):
    x = node.input[0]
    axes = _ints(attrs.get("axes", [0, 2, 3]))
    # ONNX's function: (x - mean) / (sqrt(mean(x²) - mean(x)²) + 1e-9).
    mean = imp.step(node, "Mean", [x], axis=axes, keepdims=True)
    centered = imp.step(node, "Sub", [x, mean])
    var = imp.step(node, "Mean", [imp.step(node, "Mul", [centered, centered])], axis=axes, keepdims=True)
    std = imp.step(node, "Add", [imp.step(node, "Sqrt", [var]), _float(imp, x, 1e-9)])
    imp.emit(node, "Div", [centered, std])


def _lp_norm(imp, node, attrs):
    x = node.input[0]
    p = int(attrs.get("p", 2))
    if p not in (1, 2):
        raise NodeProblem(f"p={p}; LpNormalization has p 1 or 2")
    norm = imp.step(node, "ReduceL2" if p == 2 else "ReduceL1", [x], axes=[int(attrs.get("axis", -1))], keepdims=True)
    # A zero slice stays zero (ONNX's definition): divide it by one instead of by its zero norm.
    zero = imp.step(node, "Equal", [norm, _float(imp, x, 0.0)])
    safe = imp.step(node, "Where", [zero, _float(imp, x, 1.0), norm])
    imp.emit(node, "Div", [x, safe])


# -- convolution, pooling and the normalizations with layers of their own --

_WINDOW = {"kernel_shape": _ints, "strides": _ints, "pads": _ints, "dilations": _ints, "auto_pad": _text}


def _window(attrs, *extra: str) -> dict:
    given = {k: convert(attrs[k]) for k, convert in _WINDOW.items() if k in attrs}
    given.update({k: bool(attrs[k]) for k in extra if k in attrs})
    return given


def _conv(imp, node, attrs):
    x, w = node.input[0], node.input[1]
    b = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if b is None:  # Conv's bias is optional; ours is not, and zeros add nothing
        shape = imp.shape_of(w)
        if shape is None or shape[0] < 0:
            raise NodeProblem(f"without a bias, the shape of the filters {w!r} must be known at import")
        b = imp.constant(np.zeros(shape[0], dtype=imp.dtype_of(w) or np.dtype(imp.graph.dtype)))
    imp.emit(node, "Convolution", [x, w, b], group=int(attrs.get("group", 1)), **_window(attrs))


def _pool(mode: str) -> Callable:
    def handle(imp, node, attrs):
        if len(node.output) > 1 and node.output[1]:
            raise NodeProblem("MaxPool's Indices output is not supported; use only its first output")
        if attrs.get("storage_order", 0):
            raise NodeProblem("storage_order=1 (column-major indices) is not supported")
        imp.emit(node, "Pooling", [node.input[0]], mode=mode, **_window(attrs, "ceil_mode", "count_include_pad"))
    return handle


def _batch_norm(imp, node, attrs):
    if len(node.input) != 5:
        raise NodeProblem(f"BatchNormalization takes 5 inputs, got {len(node.input)}")
    if "spatial" in attrs and not attrs["spatial"]:
        raise NodeProblem("spatial=0 (opset < 9, statistics per element) is not supported")
    # ONNX's training_mode (opset 14; before it, asking for the running statistics' outputs meant training).
    training = bool(attrs.get("training_mode", 0)) or imp.opset < 14 and len([o for o in node.output if o]) > 1
    given = {"epsilon": float(attrs.get("epsilon", 1e-5)), "momentum": float(attrs.get("momentum", 0.9)),
             "spatial": True, "training_mode": training}
    imp.emit_all(node, "BatchNormalization", list(node.input), 3, **given)


def _layer_norm(imp, node, attrs):
    x, scale = node.input[0], node.input[1]
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else _float(imp, x, 0.0)
    imp.emit_all(node, "LayerNormalization", [x, scale, bias], 3, axis=int(attrs.get("axis", -1)),
                 epsilon=float(attrs.get("epsilon", 1e-5)))


def _gelu(imp, node, attrs):
    imp.emit(node, "Gelu", [node.input[0]], approximate=_text(attrs.get("approximate", b"none")))


HANDLERS: dict[str, Callable] = {
    **{op: _same(op) for op in (
        "Add", "Sub", "Mul", "MatMul", "Relu", "Sigmoid", "Tanh", "Exp", "Log", "Neg", "Identity",
        "Abs", "Sqrt", "Reciprocal", "Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh",
        "Atanh", "Softplus", "Softsign", "Mish", "Sign", "Floor", "Ceil", "Round", "HardSwish", "Pow", "PRelu",
        "Where", "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Not", "And", "Or", "Xor", "IsNaN",
        "BitwiseNot", "BitwiseAnd", "BitwiseOr", "BitwiseXor", "Size")},
    **{op: _with(op, alpha=float) for op in ("Elu", "Celu", "LeakyRelu", "ThresholdedRelu", "Swish")},
    "Selu": _with("Selu", alpha=float, gamma=float),
    "HardSigmoid": _with("HardSigmoid", alpha=float, beta=float),
    "Shrink": _with("Shrink", bias=float, lambd=float),
    "IsInf": _with("IsInf", detect_negative=bool, detect_positive=bool),
    "BitShift": _with("BitShift", direction=_text),
    "Div": _div,
    "Mod": _mod,
    "Max": _chain("Max"),
    "Min": _chain("Min"),
    "Sum": _chain("Add"),
    "Mean": _mean,
    "Clip": _clip,
    "Softmax": _softmax,
    "Hardmax": _hardmax,
    "Gemm": _gemm,
    "Reshape": _reshape,
    "Flatten": _flatten,
    "Transpose": _transpose,
    "ReduceSum": _reduce("Sum", "axis"),
    "ReduceMean": _reduce("Mean", "axis"),
    **{op: _reduce(op) for op in ("ReduceMax", "ReduceMin", "ReduceProd", "ReduceSumSquare", "ReduceL1", "ReduceL2",
                                  "ReduceLogSum", "ReduceLogSumExp")},
    "ArgMax": _arg_extremum("ArgMax"),
    "ArgMin": _arg_extremum("ArgMin"),
    "Constant": _constant,
    "Concat": _concat,
    "Slice": _slice,
    "Split": _split,
    "Gather": _gather("Gather"),
    "GatherElements": _gather("GatherElements"),
    "Expand": _expand,
    "Pad": _pad,
    "Squeeze": _squeeze("Squeeze"),
    "Unsqueeze": _squeeze("Unsqueeze"),
    "Tile": _tile,
    "Cast": _cast,
    "CastLike": _cast_like,
    "Shape": _shape,
    "Range": _range,
    "ConstantOfShape": _constant_of_shape,
    "EyeLike": _eye_like,
    "DepthToSpace": _depth_to_space,
    "SpaceToDepth": _with("SpaceToDepth", blocksize=int, mode=_text),
    "Trilu": _trilu,
    "CumSum": _cumsum,
    "TopK": _topk,
    "OneHot": _one_hot,
    "Dropout": _dropout,
    "GatherND": _with("GatherND", batch_dims=int),
    "ScatterElements": _scatter("ScatterElements"),
    "Scatter": _scatter("ScatterElements"),  # its deprecated name (opset 9 and 10)
    "ScatterND": _scatter("ScatterND"),
    "Compress": _compress,
    "NonZero": _same("NonZero"),
    "ReverseSequence": _reverse_sequence,
    "Det": _same("Det"),
    "InstanceNormalization": _instance_norm,
    "GroupNormalization": _group_norm,
    "RMSNormalization": _rms_norm,
    "MeanVarianceNormalization": _mean_variance_norm,
    "LpNormalization": _lp_norm,
    "Conv": _conv,
    "MaxPool": _pool("max"),
    "AveragePool": _pool("average"),
    "GlobalAveragePool": _same("GlobalAveragePool"),
    "GlobalMaxPool": _same("GlobalMaxPool"),
    "BatchNormalization": _batch_norm,
    "LayerNormalization": _layer_norm,
    "Gelu": _gelu,
    "Erf": _same("Erf"),
    "LogSoftmax": lambda imp, node, attrs: _softmax(imp, node, attrs, "LogSoftmax"),
}

#: How the ONNX ops without a same-named gradserve layer are imported (the supported-op table says so).
IMPORTED_AS = {
    "Sum": "a chain of Add", "Mean": "a chain of Add, then Div", "Max": "a chain of Max", "Min": "a chain of Min",
    "Concat": "a chain of Concat", "Split": "one Slice per output", "CastLike": "Cast", "Scatter": "ScatterElements",
    "ReduceSum": "Sum", "ReduceMean": "Mean", "Conv": "Convolution", "MaxPool": "Pooling (mode max)",
    "AveragePool": "Pooling (mode average)", "Dropout": "Identity (inference; a training-mode Dropout is refused)",
    "InstanceNormalization": "Mean, Sub, Mul, Sqrt, Div, Add (its ONNX function)",
    "GroupNormalization": "Reshape, Mean, Sub, Mul, Sqrt, Div, Add (its ONNX function)",
    "RMSNormalization": "Mul, Mean, Add, Sqrt, Div (its ONNX function)",
    "MeanVarianceNormalization": "Mean, Sub, Mul, Sqrt, Add, Div (its ONNX function)",
    "LpNormalization": "ReduceL1 or ReduceL2, Equal, Where, Div",
    "Constant": "Constant (or folded into what uses it)",
}

#: Ops computed at import when all their inputs are constants (shape arithmetic and constant expressions).
FOLDABLE = frozenset(HANDLERS) - {"Constant", "Dropout"}
