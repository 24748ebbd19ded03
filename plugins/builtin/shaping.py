"""Reductions, shape changes and constants: Sum, Mean, Reshape, Identity, Constant."""

import numpy as np

import math

from gradserve.plugins import Attr, Layer, TensorType, elementwise_types, probe_dtypes, reshaped

_AXIS = Attr("ints", None, "axes to reduce; all axes when unset")
_KEEPDIMS = Attr("bool", False, "keep reduced axes with length one")


def _expand_back(dout, x_shape, axis, keepdims):
    """Broadcast a reduction's dout back to the shape of its input."""
    if not keepdims:
        axes = range(len(x_shape)) if axis is None else [a % len(x_shape) for a in axis]
        dout = np.expand_dims(dout, tuple(sorted(axes)))
    return np.broadcast_to(dout, x_shape)


def _reduction_types(layer, x: TensorType) -> tuple[TensorType, ...]:
    """Sum's and Mean's shape rule: the reduced axes dropped (or kept with length one)."""
    ndim = len(x.shape)
    axes = range(ndim) if layer.axis is None else [np.lib.array_utils.normalize_axis_index(a, ndim)
                                                   for a in layer.axis]
    if len(set(axes)) != len(axes):
        raise ValueError(f"axis {list(layer.axis)} repeats an axis")
    shape = tuple(1 if i in axes else n for i, n in enumerate(x.shape) if layer.keepdims or i not in axes)
    return (TensorType(shape, probe_dtypes(layer, x)[0]),)


class Sum(Layer):
    """Sum of x over axes."""

    inputs = ("x",)
    attributes = {"axis": _AXIS, "keepdims": _KEEPDIMS}
    output_types = _reduction_types

    def forward(self, x):
        self.x_shape = x.shape
        return np.asarray(x.sum(axis=self.axis, keepdims=self.keepdims))

    def backward(self, dout):
        return (_expand_back(dout, self.x_shape, self.axis, self.keepdims),)


class Mean(Layer):
    """Mean of x over axes."""

    inputs = ("x",)
    attributes = {"axis": _AXIS, "keepdims": _KEEPDIMS}
    output_types = _reduction_types

    def forward(self, x):
        self.x_shape = x.shape
        out = np.asarray(x.mean(axis=self.axis, keepdims=self.keepdims))
        self.count = x.size // max(out.size, 1) if x.size else 1
        return out

    def backward(self, dout):
        return (_expand_back(dout / self.count, self.x_shape, self.axis, self.keepdims),)


class Reshape(Layer):
    """x reshaped to a shape (one dimension may be -1)."""

    inputs = ("x",)
    attributes = {
        "shape": Attr("ints", doc="the new shape; -1 once for an inferred length"),
        "copy_zeros": Attr("bool", False, "a 0 in shape keeps x's length on that axis (ONNX Reshape's default) "
                                          "instead of meaning length 0"),
    }

    def forward(self, x):
        self.x_shape = x.shape
        return x.reshape(self._target(x.shape))

    def output_types(self, x):
        return (TensorType(reshaped(math.prod(x.shape), self._target(x.shape)), x.dtype),)

    def _target(self, x_shape):
        shape = self.shape
        if self.copy_zeros and 0 in shape:
            if 0 in shape[len(x_shape):]:
                raise ValueError(f"shape {list(shape)} copies axis {shape.index(0, len(x_shape))} of a "
                                 f"rank-{len(x_shape)} x")
            shape = tuple(x_shape[i] if d == 0 else d for i, d in enumerate(shape))
        return shape

    def backward(self, dout):
        return (dout.reshape(self.x_shape),)


class Identity(Layer):
    """x unchanged."""

    inputs = ("x",)
    output_types = elementwise_types

    def forward(self, x):
        return x

    def backward(self, dout):
        return (dout,)


class Constant(Layer):
    """A constant array built from its attributes (the graph builder's numbers, ONNX constants).

    Integer and bool constants come in value_ints, exact for every int64; value (floats, sent as float64)
    rounds integers above 2**53.
    """

    inputs = ()
    attributes = {
        "value": Attr("floats", None, "the elements, in C order (floating-point constants)"),
        "value_ints": Attr("ints", None, "the elements, in C order, exact (integer and bool constants)"),
        "shape": Attr("ints", (), "the array's shape; () for a scalar"),
        "dtype": Attr("str", "float32", "a numpy dtype name"),
    }

    def forward(self):
        self._dtype()
        if self.value_ints is not None:
            return np.array(self.value_ints, dtype=np.int64).astype(self.dtype).reshape(self.shape)
        return np.array(self.value, dtype=self.dtype).reshape(self.shape)

    def output_types(self):
        dtype = self._dtype()
        items = self.value if self.value_ints is None else self.value_ints
        shape = reshaped(len(items), self.shape)
        # A small constant is passed on as a value, for the rules that read values (ConstantOfShape's shape).
        value = self.forward() if len(items) <= 64 else None
        return (TensorType(shape, dtype, value),)

    def _dtype(self) -> np.dtype:
        """The constant's dtype, checking the attributes forward relies on."""
        if (self.value is None) == (self.value_ints is None):
            raise ValueError("Constant takes exactly one of value (floats) and value_ints (integers)")
        try:
            dtype = np.dtype(self.dtype)
        except TypeError:
            raise ValueError(f"dtype {self.dtype!r} is not a numpy dtype name (e.g. float32, int64, bool)") from None
        # Only numbers and bools: a str dtype such as "U999999999" would allocate gigabytes per element.
        if dtype.kind not in "biuf":
            raise ValueError(f"dtype {self.dtype!r} is not a number or bool type (e.g. float32, int64, bool)")
        return dtype

    def backward(self, dout):
        return ()

LAYERS = (Sum, Mean, Reshape, Identity, Constant)
