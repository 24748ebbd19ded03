"""Layers that move, pick, repeat or make elements (ONNX names): Concat, Slice, Gather, Pad, Tile, Cast, Shape, ...

Their gradients route each element of dout back to the input element it came from (summed where one
input element fed several, as Gather's embedding rows and Pad's reflections do). Shape, Size, Range,
ConstantOfShape and EyeLike compute from shapes alone and take no gradient.
"""

from __future__ import annotations

import math

import numpy as np

from gradserve.plugins import Attr, Layer, TensorType, reduce_to_shape

#: A constant or shape this small is passed on as a value to the shape rules that read values.
_KNOWN_VALUE_ELEMENTS = 64


def _axis(axis: int, ndim: int, what: str = "axis") -> int:
    if not -max(ndim, 1) <= axis < max(ndim, 1):
        raise ValueError(f"{what} {axis} is out of range for a rank-{ndim} tensor")
    return axis % max(ndim, 1)


class Concat(Layer):
    """x and y joined along an axis (the importer chains ONNX's variadic Concat)."""

    inputs = ("x", "y")
    attributes = {"axis": Attr("int", 0, "the axis joined along; negative counts from the end")}

    def forward(self, x, y):
        self.split = x.shape[_axis(self.axis, x.ndim)]
        return np.concatenate([x, y], axis=self.axis)

    def output_types(self, x, y):
        axis = _axis(self.axis, len(x.shape))
        if len(x.shape) != len(y.shape) or not x.shape or any(
                a != b for i, (a, b) in enumerate(zip(x.shape, y.shape)) if i != axis):
            raise ValueError(f"Concat along axis {self.axis}: shapes {x.shape} and {y.shape} differ elsewhere")
        shape = tuple(a + b if i == axis else a for i, (a, b) in enumerate(zip(x.shape, y.shape)))
        return (TensorType(shape, np.result_type(x.dtype, y.dtype)),)

    def backward(self, dout):
        dx, dy = np.split(dout, [self.split], axis=self.axis)
        return dx, dy


def slices(shape, starts, ends, axes=None, steps=None) -> tuple[slice, ...]:
    """ONNX Slice's indices as Python slices: negative values count from the end, out-of-range ones clamp."""
    index = [slice(None)] * len(shape)
    axes = range(len(starts)) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise ValueError(f"starts, ends, axes and steps differ in length: {len(starts)}, {len(ends)}, "
                         f"{len(axes)}, {len(steps)}")
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = _axis(axis, len(shape))
        dim = shape[axis]
        if step == 0:
            raise ValueError(f"step 0 on axis {axis}")
        start = start + dim if start < 0 else start
        end = end + dim if end < 0 else end
        if step > 0:
            start, end = min(max(start, 0), dim), min(max(end, 0), dim)
        else:
            start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
        index[axis] = slice(start, None if end < 0 else end, step)
    return tuple(index)


class Slice(Layer):
    """A strided window of x: starts/ends/steps on the listed axes, as ONNX Slice (ends clamp to the length)."""

    inputs = ("x",)
    attributes = {
        "starts": Attr("ints", doc="first index per sliced axis; negative counts from the end"),
        "ends": Attr("ints", doc="end index (exclusive) per sliced axis; clamped to the length"),
        "axes": Attr("ints", None, "the sliced axes; unset means the first len(starts)"),
        "steps": Attr("ints", None, "the stride per sliced axis (negative walks backwards); unset means 1"),
    }

    def forward(self, x):
        self.x_shape = x.shape
        self.index = slices(x.shape, self.starts, self.ends, self.axes, self.steps)
        return x[self.index]

    def output_types(self, x):
        index = slices(x.shape, self.starts, self.ends, self.axes, self.steps)
        return (TensorType(tuple(len(range(n)[s]) for n, s in zip(x.shape, index)), x.dtype),)

    def backward(self, dout):
        dx = np.zeros(self.x_shape, dtype=dout.dtype)
        dx[self.index] = dout
        return (dx,)


def _indices_along(data, axis: int, indices) -> tuple[int, np.ndarray]:
    """The axis (negative counted from the end) and ``indices`` into it with negatives counted from the end;
    ValueError for an index outside the axis (Gather's and GatherElements' rule)."""
    axis = _axis(axis, data.ndim)
    n = data.shape[axis]
    if indices.size and (indices.min() < -n or indices.max() >= n):
        raise ValueError(f"indices outside [-{n}, {n - 1}] for axis {axis} of length {n}")
    return axis, np.where(indices < 0, indices + n, indices)


