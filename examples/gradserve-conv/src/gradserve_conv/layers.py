"""The book's Convolution and (max) Pooling layers as gradserve layers, computed with im2col/col2im."""

from __future__ import annotations

import numpy as np

from gradserve.plugins import Attr, Layer, TensorType
from gradserve_conv.im2col import col2im, im2col, output_size

_STRIDE = Attr("int", 1, "step between window positions, in pixels")


def _check_image(layer: str, x) -> None:
    if len(x.shape) != 4:
        raise ValueError(f"{layer} takes x of shape (N, C, H, W), got shape {x.shape}")


def _check_window(layer: str, x_shape, window: tuple[int, int], stride: int, pad: int) -> tuple[int, int]:
    """(out_h, out_w), or a ValueError saying which setting does not fit the image."""
    if stride < 1 or pad < 0:
        raise ValueError(f"{layer} needs stride >= 1 and pad >= 0, got stride={stride}, pad={pad}")
    out_h = output_size(x_shape[2], window[0], stride, pad)
    out_w = output_size(x_shape[3], window[1], stride, pad)
    if out_h < 1 or out_w < 1:
        raise ValueError(f"a {window[0]}x{window[1]} window does not fit images of {x_shape[2]}x{x_shape[3]} "
                         f"with pad={pad}; pad more or use a smaller window")
    return out_h, out_w


class Convolution(Layer):
    """2-D convolution: filters W (FN, C, FH, FW) over images x (N, C, H, W), plus a bias b (FN,) per filter."""

    inputs = ("x", "W", "b")
    attributes = {
        "stride": _STRIDE,
        "pad": Attr("int", 0, "zeros added on each side of every image"),
    }

    def output_types(self, x, W, b):
        out_h, out_w = self._check(x, W, b)
        return (TensorType((x.shape[0], W.shape[0], out_h, out_w), np.result_type(x.dtype, W.dtype, b.dtype)),)

    def _check(self, x, W, b) -> tuple[int, int]:
        """(out_h, out_w) for inputs of these shapes (arrays or TensorTypes), or a ValueError."""
        _check_image("Convolution", x)
        if len(W.shape) != 4 or W.shape[1] != x.shape[1]:
            raise ValueError(f"Convolution takes W of shape (FN, C={x.shape[1]}, FH, FW) for x of shape {x.shape}, "
                             f"got {W.shape}")
        if tuple(b.shape) != (W.shape[0],):
            raise ValueError(f"Convolution takes b of shape ({W.shape[0]},), one per filter, got {b.shape}")
        return _check_window("Convolution", x.shape, W.shape[2:], self.stride, self.pad)

    def forward(self, x, W, b):
        out_h, out_w = self._check(x, W, b)
        n_filters, _, filter_h, filter_w = W.shape
        self.x_shape = x.shape
        self.W_shape = W.shape
        self.col = im2col(x, filter_h, filter_w, self.stride, self.pad)
        self.col_W = W.reshape(n_filters, -1).T
        out = self.col @ self.col_W + b
        return out.reshape(x.shape[0], out_h, out_w, n_filters).transpose(0, 3, 1, 2)

    def backward(self, dout):
        n_filters, channels, filter_h, filter_w = self.W_shape
        dout = dout.transpose(0, 2, 3, 1).reshape(-1, n_filters)
        db = dout.sum(axis=0)
        dW = (self.col.T @ dout).T.reshape(n_filters, channels, filter_h, filter_w)
        # The engine says when x is data (the images), not a parameter: then col2im's work is skipped.
        needs = self.needs_input_grad
        if needs is not None and not needs[0]:
            return None, dW, db
        dx = col2im(dout @ self.col_W.T, self.x_shape, filter_h, filter_w, self.stride, self.pad)
        return dx, dW, db


class Pooling(Layer):
    """Max pooling of images x (N, C, H, W) over pool_h x pool_w windows, channel by channel."""

    inputs = ("x",)
    attributes = {
        "pool_h": Attr("int", doc="window height"),
        "pool_w": Attr("int", doc="window width"),
        "stride": _STRIDE,
        "pad": Attr("int", 0, "padding on each side; smaller than the window, and it never wins the max"),
    }

    def output_types(self, x):
        out_h, out_w = self._check(x)
        return (TensorType((x.shape[0], x.shape[1], out_h, out_w), x.dtype),)

    def _check(self, x) -> tuple[int, int]:
        """(out_h, out_w) for an x of this shape and dtype (an array or a TensorType), or a ValueError."""
        _check_image("Pooling", x)
        if x.dtype.kind != "f":
            raise ValueError(f"Pooling takes floating-point x, got {x.dtype}")
        if not 0 <= self.pad < min(self.pool_h, self.pool_w):
            raise ValueError(f"Pooling needs 0 <= pad < the window size so every window covers the image, "
                             f"got pad={self.pad} for a {self.pool_h}x{self.pool_w} window")
        return _check_window("Pooling", x.shape, (self.pool_h, self.pool_w), self.stride, self.pad)

    def forward(self, x):
        out_h, out_w = self._check(x)
        self.x_shape = x.shape
        # -inf padding, unlike the book's zeros: a padded pixel must never be the maximum of a window.
        col = im2col(x, self.pool_h, self.pool_w, self.stride, self.pad, pad_value=-np.inf)
        col = col.reshape(-1, self.pool_h * self.pool_w)
        self.arg_max = col.argmax(axis=1)
        out = col[np.arange(col.shape[0]), self.arg_max]
        return out.reshape(x.shape[0], out_h, out_w, x.shape[1]).transpose(0, 3, 1, 2)

    def backward(self, dout):
        dout = dout.transpose(0, 2, 3, 1)
        dmax = np.zeros((dout.size, self.pool_h * self.pool_w), dtype=dout.dtype)
        dmax[np.arange(self.arg_max.size), self.arg_max] = dout.reshape(-1)
        dcol = dmax.reshape(dout.shape[0] * dout.shape[1] * dout.shape[2], -1)
        return (col2im(dcol, self.x_shape, self.pool_h, self.pool_w, self.stride, self.pad),)
