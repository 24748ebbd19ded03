"""Reductions beyond Sum and Mean (ONNX's ReduceMax, ReduceProd, ReduceL2, ...) and ArgMax/ArgMin.

Each reduces over ``axes`` (all axes when unset) and keeps them with length one when ``keepdims``;
the gradient is broadcast back over the reduced axes.
"""

from __future__ import annotations

import numpy as np

from gradserve.plugins import Attr, Layer, TensorType, probe_dtypes

_AXES = Attr("ints", None, "axes to reduce (negative counts from the end); all axes when unset")
_KEEPDIMS = Attr("bool", True, "keep the reduced axes with length one (ONNX's default)")


class _Reduce(Layer):
    """Base: forward keeps x and the kept-dims result; ``grad(x, out_kept, dout_kept)`` gives dx."""

    inputs = ("x",)
    attributes = {"axes": _AXES, "keepdims": _KEEPDIMS}

    def forward(self, x):
        self.x = x
        self.axis = None if self.axes is None else tuple(sorted(a % max(x.ndim, 1) for a in self.axes))
        kept = np.asarray(self.reduce(x, self.axis))
        self.kept = kept
        return kept if self.keepdims else kept.reshape(_dropped(x.shape, self.axis))

    def output_types(self, x):
        ndim = len(x.shape)
        axis = None if self.axes is None else tuple(sorted(a % max(ndim, 1) for a in self.axes))
        kept = tuple(1 if axis is None or i in axis else n for i, n in enumerate(x.shape))
        return (TensorType(kept if self.keepdims else _dropped(x.shape, axis), probe_dtypes(self, x)[0]),)

    def backward(self, dout):
        dout = dout.reshape(self.kept.shape)
        return (np.asarray(self.grad(self.x, self.kept, dout), dtype=dout.dtype),)


def _dropped(shape, axis):
    return tuple(n for i, n in enumerate(shape) if axis is not None and i not in axis)


def _initial(x, largest: bool):
    """The identity of max (or min) in x's dtype: an empty reduction gives it, as ONNX specifies."""
    if x.dtype.kind == "f":
        return -np.inf if largest else np.inf
    if x.dtype.kind == "b":
        return not largest
    info = np.iinfo(x.dtype)
    return info.min if largest else info.max


def _argmask(x, kept, dout, axis):
    """dout spread over the elements equal to the extremum, shared evenly among ties (as torch's amax)."""
    mask = x == kept
    return dout * mask / np.maximum(np.sum(mask, axis=axis, keepdims=True), 1)


class ReduceMax(_Reduce):
    """Largest element over axes (an empty reduction gives the dtype's lowest value); ties share the gradient."""

    def reduce(self, x, axis):
        return np.max(x, axis=axis, keepdims=True, initial=_initial(x, True))

    def grad(self, x, kept, dout):
        return _argmask(x, kept, dout, self.axis)


class ReduceMin(_Reduce):
    """Smallest element over axes (an empty reduction gives the dtype's highest value); ties share the gradient."""

    def reduce(self, x, axis):
        return np.min(x, axis=axis, keepdims=True, initial=_initial(x, False))

    def grad(self, x, kept, dout):
        return _argmask(x, kept, dout, self.axis)


class ReduceProd(_Reduce):
    """Product of the elements over axes."""

    def reduce(self, x, axis):
        return np.prod(x, axis=axis, keepdims=True)

    def grad(self, x, kept, dout):
        if x.size == 0:
            return np.zeros(x.shape)
        # The product of the others, computed without dividing (x may hold zeros): exclusive cumulative products.
        axes = tuple(range(x.ndim)) if self.axis is None else self.axis
        moved = np.moveaxis(x, axes, tuple(range(-len(axes), 0)))
        flat = moved.reshape(moved.shape[:moved.ndim - len(axes)] + (-1,))
        ones = np.ones(flat.shape[:-1] + (1,), dtype=flat.dtype)
        before = np.cumprod(np.concatenate([ones, flat[..., :-1]], axis=-1), axis=-1)
        after = np.cumprod(np.concatenate([ones, flat[..., :0:-1]], axis=-1), axis=-1)[..., ::-1]
        others = np.moveaxis((before * after).reshape(moved.shape), tuple(range(-len(axes), 0)), axes)
        return dout * others


