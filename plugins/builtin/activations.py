"""Elementwise activation functions (Relu ... Gelu, Erf) and softmax / log-softmax on any axis."""

import math

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


_ERF = np.frompyfunc(math.erf, 1, 1)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def erf(x: np.ndarray) -> np.ndarray:
    """The error function, elementwise, in x's float dtype (libm's erf: exact to the last bit in float64)."""
    # numpy has no erf and plugins import numpy and pluggy only; libm's through frompyfunc is ~40 ns an element.
    return np.asarray(_ERF(x), dtype=np.float64).astype(x.dtype, copy=False)


class Erf(Layer):
    """The error function erf(x), elementwise (ONNX Erf)."""

    inputs = ("x",)
    output_types = elementwise_types

    def forward(self, x):
        if x.dtype.kind != "f":
            raise ValueError(f"Erf takes floating-point x, got {x.dtype}")
        self.x = x
        return erf(x)

    def backward(self, dout):
        x = self.x
        return (dout * (x.dtype.type(2.0 / math.sqrt(math.pi)) * np.exp(-x * x)),)


class Gelu(Layer):
    """Gaussian error linear unit x * Phi(x), exact (erf) or its tanh approximation (ONNX Gelu, `approximate`)."""

    inputs = ("x",)
    output_types = elementwise_types
    attributes = {"approximate": Attr("str", "none", "none: x/2 (1 + erf(x/sqrt 2)); tanh: the tanh formula")}

    def forward(self, x):
        if self.approximate not in ("none", "tanh"):
            raise ValueError(f"Gelu approximate must be 'none' or 'tanh', got {self.approximate!r}")
        if x.dtype.kind != "f":
            raise ValueError(f"Gelu takes floating-point x, got {x.dtype}")
        self.x = x
        one, half = x.dtype.type(1.0), x.dtype.type(0.5)
        if self.approximate == "tanh":
            c, a = x.dtype.type(_SQRT_2_OVER_PI), x.dtype.type(0.044715)
            self.t = np.tanh(c * (x + a * x * x * x))
            return half * x * (one + self.t)
        self.cdf = half * (one + erf(x * x.dtype.type(1.0 / math.sqrt(2.0))))
        return x * self.cdf

    def backward(self, dout):
        x = self.x
        if self.approximate == "tanh":
            c, a = x.dtype.type(_SQRT_2_OVER_PI), x.dtype.type(0.044715)
            one, half = x.dtype.type(1.0), x.dtype.type(0.5)
            inner = c * (one + x.dtype.type(3.0) * a * x * x)
            return (dout * (half * (one + self.t) + half * x * (one - self.t * self.t) * inner),)
        pdf = np.exp(x.dtype.type(-0.5) * x * x) * x.dtype.type(1.0 / math.sqrt(2.0 * math.pi))
        return (dout * (self.cdf + x * pdf),)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax along ``axis``."""
    shifted = x - x.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=axis, keepdims=True)


class Softmax(Layer):
    """Softmax along any one axis (default: the last, as ONNX Softmax from opset 13)."""

    inputs = ("x",)
    output_types = elementwise_types
    attributes = {"axis": Attr("int", -1, "the axis that sums to one")}

    def forward(self, x):
        self.out = softmax(x, self.axis)
        return self.out

    def backward(self, dout):
        y = self.out
        return (y * (dout - (dout * y).sum(axis=self.axis, keepdims=True)),)


class LogSoftmax(Layer):
    """log(softmax(x)) along any one axis (default: the last), computed without forming softmax's zeros."""

    inputs = ("x",)
    output_types = elementwise_types
    attributes = {"axis": Attr("int", -1, "the axis whose exponentials sum to one")}

    def forward(self, x):
        shifted = x - x.max(axis=self.axis, keepdims=True)
        self.out = shifted - np.log(np.exp(shifted).sum(axis=self.axis, keepdims=True))
        return self.out

    def backward(self, dout):
        return (dout - np.exp(self.out) * dout.sum(axis=self.axis, keepdims=True),)


LAYERS = (Relu, Sigmoid, Tanh, Exp, Log, Softmax, LogSoftmax, Erf, Gelu)