class Gather(Layer):
    """Slices of data picked by integer indices along an axis (embeddings: the gradient adds into the rows)."""

    inputs = ("data", "indices")
    differentiable = ("data",)
    attributes = {"axis": Attr("int", 0, "the axis indexed")}

    def forward(self, data, indices):
        self.shape, self.axis_, self.indices = data.shape, *_indices_along(data, self.axis, indices)
        return np.take(data, self.indices, axis=self.axis_)

    def output_types(self, data, indices):
        axis = _axis(self.axis, len(data.shape))
        if indices.dtype.kind not in "iub":
            raise ValueError(f"Gather takes integer indices, got {indices.dtype}")
        return (TensorType(data.shape[:axis] + tuple(indices.shape) + data.shape[axis + 1:], data.dtype),)

    def backward(self, dout):
        axis, k = self.axis_, self.indices.ndim
        dx = np.zeros(self.shape, dtype=dout.dtype)
        moved = np.moveaxis(dout, tuple(range(axis, axis + k)), tuple(range(k)))
        np.add.at(np.moveaxis(dx, axis, 0), self.indices, moved)
        return dx, None


class GatherElements(Layer):
    """data's elements picked along an axis by an index tensor of data's rank (numpy's take_along_axis)."""

    inputs = ("data", "indices")
    differentiable = ("data",)
    attributes = {"axis": Attr("int", 0, "the axis indexed")}

    def forward(self, data, indices):
        self.shape, self.axis_, self.indices = data.shape, *_indices_along(data, self.axis, indices)
        return np.take_along_axis(data, self.indices, axis=self.axis_)

    def output_types(self, data, indices):
        _axis(self.axis, len(data.shape))
        if len(indices.shape) != len(data.shape):
            raise ValueError(f"GatherElements takes indices of data's rank {len(data.shape)}, got {indices.shape}")
        # numpy's take_along_axis broadcasts indices against data on every other axis
        shape = tuple(k if i == self.axis % len(data.shape) else np.broadcast_shapes((n,), (k,))[0]
                      for i, (n, k) in enumerate(zip(data.shape, indices.shape)))
        return (TensorType(shape, data.dtype),)

    def backward(self, dout):
        dx = np.zeros(self.shape, dtype=dout.dtype)
        where = list(np.indices(self.indices.shape, sparse=True))
        where[self.axis_] = self.indices
        np.add.at(dx, tuple(where), dout)
        return dx, None


class Expand(Layer):
    """x broadcast with a shape, both ways (ONNX Expand: the result has the broadcast of both shapes)."""

    inputs = ("x",)
    attributes = {"shape": Attr("ints", doc="the shape broadcast with x's")}

    def forward(self, x):
        self.x_shape = x.shape
        shape = np.broadcast_shapes(x.shape, tuple(self.shape))
        return np.broadcast_to(x, shape).copy()

    def output_types(self, x):
        return (TensorType(np.broadcast_shapes(x.shape, tuple(self.shape)), x.dtype),)

    def backward(self, dout):
        return (reduce_to_shape(dout, self.x_shape),)