class ReduceSumSquare(_Reduce):
    """Sum of the squares of the elements over axes."""

    def reduce(self, x, axis):
        return np.sum(x * x, axis=axis, keepdims=True)

    def grad(self, x, kept, dout):
        return 2 * x * dout


class ReduceL1(_Reduce):
    """Sum of the absolute values over axes."""

    def reduce(self, x, axis):
        return np.sum(np.abs(x), axis=axis, keepdims=True)

    def grad(self, x, kept, dout):
        return np.sign(x) * dout


class ReduceL2(_Reduce):
    """Euclidean norm over axes (the gradient at an all-zero slice is taken as zero)."""

    def reduce(self, x, axis):
        return np.sqrt(np.sum(x * x, axis=axis, keepdims=True))

    def grad(self, x, kept, dout):
        return x * dout / np.where(kept == 0, 1, kept)


class ReduceLogSum(_Reduce):
    """log of the sum of the elements over axes."""

    def reduce(self, x, axis):
        with np.errstate(divide="ignore"):
            return np.log(np.sum(x, axis=axis, keepdims=True))

    def grad(self, x, kept, dout):
        return dout / np.exp(kept) * np.ones_like(x)


class ReduceLogSumExp(_Reduce):
    """log(sum(exp(x))) over axes, computed without overflow."""

    def reduce(self, x, axis):
        if x.size == 0:
            return np.log(np.sum(np.exp(x), axis=axis, keepdims=True))
        top = np.max(x, axis=axis, keepdims=True)
        top = np.where(np.isfinite(top), top, 0)
        return np.log(np.sum(np.exp(x - top), axis=axis, keepdims=True)) + top

    def grad(self, x, kept, dout):
        return dout * np.exp(x - kept)


class _ArgExtremum(Layer):
    inputs = ("x",)
    differentiable = ()
    attributes = {
        "axis": Attr("int", 0, "the axis searched"),
        "keepdims": Attr("bool", True, "keep that axis with length one"),
        "select_last_index": Attr("bool", False, "on ties, the last index instead of the first"),
    }

    def forward(self, x):
        axis = self.axis % max(x.ndim, 1)
        if self.select_last_index:
            flipped = np.flip(x, axis)
            index = x.shape[axis] - 1 - self.find(flipped, axis)
        else:
            index = self.find(x, axis)
        index = index.astype(np.int64)
        return np.expand_dims(index, axis) if self.keepdims else index

    def output_types(self, x):
        if not x.shape:
            return (TensorType((1,) if self.keepdims else (), np.dtype(np.int64)),)
        axis = self.axis % len(x.shape)
        shape = tuple(1 if i == axis else n for i, n in enumerate(x.shape) if self.keepdims or i != axis)
        return (TensorType(shape, np.dtype(np.int64)),)

    def backward(self, dout):
        return (None,)


class ArgMax(_ArgExtremum):
    """Index (int64) of the largest element along an axis; no gradient."""

    find = staticmethod(lambda x, axis: np.argmax(x, axis=axis))


class ArgMin(_ArgExtremum):
    """Index (int64) of the smallest element along an axis; no gradient."""

    find = staticmethod(lambda x, axis: np.argmin(x, axis=axis))


class Det(Layer):
    """Determinant of each square matrix in the last two axes (the gradient needs x invertible)."""

    inputs = ("x",)

    def forward(self, x):
        if x.ndim < 2 or x.shape[-1] != x.shape[-2]:
            raise ValueError(f"Det takes square matrices in the last two axes, got shape {x.shape}")
        self.x = x
        self.out = np.linalg.det(x).astype(x.dtype, copy=False)
        return self.out

    def output_types(self, x):
        if len(x.shape) < 2 or x.shape[-1] != x.shape[-2]:
            raise ValueError(f"Det takes square matrices in the last two axes, got shape {x.shape}")
        return (TensorType(tuple(x.shape[:-2]), x.dtype),)

    def backward(self, dout):
        # d det(X) / dX = det(X) * inv(X)^T (Jacobi's formula).
        scale = (dout * self.out)[..., np.newaxis, np.newaxis]
        return ((scale * np.swapaxes(np.linalg.inv(self.x), -1, -2)).astype(dout.dtype, copy=False),)


LAYERS = (ReduceMax, ReduceMin, ReduceProd, ReduceSumSquare, ReduceL1, ReduceL2, ReduceLogSum, ReduceLogSumExp,
          ArgMax, ArgMin, Det)
