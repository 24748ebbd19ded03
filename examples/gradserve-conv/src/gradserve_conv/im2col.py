"""im2col and col2im: image windows as matrix rows and back, so convolution and pooling become matrix products."""

from __future__ import annotations

import numpy as np


def output_size(size: int, filter_size: int, stride: int, pad: int) -> int:
    """How many filter positions fit along one axis of length ``size``."""
    return (size + 2 * pad - filter_size) // stride + 1


def im2col(x: np.ndarray, filter_h: int, filter_w: int, stride: int = 1, pad: int = 0,
           pad_value: float = 0.0) -> np.ndarray:
    """Rows of (N * out_h * out_w) windows, each C * filter_h * filter_w long, in x's dtype."""
    n, c, h, w = x.shape
    out_h = output_size(h, filter_h, stride, pad)
    out_w = output_size(w, filter_w, stride, pad)
    img = np.pad(x, [(0, 0), (0, 0), (pad, pad), (pad, pad)], constant_values=pad_value)
    col = np.empty((n, c, filter_h, filter_w, out_h, out_w), dtype=x.dtype)
    for y in range(filter_h):
        y_max = y + stride * out_h
        for x_ in range(filter_w):
            x_max = x_ + stride * out_w
            col[:, :, y, x_, :, :] = img[:, :, y:y_max:stride, x_:x_max:stride]
    return col.transpose(0, 4, 5, 1, 2, 3).reshape(n * out_h * out_w, -1)


def col2im(col: np.ndarray, input_shape: tuple[int, ...], filter_h: int, filter_w: int, stride: int = 1,
           pad: int = 0) -> np.ndarray:
    """The inverse gather of im2col: sums each row's entries back onto the pixels they came from."""
    n, c, h, w = input_shape
    out_h = output_size(h, filter_h, stride, pad)
    out_w = output_size(w, filter_w, stride, pad)
    col = col.reshape(n, out_h, out_w, c, filter_h, filter_w).transpose(0, 3, 4, 5, 1, 2)
    # stride - 1 spare rows and columns let the strided slices below run past the padded edge.
    img = np.zeros((n, c, h + 2 * pad + stride - 1, w + 2 * pad + stride - 1), dtype=col.dtype)
    for y in range(filter_h):
        y_max = y + stride * out_h
        for x_ in range(filter_w):
            x_max = x_ + stride * out_w
            img[:, :, y:y_max:stride, x_:x_max:stride] += col[:, :, y, x_, :, :]
    return img[:, :, pad:h + pad, pad:w + pad]