class Pad(Layer):
    """x padded (or cropped, for negative pads) on each axis: constant, reflect, edge or wrap (ONNX Pad)."""

    inputs = ("x",)
    attributes = {
        "pads": Attr("ints", doc="all the axes' begin counts, then all their end counts (negative crops)"),
        "mode": Attr("str", "constant", "constant, reflect, edge or wrap"),
        "value": Attr("float", 0.0, "the fill of constant mode"),
    }

    def output_types(self, x):
        self._check(len(x.shape))
        ndim = len(x.shape)
        shape = tuple(max(n + b + e, 0) for n, b, e in zip(x.shape, self.pads[:ndim], self.pads[ndim:]))
        return (TensorType(shape, x.dtype),)

    def _check(self, ndim: int) -> None:
        if self.mode not in ("constant", "reflect", "edge", "wrap"):
            raise ValueError(f"mode must be constant, reflect, edge or wrap, got {self.mode!r}")
        if len(self.pads) != 2 * ndim:
            raise ValueError(f"pads has {len(self.pads)} entries; a rank-{ndim} x needs {2 * ndim}")

    def forward(self, x):
        self._check(x.ndim)
        begin, end = self.pads[:x.ndim], self.pads[x.ndim:]
        # Where each output element comes from, as a flat index into x (-1: the constant): its adjoint is backward.
        source = np.arange(x.size).reshape(x.shape)
        grow = [(max(b, 0), max(e, 0)) for b, e in zip(begin, end)]
        if self.mode == "constant":
            source = np.pad(source, grow, mode="constant", constant_values=-1)
        else:
            source = np.pad(source, grow, mode=self.mode)  # numpy's reflect, edge and wrap are ONNX's
        crop = tuple(slice(-min(b, 0), n + min(e, 0)) for b, e, n in zip(begin, end, source.shape))
        self.source, self.x_shape = source[crop], x.shape
        picked = x.reshape(-1)[np.maximum(self.source, 0)] if x.size else np.zeros(self.source.shape, x.dtype)
        return np.where(self.source >= 0, picked, np.asarray(self.value).astype(x.dtype))

    def backward(self, dout):
        dx = np.zeros(int(np.prod(self.x_shape)), dtype=dout.dtype)
        inside = self.source >= 0
        np.add.at(dx, self.source[inside], dout[inside])
        return (dx.reshape(self.x_shape),)


class Squeeze(Layer):
    """x without the listed length-one axes (all of them when unset)."""

    inputs = ("x",)
    attributes = {"axes": Attr("ints", None, "the axes removed; each must have length one")}

    def forward(self, x):
        self.x_shape = x.shape
        axes = None if self.axes is None else tuple(_axis(a, x.ndim) for a in self.axes)
        return np.squeeze(x, axis=axes)

    def output_types(self, x):
        if self.axes is None:
            return (TensorType(tuple(n for n in x.shape if n != 1), x.dtype),)
        axes = {_axis(a, len(x.shape)) for a in self.axes}
        if any(x.shape[a] != 1 for a in axes):
            raise ValueError(f"cannot squeeze axes {list(self.axes)} of shape {x.shape}: not all of length one")
        return (TensorType(tuple(n for i, n in enumerate(x.shape) if i not in axes), x.dtype),)

    def backward(self, dout):
        return (dout.reshape(self.x_shape),)


class Unsqueeze(Layer):
    """x with length-one axes inserted at the listed positions of the result."""

    inputs = ("x",)
    attributes = {"axes": Attr("ints", doc="positions in the result; negative counts from its end")}

    def forward(self, x):
        self.x_shape = x.shape
        return np.expand_dims(x, tuple(self.axes))

    def output_types(self, x):
        ndim = len(x.shape) + len(self.axes)
        axes = {np.lib.array_utils.normalize_axis_index(a, ndim) for a in self.axes}
        if len(axes) != len(self.axes):
            raise ValueError(f"Unsqueeze axes {list(self.axes)} repeat an axis")
        rest = iter(x.shape)
        return (TensorType(tuple(1 if i in axes else next(rest) for i in range(ndim)), x.dtype),)

    def backward(self, dout):
        return (dout.reshape(self.x_shape),)


class Tile(Layer):
    """x repeated along each axis (numpy.tile); the gradient sums the copies."""

    inputs = ("x",)
    attributes = {"repeats": Attr("ints", doc="copies per axis, one per axis of x")}

    def forward(self, x):
        if len(self.repeats) != x.ndim:
            raise ValueError(f"repeats has {len(self.repeats)} entries for a rank-{x.ndim} x")
        self.x_shape = x.shape
        return np.tile(x, self.repeats)

    def output_types(self, x):
        if len(self.repeats) != len(x.shape):
            raise ValueError(f"repeats has {len(self.repeats)} entries for a rank-{len(x.shape)} x")
        if any(r < 0 for r in self.repeats):
            raise ValueError(f"repeats {list(self.repeats)} must be >= 0")
        return (TensorType(tuple(n * r for n, r in zip(x.shape, self.repeats)), x.dtype),)

    def backward(self, dout):
        split = [n for pair in zip(self.repeats, self.x_shape) for n in pair]
        return (dout.reshape(split).sum(axis=tuple(range(0, 2 * len(self.x_shape), 2))),)


