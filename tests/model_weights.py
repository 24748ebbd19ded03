"""Structure-only ONNX graphs (tests/models/): strip a model's float weights, and fill them again at test time.

A stripped model keeps every node and every integer initializer (shapes, axes, indices); each float
initializer is removed and listed, with its dtype and shape, in the model's metadata under ``gradserve.weights``.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import numpy_helper

WEIGHTS_KEY = "gradserve.weights"


def strip_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    stripped = onnx.ModelProto()
    stripped.CopyFrom(model)
    kept, listed = [], {}
    for tensor in stripped.graph.initializer:
        array = numpy_helper.to_array(tensor)
        if array.dtype.kind == "f":
            listed[tensor.name] = [array.dtype.name, list(array.shape)]
        else:
            kept.append(tensor)
    del stripped.graph.initializer[:]
    stripped.graph.initializer.extend(kept)
    stripped.metadata_props.add(key=WEIGHTS_KEY, value=json.dumps(listed))
    return stripped


def positive_weights(model: onnx.ModelProto) -> set[str]:
    """Initializers that must be positive: the variances BatchNormalization divides by."""
    return {node.input[4] for node in model.graph.node if node.op_type == "BatchNormalization"}


def fill_weights(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """The model with random weights in place of the stripped ones (fan-in scaled, so activations stay O(1))."""
    listed = json.loads(next(p.value for p in model.metadata_props if p.key == WEIGHTS_KEY))
    rng = np.random.default_rng(seed)
    positive = positive_weights(model)
    filled = onnx.ModelProto()
    filled.CopyFrom(model)
    for name, (dtype, shape) in listed.items():
        if name in positive:
            array = rng.uniform(0.5, 2.0, shape)
        else:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else max(shape[0] if shape else 1, 1)
            array = rng.standard_normal(shape) / np.sqrt(fan_in)
        filled.graph.initializer.append(numpy_helper.from_array(array.astype(dtype), name))
    return filled


def as_float32(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same model computing in float32 (onnxruntime has no float64 kernels for Conv, Erf, ...)."""
    double, single = onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT
    converted = onnx.ModelProto()
    converted.CopyFrom(model)
    graph = converted.graph

    def cast(tensor: onnx.TensorProto) -> None:
        if tensor.data_type == double:
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name))

    for info in list(graph.input) + list(graph.output) + list(graph.value_info):
        if info.type.tensor_type.elem_type == double:
            info.type.tensor_type.elem_type = single
    for tensor in graph.initializer:
        cast(tensor)
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                cast(attr.t)
            elif node.op_type == "Cast" and attr.name == "to" and attr.i == double:
                attr.i = single
    return converted
