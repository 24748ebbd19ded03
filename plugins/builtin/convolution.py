"""Convolution and pooling over N-D images (N, C, *spatial), with ONNX's Conv/MaxPool/AveragePool attributes.

Convolution copies each kernel offset's strided slice of the padded image into a column buffer (im2col, one
slice copy per offset, not per pixel) and multiplies it with the filters in one batched BLAS GEMM per group;
backward runs the same GEMMs transposed and adds the column gradients back slice by slice (col2im).
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from gradserve.plugins import Attr, Layer, TensorType

_KERNEL = Attr("ints", None, "the window's size per spatial axis; unset: W's spatial shape")
_STRIDES = Attr("ints", None, "step between windows per spatial axis; unset: 1 each")
_PADS = Attr("ints", None, "ONNX order [begin per axis..., end per axis...]; unset: 0 each")
_DILATIONS = Attr("ints", None, "spacing between window taps per spatial axis; unset: 1 each")
_AUTO_PAD = Attr("str", "NOTSET", "NOTSET (use pads), VALID (no padding), SAME_UPPER or SAME_LOWER")


class Window:
    """The geometry of a sliding window over the spatial axes: pads, output size and the slice per offset."""

    def __init__(self, layer: str, spatial: tuple[int, ...], kernel, strides, pads, dilations, auto_pad: str,
                 ceil_mode: bool = False):
        rank = len(spatial)
        self.kernel = _per_axis(layer, "kernel_shape", kernel, rank, None)
        self.strides = _per_axis(layer, "strides", strides, rank, 1)
        self.dilations = _per_axis(layer, "dilations", dilations, rank, 1)
        if min(self.kernel) < 1 or min(self.strides) < 1 or min(self.dilations) < 1:
            raise ValueError(f"{layer} needs kernel_shape, strides and dilations >= 1, got kernel_shape="
                             f"{list(self.kernel)}, strides={list(self.strides)}, dilations={list(self.dilations)}")
        extent = tuple((k - 1) * d + 1 for k, d in zip(self.kernel, self.dilations))
        if auto_pad in ("SAME_UPPER", "SAME_LOWER", "VALID"):
            if pads is not None and any(pads):
                raise ValueError(f"{layer} takes pads or auto_pad={auto_pad}, not both")
            if auto_pad == "VALID":
                begin = end = (0,) * rank
            else:
                out = tuple(-(-n // s) for n, s in zip(spatial, self.strides))
                total = tuple(max((o - 1) * s + e - n, 0) for o, s, e, n in zip(out, self.strides, extent, spatial))
                small = tuple(t // 2 for t in total)
                big = tuple(t - t // 2 for t in total)
                begin, end = (small, big) if auto_pad == "SAME_UPPER" else (big, small)
        elif auto_pad == "NOTSET":
            both = _per_axis(layer, "pads", pads, 2 * rank, 0)
            begin, end = both[:rank], both[rank:]
            if min(both) < 0:
                raise ValueError(f"{layer} needs pads >= 0, got {list(both)}")
        else:
            raise ValueError(f"{layer} auto_pad must be NOTSET, VALID, SAME_UPPER or SAME_LOWER, got {auto_pad!r}")
        out = []
        for n, b, e, k, s in zip(spatial, begin, end, extent, self.strides):
            room = n + b + e - k
            if room < 0:
                raise ValueError(f"{layer}: a window spanning {list(extent)} does not fit the image {list(spatial)} "
                                 f"padded by {list(begin)}+{list(end)}; pad more or use a smaller window")
            o = (-(-room // s) if ceil_mode else room // s) + 1
            if ceil_mode and (o - 1) * s >= n + b:  # the last window would start in the end padding (torch, ONNX)
                o -= 1
            out.append(o)
        self.spatial = tuple(spatial)
        self.begin, self.end = tuple(begin), tuple(end)
        self.out = tuple(out)
        # ceil_mode's last windows may run past the end padding: pad that far too, and count it out.
        self.extra = tuple(max((o - 1) * s + k - (n + b + e), 0)
                           for o, s, k, n, b, e in zip(out, self.strides, extent, spatial, begin, end))

    @property
    def offsets(self):
        """Every tap of the kernel as an index tuple, in C order (the order of W's spatial axes)."""
        return itertools.product(*(range(k) for k in self.kernel))

    def taps(self, offset) -> tuple[slice, ...]:
        """The slice of the padded image that the tap ``offset`` reads, for every window at once."""
        return tuple(slice(i * d, i * d + s * (o - 1) + 1, s)
                     for i, d, s, o in zip(offset, self.dilations, self.strides, self.out))

    def pad(self, x: np.ndarray, value=0) -> np.ndarray:
        widths = [(0, 0), (0, 0)] + [(b, e + x_) for b, e, x_ in zip(self.begin, self.end, self.extra)]
        if not any(b or e for b, e in widths):
            return x
        return np.pad(x, widths, constant_values=value)

    def padded_shape(self, batch: int, channels: int) -> tuple[int, ...]:
        return (batch, channels) + tuple(n + b + e + x_ for n, b, e, x_ in
                                         zip(self.spatial, self.begin, self.end, self.extra))

    def crop(self, padded: np.ndarray) -> np.ndarray:
        return padded[(slice(None), slice(None)) + tuple(slice(b, b + n) for b, n in zip(self.begin, self.spatial))]


def _per_axis(layer: str, name: str, value, rank: int, default) -> tuple[int, ...]:
    if value is None:
        if default is None:
            raise ValueError(f"{layer} needs {name}")
        return (default,) * rank
    if len(value) != rank:
        raise ValueError(f"{layer} {name} has {len(value)} values, expected {rank} for this input")
    return tuple(int(v) for v in value)


def _check_image(layer: str, x) -> None:
    if len(x.shape) < 3:
        raise ValueError(f"{layer} takes x of shape (N, C, *spatial) with at least one spatial axis, "
                         f"got shape {x.shape}")


class Convolution(Layer):
    """N-D convolution of x (N, C, *spatial) with filters W (M, C/group, *kernel) plus a bias b (M,) (ONNX Conv).

    Attributes as ONNX Conv: kernel_shape, strides, pads ([begins..., ends...]), dilations, group, auto_pad.
    The book's Convolution(W, b, stride, pad) is strides=[stride]*2, pads=[pad]*4.
    """

    inputs = ("x", "W", "b")
    attributes = {
        "kernel_shape": _KERNEL,
        "strides": _STRIDES,
        "pads": _PADS,
        "dilations": _DILATIONS,
        "group": Attr("int", 1, "number of channel groups: each filter sees C/group channels"),
        "auto_pad": _AUTO_PAD,
    }

    def output_types(self, x, W, b):
        win = self._window(x, W, b)
        return (TensorType((x.shape[0], W.shape[0]) + win.out, np.result_type(x.dtype, W.dtype)),)

    def _window(self, x, W, b) -> Window:
        """The window geometry for inputs of these shapes (arrays or TensorTypes), or a ValueError."""
        _check_image("Convolution", x)
        if x.dtype.kind != "f":
            raise ValueError(f"Convolution takes floating-point x, got {x.dtype}")
        n, c = x.shape[:2]
        g = self.group
        if g < 1 or c % g or len(W.shape) != len(x.shape) or W.shape[0] % g or W.shape[1] * g != c:
            raise ValueError(f"Convolution takes W of shape (M, C/group={c}/{g}, *kernel) with M divisible by "
                             f"group={g} for x of shape {x.shape}, got W of shape {W.shape}")
        if tuple(b.shape) != (W.shape[0],):
            raise ValueError(f"Convolution takes b of shape ({W.shape[0]},), one per filter, got {b.shape}")
        if self.kernel_shape is not None and tuple(self.kernel_shape) != tuple(W.shape[2:]):
            raise ValueError(f"Convolution kernel_shape {list(self.kernel_shape)} differs from W's {list(W.shape[2:])}")
        return Window("Convolution", x.shape[2:], W.shape[2:], self.strides, self.pads, self.dilations, self.auto_pad)

    def forward(self, x, W, b):
        win = self._window(x, W, b)
        n, c = x.shape[:2]
        g = self.group
        self.win, self.x_shape, self.W_shape = win, x.shape, W.shape
        # Channels first, (C, N, *spatial): then every column buffer and gradient is one 2-D GEMM operand.
        # (numpy's batched matmul over (N, ...) stacks measured 5x slower than one GEMM of the same size.)
        xp = win.pad(np.moveaxis(x, 1, 0))
        col = np.empty((c,) + win.kernel + (n,) + win.out, dtype=x.dtype)
        head = (slice(None), slice(None))
        for offset in win.offsets:
            col[(slice(None),) + offset] = xp[head + win.taps(offset)]
        self.col = col.reshape(g, (c // g) * math.prod(win.kernel), n * math.prod(win.out))
        self.W_mat = W.reshape(g, W.shape[0] // g, -1)
        out = np.empty((g, W.shape[0] // g, self.col.shape[2]), dtype=np.result_type(x, W))
        for k in range(g):
            np.matmul(self.W_mat[k], self.col[k], out=out[k])
        out = out.reshape((W.shape[0], n) + win.out)
        out += b.reshape((-1,) + (1,) * (len(win.out) + 1))
        return np.ascontiguousarray(np.moveaxis(out, 0, 1))

    def backward(self, dout):
        needs = self.needs_input_grad or (True, True, True)
        n, m = dout.shape[:2]
        g = self.group
        db = dout.sum(axis=tuple(i for i in range(dout.ndim) if i != 1)) if needs[2] else None
        # (M, N * positions), grouped: the layout forward's GEMM produced.
        d = np.ascontiguousarray(np.moveaxis(dout, 1, 0)).reshape(g, m // g, -1)
        dW = None
        if needs[1]:
            # col @ d.T, then transposed: OpenBLAS ran d @ col.T (a long inner dimension, 64 output rows) 3x slower.
            dW = np.stack([(self.col[k] @ d[k].T).T for k in range(g)]).reshape(self.W_shape)
        dx = None
        if needs[0]:
            win = self.win
            c = self.x_shape[1]
            dcol = np.empty(self.col.shape, dtype=dout.dtype)
            for k in range(g):
                np.matmul(self.W_mat[k].T, d[k], out=dcol[k])
            dcol = dcol.reshape((c,) + win.kernel + (n,) + win.out)
            dxp = np.zeros(win.padded_shape(c, n), dtype=dout.dtype)
            head = (slice(None), slice(None))
            for offset in win.offsets:
                dxp[head + win.taps(offset)] += dcol[(slice(None),) + offset]
            dx = np.ascontiguousarray(np.moveaxis(win.crop(dxp), 0, 1))
        return dx, dW, db


class Pooling(Layer):
    """Max or average pooling of x (N, C, *spatial), channel by channel (ONNX MaxPool and AveragePool).

    mode="max" or "average"; attributes as ONNX: kernel_shape, strides, pads, dilations, auto_pad, ceil_mode,
    count_include_pad (average only). Padding never wins a max. The book's Pooling(pool_h, pool_w, stride, pad)
    is mode="max", kernel_shape=[pool_h, pool_w], strides=[stride]*2, pads=[pad]*4.
    """

    inputs = ("x",)
    attributes = {
        "mode": Attr("str", "max", "max (MaxPool) or average (AveragePool)"),
        "kernel_shape": Attr("ints", doc="the window's size per spatial axis"),
        "strides": _STRIDES,
        "pads": _PADS,
        "dilations": _DILATIONS,
        "auto_pad": _AUTO_PAD,
        "ceil_mode": Attr("bool", False, "round the output size up, so the last partial windows count"),
        "count_include_pad": Attr("bool", False, "average: divide by the whole window, padding included"),
    }

    def output_types(self, x):
        win = self._window(x)
        return (TensorType(tuple(x.shape[:2]) + win.out, x.dtype),)

    def _window(self, x) -> Window:
        """The window geometry for an x of this shape and dtype (an array or a TensorType), or a ValueError."""
        _check_image("Pooling", x)
        if self.mode not in ("max", "average"):
            raise ValueError(f"Pooling mode must be 'max' or 'average', got {self.mode!r}")
        if self.mode == "average" and x.dtype.kind != "f":
            raise ValueError(f"average Pooling takes floating-point x, got {x.dtype}")
        if x.dtype.kind not in "fiu":
            raise ValueError(f"Pooling takes numbers, got {x.dtype}")
        win = Window("Pooling", x.shape[2:], self.kernel_shape, self.strides, self.pads, self.dilations,
                     self.auto_pad, self.ceil_mode)
        extent = [(k - 1) * d + 1 for k, d in zip(win.kernel, win.dilations)]
        if self.mode == "max" and any(p >= e for p, e in zip(win.begin + win.end, extent + extent)):
            raise ValueError(f"max Pooling needs pads smaller than the window ({extent}) so every window covers "
                             f"the image, got pads {list(win.begin + win.end)}")
        return win

    def forward(self, x):
        win = self._window(x)
        self.win, self.x_shape = win, x.shape
        head = (slice(None), slice(None))
        if self.mode == "max":
            lowest = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
            xp = win.pad(x, lowest)
            out = None
            self.arg = np.zeros(x.shape[:2] + win.out, dtype=np.intp)
            for k, offset in enumerate(win.offsets):
                tap = xp[head + win.taps(offset)]
                if out is None:
                    out = tap.copy()
                    continue
                better = tap > out  # strictly: ties keep the first tap, as argmax does
                np.copyto(out, tap, where=better)
                np.copyto(self.arg, k, where=better)
            return out
        xp = win.pad(x, 0)
        out = np.zeros(x.shape[:2] + win.out, dtype=x.dtype)
        for offset in win.offsets:
            out += xp[head + win.taps(offset)]
        self.divisor = self._divisor(x.dtype)
        out /= self.divisor
        return out

    def _divisor(self, dtype) -> np.ndarray:
        """How many taps of each window count: all inside the (explicitly) padded image, or only the image's."""
        win = self.win
        counts = []
        for axis, (n, b, e, o, s, k, d) in enumerate(zip(win.spatial, win.begin, win.end, win.out, win.strides,
                                                         win.kernel, win.dilations)):
            starts = np.arange(o) * s  # in padded coordinates
            taps = starts[:, None] + np.arange(k)[None, :] * d
            lo, hi = (0, n + b + e) if self.count_include_pad else (b, b + n)
            counts.append(((taps >= lo) & (taps < hi)).sum(axis=1))
        total = counts[0]
        for c in counts[1:]:
            total = np.multiply.outer(total, c)
        return np.maximum(total, 1).astype(dtype)

    def backward(self, dout):
        win = self.win
        n, c = self.x_shape[:2]
        head = (slice(None), slice(None))
        dxp = np.zeros(win.padded_shape(n, c), dtype=dout.dtype)
        if self.mode == "max":
            zero = np.zeros((), dtype=dout.dtype)
            for k, offset in enumerate(win.offsets):
                dxp[head + win.taps(offset)] += np.where(self.arg == k, dout, zero)
        else:
            share = dout / self.divisor
            for offset in win.offsets:
                dxp[head + win.taps(offset)] += share
        return (np.ascontiguousarray(win.crop(dxp)),)


class _GlobalPool(Layer):
    inputs = ("x",)

    def output_types(self, x):
        _check_image(self.name, x)
        if self.name == "GlobalAveragePool" and x.dtype.kind != "f":
            raise ValueError(f"GlobalAveragePool takes floating-point x, got {x.dtype}")
        return (TensorType(tuple(x.shape[:2]) + (1,) * (len(x.shape) - 2), x.dtype),)

    def forward(self, x):
        _check_image(self.name, x)
        self.x_shape = x.shape
        self.axes = tuple(range(2, x.ndim))
        return self._pool(x)


class GlobalAveragePool(_GlobalPool):
    """The mean of each channel over all spatial axes: (N, C, *spatial) -> (N, C, 1, ...) (ONNX GlobalAveragePool)."""

    def _pool(self, x):
        if x.dtype.kind != "f":
            raise ValueError(f"GlobalAveragePool takes floating-point x, got {x.dtype}")
        return x.mean(axis=self.axes, keepdims=True)

    def backward(self, dout):
        size = math.prod(self.x_shape[2:])
        return (np.broadcast_to(dout / dout.dtype.type(size), self.x_shape).copy(),)


class GlobalMaxPool(_GlobalPool):
    """The max of each channel over all spatial axes: (N, C, *spatial) -> (N, C, 1, ...) (ONNX GlobalMaxPool)."""

    def _pool(self, x):
        flat = x.reshape(x.shape[:2] + (-1,))
        self.arg = flat.argmax(axis=-1)  # the first maximum takes the gradient, as in MaxPool
        return flat.max(axis=-1).reshape(x.shape[:2] + (1,) * len(self.axes))

    def backward(self, dout):
        n, c = self.x_shape[:2]
        dx = np.zeros((n, c, math.prod(self.x_shape[2:])), dtype=dout.dtype)
        np.put_along_axis(dx, self.arg[..., None], dout.reshape(n, c, 1), axis=-1)
        return (dx.reshape(self.x_shape),)


LAYERS = (Convolution, Pooling, GlobalAveragePool, GlobalMaxPool)