class Cast(Layer):
    """x converted to another dtype; float to float passes the gradient through, to an integer stops it."""

    inputs = ("x",)
    attributes = {"to": Attr("str", doc="a numpy dtype name: float32, float64, float16, int64, int32, bool, ...")}

    def forward(self, x):
        dtype = np.dtype(self.to)
        if dtype.kind not in "biuf":
            raise ValueError(f"cannot cast to {self.to!r}: a number or bool dtype is needed")
        self.x_dtype = x.dtype
        # Only float to float carries a gradient: through an integer or bool the function is piecewise constant.
        self.passes = x.dtype.kind == "f" and dtype.kind == "f"
        return x.astype(dtype)

    def output_types(self, x):
        dtype = np.dtype(self.to)
        if dtype.kind not in "biuf":
            raise ValueError(f"cannot cast to {self.to!r}: a number or bool dtype is needed")
        return (TensorType(x.shape, dtype),)

    def backward(self, dout):
        return (None if dout is None or not self.passes else dout.astype(self.x_dtype),)


class _FromShape(Layer):
    differentiable = ()

    def backward(self, *douts):
        return (None,) * len(self.inputs)


class Shape(_FromShape):
    """x's shape as int64, optionally a slice [start, end) of it (ONNX Shape)."""

    inputs = ("x",)
    attributes = {"start": Attr("int", 0, "the first axis"), "end": Attr("int", None, "the end axis; unset: all")}

    def forward(self, x):
        return np.array(x.shape[slice(self.start, self.end)], dtype=np.int64)

    def output_types(self, x):
        shape = np.array(x.shape[slice(self.start, self.end)], dtype=np.int64)
        return (TensorType(shape.shape, shape.dtype, shape),)  # known from shapes alone: ConstantOfShape reads it


class Size(_FromShape):
    """x's number of elements, an int64 scalar."""

    inputs = ("x",)

    def forward(self, x):
        return np.array(x.size, dtype=np.int64)

    def output_types(self, x):
        return (TensorType((), np.dtype(np.int64), np.array(math.prod(x.shape), dtype=np.int64)),)


class Range(_FromShape):
    """start, start + delta, ... up to limit (exclusive), in start's dtype (ONNX Range)."""

    inputs = ("start", "limit", "delta")

    shape_from_values = True

    def forward(self, start, limit, delta):
        count = max(int(np.ceil((limit - start) / delta)), 0)
        return (start + delta * np.arange(count)).astype(np.asarray(start).dtype)

    def output_types(self, start, limit, delta):
        if start.value is None or limit.value is None or delta.value is None:
            return None
        with np.errstate(all="ignore"):
            count = (np.asarray(limit.value, np.float64) - start.value) / delta.value
        if not np.isfinite(count).all() or np.size(count) != 1:
            raise ValueError(f"Range needs scalar start, limit and a nonzero delta, got {start.value}, "
                             f"{limit.value}, {delta.value}")
        return (TensorType((max(math.ceil(float(np.reshape(count, -1)[0])), 0),), start.dtype),)


class ConstantOfShape(_FromShape):
    """A tensor of the given shape (an int64 input), every element one value."""

    inputs = ("shape",)
    attributes = {"value": Attr("float", 0.0, "the fill"), "dtype": Attr("str", "float32", "a numpy dtype name")}

    shape_from_values = True

    def forward(self, shape):
        if np.dtype(self.dtype).kind not in "biuf":
            raise ValueError(f"dtype {self.dtype!r} is not a number or bool type")
        return np.full([int(d) for d in np.asarray(shape).reshape(-1)], self.value, dtype=self.dtype)

    def output_types(self, shape):
        dtype = np.dtype(self.dtype)
        if dtype.kind not in "biuf":
            raise ValueError(f"dtype {self.dtype!r} is not a number or bool type")
        if shape.value is None:
            return None
        dims = tuple(int(d) for d in np.asarray(shape.value).reshape(-1))
        if any(d < 0 for d in dims):
            raise ValueError(f"ConstantOfShape takes a shape of lengths >= 0, got {list(dims)}")
        return (TensorType(dims, dtype),)


class EyeLike(_FromShape):
    """A 2-D tensor of x's shape with ones on a diagonal (k above the main one), zeros elsewhere."""

    inputs = ("x",)
    attributes = {"k": Attr("int", 0, "the diagonal: 0 main, > 0 above"),
                  "dtype": Attr("str", None, "a numpy dtype name; unset: x's")}

    def forward(self, x):
        if x.ndim != 2:
            raise ValueError(f"EyeLike takes a 2-D x, got shape {x.shape}")
        return np.eye(x.shape[0], x.shape[1], self.k, dtype=self.dtype or x.dtype)

    def output_types(self, x):
        if len(x.shape) != 2:
            raise ValueError(f"EyeLike takes a 2-D x, got shape {x.shape}")
        return (TensorType(x.shape, np.dtype(self.dtype or x.dtype)),)


