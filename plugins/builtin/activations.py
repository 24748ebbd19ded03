"""Elementwise activation functions and softmax."""

import numpy as np

from gradserve.plugins import Attr, Layer, elementwise_types


class Relu(Layer):
    """Rectified linear unit: max(x, 0)."""

    inputs = ("x",)
    output_types = elementwise_types

    def forward(self, x):
        self.mask = x <= 0
        # maximum, not where(mask, 0, x): where branches per element and is ten times slower on random signs.
        return np.maximum(x, np.zeros((), dtype=x.dtype))

    def backward(self, dout):
        # Unlike the book's Relu, never write into dout: it may be shared.
        return (np.where(self.mask, np.zeros((), dtype=dout.dtype), dout),)


class Sigmoid(Layer):
    """Logistic sigmoid: 1 / (1 + exp(-x))."""

    inputs = ("x",)
    output_types = elementwise_types

    def forward(self, x):
        # exp(-logaddexp(0, -x)) is 1/(1+exp(-x)) without overflow for large -x.
        self.out = np.exp(-np.logaddexp(np.zeros((), dtype=x.dtype), -x))
        return self.out

    def backward(self, dout):
        return (dout * (1.0 - self.out) * self.out,)


class Tanh(Layer):
    """Hyperbolic tangent."""

    inputs = ("x",)
    output_types = elementwise_types

    def forward(self, x):
        self.out = np.tanh(x)
        return self.out

    def backward(self, dout):
        return (dout * (1.0 - self.out * self.out),)


class Exp(Layer):
    """Elementwise exponential."""

    inputs = ("x",)
    output_types = elementwise_types

    def forward(self, x):
        self.out = np.exp(x)
        return self.out

    def backward(self, dout):
        return (dout * self.out,)


class Log(Layer):
    """Elementwise natural logarithm."""

    inputs = ("x",)
    output_types = elementwise_types

    def forward(self, x):
        self.x = x
        return np.log(x)

    def backward(self, dout):
        return (dout / self.x,)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax along ``axis``."""
    shifted = x - x.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=axis, keepdims=True)


class Softmax(Layer):
    """Softmax along an axis (default: the last)."""

    inputs = ("x",)
    output_types = elementwise_types
    attributes = {"axis": Attr("int", -1, "the axis that sums to one")}

    def forward(self, x):
        self.out = softmax(x, self.axis)
        return self.out

    def backward(self, dout):
        y = self.out
        return (y * (dout - (dout * y).sum(axis=self.axis, keepdims=True)),)

LAYERS = (Relu, Sigmoid, Tanh, Exp, Log, Softmax)
