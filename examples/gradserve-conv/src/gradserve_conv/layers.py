"""Maxout (Goodfellow et al., 2013) and the Snake activation (Ziyin et al., 2020) as gradserve layers.

Neither is an ONNX op nor a gradserve built-in: a plugin is how a network gets them.
"""

from __future__ import annotations

import numpy as np

from gradserve.plugins import Attr, Layer, reduce_to_shape


class Maxout(Layer):
    """The max over each group of `pieces` consecutive channels along `axis`: (N, C*pieces, ...) -> (N, C, ...)."""

    inputs = ("x",)
    attributes = {
        "pieces": Attr("int", 2, "how many channels each output channel is the max of"),
        "axis": Attr("int", 1, "the channel axis; negative counts from the end"),
    }

    def forward(self, x):
        if self.pieces < 1:
            raise ValueError(f"Maxout needs pieces >= 1, got {self.pieces}")
        if not -x.ndim <= self.axis < x.ndim:
            raise ValueError(f"Maxout axis {self.axis} is out of range for x of rank {x.ndim}")
        axis = self.axis % x.ndim
        if x.shape[axis] % self.pieces:
            raise ValueError(f"Maxout needs the {x.shape[axis]} channels of axis {self.axis} to divide into "
                             f"groups of pieces={self.pieces}")
        self.x_shape, self.axis_index = x.shape, axis
        # (..., C, pieces, ...): the groups get their own axis right after the channels.
        grouped = x.reshape(x.shape[:axis] + (x.shape[axis] // self.pieces, self.pieces) + x.shape[axis + 1:])
        self.arg = grouped.argmax(axis=axis + 1)  # the first maximum of a group takes the gradient
        return np.take_along_axis(grouped, np.expand_dims(self.arg, axis + 1), axis=axis + 1).squeeze(axis + 1)

    def backward(self, dout):
        axis = self.axis_index
        grouped = np.zeros(dout.shape[:axis + 1] + (self.pieces,) + dout.shape[axis + 1:], dtype=dout.dtype)
        np.put_along_axis(grouped, np.expand_dims(self.arg, axis + 1), np.expand_dims(dout, axis + 1),
                          axis=axis + 1)
        return (grouped.reshape(self.x_shape),)


class Snake(Layer):
    """Snake activation x + sin(alpha * x)**2 / alpha, with a learnable frequency alpha per channel (axis 1).

    alpha is (C,) for x of shape (N, C, ...), or anything that broadcasts against x; keep it away from zero.
    """

    inputs = ("x", "alpha")

    def forward(self, x, alpha):
        if x.ndim < 2:
            raise ValueError(f"Snake takes x of shape (N, C, ...), got shape {x.shape}")
        self.alpha_input_shape = alpha.shape
        if alpha.ndim == 1:
            if alpha.shape[0] != x.shape[1]:
                raise ValueError(f"Snake takes alpha of shape ({x.shape[1]},), one per channel, got {alpha.shape}")
            alpha = alpha.reshape((-1,) + (1,) * (x.ndim - 2))
        self.alpha_shape = alpha.shape
        self.x, self.alpha = x, alpha
        self.sin = np.sin(alpha * x)
        return x + self.sin * self.sin / alpha

    def backward(self, dout):
        x, alpha = self.x, self.alpha
        sin2 = np.sin(2 * alpha * x)  # 2 sin cos: the derivative of sin(alpha x)**2 by (alpha x)
        needs = self.needs_input_grad or (True, True)
        dx = dout * (1 + sin2) if needs[0] else None
        dalpha = None
        if needs[1]:
            dalpha = reduce_to_shape(dout * (x * sin2 / alpha - self.sin * self.sin / (alpha * alpha)),
                                     self.alpha_shape).reshape(self.alpha_input_shape)
        return dx, dalpha