class _Rearrange(Layer):
    """Base of the block moves: a reshape, a transpose and a reshape, undone in reverse by backward."""

    inputs = ("x",)

    def forward(self, x):
        if x.ndim != 4:
            raise ValueError(f"{self.name} takes a 4-D (N, C, H, W) x, got shape {x.shape}")
        split, self.perm, out = self.plan(x.shape, self.blocksize)
        moved = x.reshape(split).transpose(self.perm)
        self.moved_shape, self.x_shape = moved.shape, x.shape
        return moved.reshape(out)

    def output_types(self, x):
        if len(x.shape) != 4:
            raise ValueError(f"{self.name} takes a 4-D (N, C, H, W) x, got shape {x.shape}")
        return (TensorType(self.plan(x.shape, self.blocksize)[2], x.dtype),)

    def backward(self, dout):
        return (dout.reshape(self.moved_shape).transpose(np.argsort(self.perm)).reshape(self.x_shape),)


class DepthToSpace(_Rearrange):
    """Channels moved into blocks of space: (N, C, H, W) to (N, C/b², H·b, W·b), DCR or CRD order."""

    attributes = {"blocksize": Attr("int", doc="the block's side b"),
                  "mode": Attr("str", "DCR", "DCR (depth, column, row) or CRD")}

    def plan(self, shape, b):
        n, c, h, w = shape
        if c % (b * b):
            raise ValueError(f"{c} channels do not split into blocks of {b}x{b}")
        if self.mode == "DCR":
            return (n, b, b, c // (b * b), h, w), (0, 3, 4, 1, 5, 2), (n, c // (b * b), h * b, w * b)
        if self.mode == "CRD":
            return (n, c // (b * b), b, b, h, w), (0, 1, 4, 2, 5, 3), (n, c // (b * b), h * b, w * b)
        raise ValueError(f"mode must be DCR or CRD, got {self.mode!r}")


class SpaceToDepth(_Rearrange):
    """Blocks of space moved into channels: (N, C, H, W) to (N, C·b², H/b, W/b), DCR or CRD order."""

    attributes = {"blocksize": Attr("int", doc="the block's side b"),
                  "mode": Attr("str", "DCR", "DCR (the block's offsets before the channel) or CRD (after)")}

    def plan(self, shape, b):
        n, c, h, w = shape
        if h % b or w % b:
            raise ValueError(f"H and W ({h}, {w}) are not multiples of the block size {b}")
        if self.mode not in ("DCR", "CRD"):
            raise ValueError(f"mode must be DCR or CRD, got {self.mode!r}")
        perm = (0, 3, 5, 1, 2, 4) if self.mode == "DCR" else (0, 1, 3, 5, 2, 4)
        return (n, c, h // b, b, w // b, b), perm, (n, c * b * b, h // b, w // b)


class Trilu(Layer):
    """The upper (or lower) triangle of the last two axes, from diagonal k on; the rest zero."""

    inputs = ("x",)
    attributes = {"upper": Attr("bool", True, "keep the upper triangle, else the lower"),
                  "k": Attr("int", 0, "the diagonal: 0 main, > 0 above, < 0 below")}

    def forward(self, x):
        if x.ndim < 2:
            raise ValueError(f"Trilu takes x of rank 2 or more, got shape {x.shape}")
        return self.keep(x)

    def output_types(self, x):
        if len(x.shape) < 2:
            raise ValueError(f"Trilu takes x of rank 2 or more, got shape {x.shape}")
        return (TensorType(x.shape, x.dtype),)

    def keep(self, a):
        return np.triu(a, self.k) if self.upper else np.tril(a, self.k)

    def backward(self, dout):
        return (self.keep(dout),)


class CumSum(Layer):
    """Running sums along an axis, optionally exclusive (shifted by one) and from the end."""

    inputs = ("x",)
    attributes = {"axis": Attr("int", 0, "the axis summed along"),
                  "exclusive": Attr("bool", False, "each sum leaves out its own element"),
                  "reverse": Attr("bool", False, "sum from the end")}

    def run(self, x, reverse):
        axis = _axis(self.axis, x.ndim)
        if reverse:
            x = np.flip(x, axis)
        out = np.cumsum(x, axis=axis, dtype=x.dtype)
        if self.exclusive:
            out = np.concatenate([np.zeros_like(np.take(out, [0], axis=axis)), np.delete(out, -1, axis=axis)],
                                 axis=axis) if x.shape[axis] else out
        return np.flip(out, axis) if reverse else out

    def forward(self, x):
        return self.run(x, self.reverse)

    def output_types(self, x):
        _axis(self.axis, len(x.shape))
        return (TensorType(x.shape or (1,), x.dtype),)  # numpy's cumsum of a 0-d x is 1-d

    def backward(self, dout):
        return (self.run(dout, not self.reverse),)


class TopK(Layer):
    """The k largest (or smallest) elements along an axis and their int64 indices; ties keep the lower index."""

    inputs = ("x",)
    outputs = ("values", "indices")
    attributes = {"k": Attr("int", doc="how many"), "axis": Attr("int", -1, "the axis searched"),
                  "largest": Attr("bool", True, "the largest, else the smallest"),
                  "sorted": Attr("bool", True, "in order (always: the order is the same either way)")}

    def forward(self, x):
        axis = _axis(self.axis, x.ndim)
        if not 0 <= self.k <= x.shape[axis]:
            raise ValueError(f"k={self.k} is outside [0, {x.shape[axis]}] for axis {axis}")
        # A stable sort of the negated values: the largest first, and ties in index order.
        key = (-x if x.dtype.kind in "fi" else -x.astype(np.int64)) if self.largest else x
        order = np.argsort(key, axis=axis, kind="stable")
        self.indices = np.take(order, np.arange(self.k), axis=axis).astype(np.int64)
        self.axis_, self.x_shape = axis, x.shape
        return np.take_along_axis(x, self.indices, axis=axis), self.indices

    def output_types(self, x):
        axis = _axis(self.axis, len(x.shape))
        if not 0 <= self.k <= x.shape[axis]:
            raise ValueError(f"k={self.k} is outside [0, {x.shape[axis]}] for axis {axis}")
        shape = tuple(self.k if i == axis else n for i, n in enumerate(x.shape))
        return TensorType(shape, x.dtype), TensorType(shape, np.dtype(np.int64))

    def backward(self, dvalues, dindices):
        if dvalues is None:
            return (None,)
        dx = np.zeros(self.x_shape, dtype=dvalues.dtype)
        np.put_along_axis(dx, self.indices, dvalues, axis=self.axis_)
        return (dx,)


class Hardmax(Layer):
    """1 at the first largest element along an axis, 0 elsewhere (zero gradient)."""

    inputs = ("x",)
    attributes = {"axis": Attr("int", -1, "the axis searched")}

    def forward(self, x):
        axis = _axis(self.axis, x.ndim)
        out = np.zeros_like(x)
        np.put_along_axis(out, np.expand_dims(np.argmax(x, axis=axis), axis), 1, axis=axis)
        return out

    def output_types(self, x):
        _axis(self.axis, len(x.shape))
        return (TensorType(x.shape, x.dtype),)

    def backward(self, dout):
        return (np.zeros_like(dout),)


class OneHot(Layer):
    """values[1] where an index names the position along a new axis, values[0] elsewhere (ONNX OneHot)."""

    inputs = ("indices", "depth", "values")
    differentiable = ("values",)
    attributes = {"axis": Attr("int", -1, "where the new axis goes; negative counts from the result's end")}

    def forward(self, indices, depth, values):
        depth = int(np.asarray(depth).reshape(-1)[0])
        indices = np.asarray(indices).astype(np.int64)
        indices = np.where(indices < 0, indices + depth, indices)
        axis = _axis(self.axis, indices.ndim + 1)
        hot = np.moveaxis(indices[..., np.newaxis] == np.arange(depth), -1, axis)
        self.hot = hot
        return np.where(hot, values[1], values[0])

    shape_from_values = True

    def output_types(self, indices, depth, values):
        if depth.value is None:
            return None
        depth_ = int(np.asarray(depth.value).reshape(-1)[0])
        if depth_ < 0:
            raise ValueError(f"OneHot depth must be >= 0, got {depth_}")
        ndim = len(indices.shape) + 1
        axis = _axis(self.axis, ndim)
        if not values.shape or values.shape[0] < 2:
            raise ValueError(f"OneHot takes values [off, on], got shape {values.shape}")
        shape = tuple(indices.shape[:axis]) + (depth_,) + tuple(indices.shape[axis:])
        return (TensorType(np.broadcast_shapes(shape, tuple(values.shape[1:])), values.dtype),)

    def backward(self, dout):
        on = np.sum(dout * self.hot)
        return None, None, np.array([np.sum(dout) - on, on], dtype=dout.dtype)


def _index_check(indices, n: int, what: str = "indices") -> np.ndarray:
    """Indices along an axis of length n, negative ones counted from the end; out-of-range ones refused."""
    indices = np.asarray(indices).astype(np.int64)
    if indices.size and (indices.min() < -n or indices.max() >= n):
        raise ValueError(f"{what} outside [-{n}, {n - 1}]")
    return np.where(indices < 0, indices + n, indices)


class GatherND(Layer):
    """Slices of data picked by index tuples, the last axis of indices (ONNX GatherND, with batch_dims)."""

    inputs = ("data", "indices")
    differentiable = ("data",)
    attributes = {"batch_dims": Attr("int", 0, "leading axes shared by data and indices")}

    def forward(self, data, indices):
        b, k = self.batch_dims, indices.shape[-1]
        if k > data.ndim - b:
            raise ValueError(f"index tuples of length {k} for data of rank {data.ndim} with {b} batch axes")
        batch = data.shape[:b]
        count = int(np.prod(batch, dtype=np.int64))
        lead = [np.repeat(np.arange(count), int(np.prod(indices.shape[b:-1], dtype=np.int64)))]
        flat = indices.reshape(-1, k)
        columns = [_index_check(flat[:, j], data.shape[b + j]) for j in range(k)]
        self.where = tuple(lead + columns)
        self.shape = data.shape
        picked = data.reshape((count,) + data.shape[b:])[self.where]
        return picked.reshape(indices.shape[:-1] + data.shape[b + k:])

    def output_types(self, data, indices):
        b = self.batch_dims
        if not indices.shape:
            raise ValueError("GatherND takes indices with a last axis of index tuples")
        k = indices.shape[-1]
        if k > len(data.shape) - b:
            raise ValueError(f"index tuples of length {k} for data of rank {len(data.shape)} with {b} batch axes")
        return (TensorType(tuple(indices.shape[:-1]) + tuple(data.shape[b + k:]), data.dtype),)

    def backward(self, dout):
        count = int(np.prod(self.shape[:self.batch_dims], dtype=np.int64))
        dx = np.zeros((count,) + self.shape[self.batch_dims:], dtype=dout.dtype)
        k = len(self.where) - 1
        np.add.at(dx, self.where, dout.reshape((-1,) + self.shape[self.batch_dims + k:]))
        return dx.reshape(self.shape), None


class _Scatter(Layer):
    """Base of the scatters: updates written into a copy of data at positions ``self.where``."""

    inputs = ("data", "indices", "updates")
    differentiable = ("data", "updates")

    def output_types(self, data, indices, updates):
        return (TensorType(data.shape, data.dtype),)  # a copy of data, updated in place

    def scatter(self, data, updates):
        if self.reduction not in ("none", "add"):
            raise ValueError(f"reduction {self.reduction!r} is not supported (none or add, which have gradients)")
        out = np.array(data, copy=True)
        if self.reduction == "none":
            out[self.where] = updates
        else:
            np.add.at(out, self.where, updates)
        self.shape, self.updates_shape = data.shape, updates.shape
        return out

    def backward(self, dout):
        ddata = np.array(dout, copy=True)
        if self.reduction == "none":
            ddata[self.where] = 0  # overwritten elements do not reach the output
        return ddata, None, dout[self.where].reshape(self.updates_shape)


class ScatterElements(_Scatter):
    """data with updates written at positions given along an axis by an index tensor (ONNX ScatterElements)."""

    attributes = {"axis": Attr("int", 0, "the axis indexed"),
                  "reduction": Attr("str", "none", "none (overwrite) or add")}

    def forward(self, data, indices, updates):
        axis = _axis(self.axis, data.ndim)
        where = list(np.indices(indices.shape, sparse=True))
        where[axis] = _index_check(indices, data.shape[axis])
        self.where = tuple(np.broadcast_arrays(*where))
        return self.scatter(data, updates)


class ScatterND(_Scatter):
    """data with updates written at the index tuples of the last axis of indices (ONNX ScatterND)."""

    attributes = {"reduction": Attr("str", "none", "none (overwrite) or add")}

    def forward(self, data, indices, updates):
        k = indices.shape[-1]
        self.where = tuple(_index_check(indices[..., j], data.shape[j]) for j in range(k))
        return self.scatter(data, updates)


class Compress(Layer):
    """The slices of x along an axis (of x flattened, when unset) where condition is true."""

    inputs = ("x", "condition")
    differentiable = ("x",)
    attributes = {"axis": Attr("int", None, "the axis selected along; unset: x flattened")}

    def forward(self, x, condition):
        self.x_shape = x.shape
        self.keep = np.nonzero(np.asarray(condition).astype(bool).reshape(-1))[0]
        self.axis_ = None if self.axis is None else _axis(self.axis, x.ndim)
        source = x.reshape(-1) if self.axis_ is None else x
        return np.take(source, self.keep, axis=0 if self.axis_ is None else self.axis_)

    shape_from_values = True

    def output_types(self, x, condition):
        axis = None if self.axis is None else _axis(self.axis, len(x.shape))
        if condition.value is None:
            return None
        kept = int(np.count_nonzero(np.asarray(condition.value).astype(bool)))
        return (TensorType((kept,) if axis is None else
                           tuple(kept if i == axis else n for i, n in enumerate(x.shape)), x.dtype),)

    def backward(self, dout):
        if self.axis_ is None:
            dx = np.zeros(int(np.prod(self.x_shape, dtype=np.int64)), dtype=dout.dtype)
            dx[self.keep] = dout
            return dx.reshape(self.x_shape), None
        dx = np.zeros(self.x_shape, dtype=dout.dtype)
        index = [slice(None)] * len(self.x_shape)
        index[self.axis_] = self.keep
        dx[tuple(index)] = dout
        return dx, None


class NonZero(_FromShape):
    """The indices (int64, one row per axis) of x's non-zero elements."""

    inputs = ("x",)

    shape_from_values = True

    def forward(self, x):
        return np.array(np.nonzero(x), dtype=np.int64).reshape(x.ndim, -1)

    def output_types(self, x):
        if x.value is None:  # at most x's rank times its size: bounded by what x already holds
            return None
        return (TensorType((len(x.shape), int(np.count_nonzero(x.value))), np.dtype(np.int64)),)


class ReverseSequence(Layer):
    """Each batch entry's first sequence_lens[i] steps reversed along the time axis, the rest kept."""

    inputs = ("x", "sequence_lens")
    differentiable = ("x",)
    attributes = {"batch_axis": Attr("int", 1, "the batch axis (0 or 1)"),
                  "time_axis": Attr("int", 0, "the time axis (1 or 0)")}

    def run(self, x):
        out = np.array(x, copy=True)
        for i, length in enumerate(self.lens):
            index = [slice(None)] * x.ndim
            index[self.batch_axis] = i
            index[self.time_axis] = slice(0, int(length))
            source = list(index)
            source[self.time_axis] = slice(int(length) - 1, None, -1) if length > 0 else slice(0, 0)
            out[tuple(index)] = x[tuple(source)]
        return out

    def forward(self, x, sequence_lens):
        if sorted((self.batch_axis, self.time_axis)) != [0, 1]:
            raise ValueError("batch_axis and time_axis must be 0 and 1, one each")
        self.lens = np.asarray(sequence_lens).reshape(-1)
        if len(self.lens) != x.shape[self.batch_axis] or (self.lens > x.shape[self.time_axis]).any():
            raise ValueError(f"sequence_lens {self.lens.tolist()} does not fit x of shape {x.shape}")
        return self.run(x)

    def output_types(self, x, sequence_lens):
        if sorted((self.batch_axis, self.time_axis)) != [0, 1]:
            raise ValueError("batch_axis and time_axis must be 0 and 1, one each")
        return (TensorType(x.shape, x.dtype),)

    def backward(self, dout):
        return self.run(dout), None  # reversing is its own inverse


LAYERS = (Concat, Slice, Gather, GatherElements, Expand, Pad, Squeeze, Unsqueeze, Tile, Cast, Shape, Size, Range,
          ConstantOfShape, EyeLike, DepthToSpace, SpaceToDepth, Trilu, CumSum, TopK, Hardmax, OneHot, GatherND,
          ScatterElements, ScatterND, Compress, NonZero, ReverseSequence)
