"""Elementwise math, comparison and logic layers (ONNX names), with numpy broadcasting.

Unary math layers are rows of a table: a forward formula and its derivative. Comparisons, logic and
bit operations take no gradient; Sign, Floor, Ceil and Round are flat almost everywhere, so their
gradient is zero.
"""

from __future__ import annotations

import numpy as np

from gradserve.plugins import Attr, Layer, elementwise_types, reduce_to_shape


def _softplus(x):
    # logaddexp(0, x) is log(1 + exp(x)) without overflow; a Python 0.0 keeps float32 float32.
    return np.logaddexp(0.0, x)


def _sigmoid(x):
    return np.exp(-np.logaddexp(0.0, -x))


class _Unary(Layer):
    """Base of the table-driven unary layers: ``f(x, layer)`` and ``df(x, out, layer)``."""

    inputs = ("x",)
    output_types = elementwise_types

    @staticmethod
    def f(x, layer):
        raise NotImplementedError

    @staticmethod
    def df(x, out, layer):
        raise NotImplementedError

    def forward(self, x):
        self.x = x
        self.out = np.asarray(self.f(x, self))
        return self.out

    def backward(self, dout):
        return (dout * self.df(self.x, self.out, self).astype(dout.dtype, copy=False),)


def _unary(name: str, doc: str, f, df, attributes=None) -> type[Layer]:
    return type(name, (_Unary,), {"__doc__": doc, "__module__": __name__, "f": staticmethod(f),
                                  "df": staticmethod(df), "attributes": dict(attributes or {})})


def _alpha(default: float, doc: str) -> dict[str, Attr]:
    return {"alpha": Attr("float", default, doc)}


def _elu(x, alpha):
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))


_SELU_ALPHA, _SELU_GAMMA = 1.67326319217681884765625, 1.05070102214813232421875

UNARY = (
    _unary("Abs", "Absolute value |x| (integers too).", lambda x, s: np.abs(x), lambda x, o, s: np.sign(x)),
    _unary("Sqrt", "Square root.", lambda x, s: np.sqrt(x), lambda x, o, s: 0.5 / o),
    _unary("Reciprocal", "1 / x.", lambda x, s: np.reciprocal(x), lambda x, o, s: -o * o),
    _unary("Sin", "Sine.", lambda x, s: np.sin(x), lambda x, o, s: np.cos(x)),
    _unary("Cos", "Cosine.", lambda x, s: np.cos(x), lambda x, o, s: -np.sin(x)),
    _unary("Tan", "Tangent.", lambda x, s: np.tan(x), lambda x, o, s: 1 + o * o),
    _unary("Asin", "Inverse sine.", lambda x, s: np.arcsin(x), lambda x, o, s: 1 / np.sqrt(1 - x * x)),
    _unary("Acos", "Inverse cosine.", lambda x, s: np.arccos(x), lambda x, o, s: -1 / np.sqrt(1 - x * x)),
    _unary("Atan", "Inverse tangent.", lambda x, s: np.arctan(x), lambda x, o, s: 1 / (1 + x * x)),
    _unary("Sinh", "Hyperbolic sine.", lambda x, s: np.sinh(x), lambda x, o, s: np.cosh(x)),
    _unary("Cosh", "Hyperbolic cosine.", lambda x, s: np.cosh(x), lambda x, o, s: np.sinh(x)),
    _unary("Asinh", "Inverse hyperbolic sine.", lambda x, s: np.arcsinh(x), lambda x, o, s: 1 / np.sqrt(x * x + 1)),
    _unary("Acosh", "Inverse hyperbolic cosine.", lambda x, s: np.arccosh(x),
           lambda x, o, s: 1 / np.sqrt(x * x - 1)),
    _unary("Atanh", "Inverse hyperbolic tangent.", lambda x, s: np.arctanh(x), lambda x, o, s: 1 / (1 - x * x)),
    _unary("Softplus", "log(1 + exp(x)), without overflow.", lambda x, s: _softplus(x),
           lambda x, o, s: _sigmoid(x)),
    _unary("Softsign", "x / (1 + |x|).", lambda x, s: x / (1 + np.abs(x)),
           lambda x, o, s: 1 / np.square(1 + np.abs(x))),
    _unary("Mish", "x * tanh(softplus(x)).", lambda x, s: x * np.tanh(_softplus(x)),
           lambda x, o, s: np.tanh(_softplus(x)) + x * _sigmoid(x) * (1 - np.square(np.tanh(_softplus(x))))),
    _unary("Swish", "x * sigmoid(alpha * x) (SiLU for alpha 1).", lambda x, s: x * _sigmoid(s.alpha * x),
           lambda x, o, s: _sigmoid(s.alpha * x) * (1 + s.alpha * x * (1 - _sigmoid(s.alpha * x))),
           _alpha(1.0, "the sigmoid's slope")),
    _unary("HardSigmoid", "max(0, min(1, alpha * x + beta)).",
           lambda x, s: np.clip(s.alpha * x + s.beta, 0, 1),
           lambda x, o, s: np.where((o > 0) & (o < 1), s.alpha, 0.0),
           {"alpha": Attr("float", 0.2, "the slope"), "beta": Attr("float", 0.5, "the offset")}),
    _unary("HardSwish", "x * max(0, min(1, x / 6 + 1 / 2)).", lambda x, s: x * np.clip(x / 6 + 0.5, 0, 1),
           lambda x, o, s: np.where(x <= -3, 0.0, np.where(x >= 3, 1.0, x / 3 + 0.5))),
    _unary("Elu", "x for x > 0, else alpha * (exp(x) - 1).", lambda x, s: _elu(x, s.alpha),
           lambda x, o, s: np.where(x > 0, 1.0, o + s.alpha), _alpha(1.0, "the scale of the negative part")),
    _unary("Celu", "max(0, x) + min(0, alpha * (exp(x / alpha) - 1)).",
           lambda x, s: np.maximum(x, 0) + np.minimum(0, s.alpha * np.expm1(np.minimum(x, 0) / s.alpha)),
           lambda x, o, s: np.where(x > 0, 1.0, np.exp(np.minimum(x, 0) / s.alpha)),
           _alpha(1.0, "the scale and smoothness of the negative part")),
    _unary("Selu", "gamma * (x for x > 0, else alpha * (exp(x) - 1)).", lambda x, s: s.gamma * _elu(x, s.alpha),
           lambda x, o, s: np.where(x > 0, s.gamma, o + s.gamma * s.alpha),
           {"alpha": Attr("float", _SELU_ALPHA, "the scale of the negative part"),
            "gamma": Attr("float", _SELU_GAMMA, "the overall scale")}),
    _unary("LeakyRelu", "x for x >= 0, else alpha * x.", lambda x, s: np.where(x >= 0, x, s.alpha * x),
           lambda x, o, s: np.where(x >= 0, 1.0, s.alpha), _alpha(0.01, "the slope of the negative part")),
    _unary("ThresholdedRelu", "x for x > alpha, else 0.", lambda x, s: np.where(x > s.alpha, x, 0),
           lambda x, o, s: (x > s.alpha) * 1.0, _alpha(1.0, "the threshold")),
    _unary("Shrink", "x - bias for x > lambd, x + bias for x < -lambd, else 0.",
           lambda x, s: np.where(x > s.lambd, x - s.bias, np.where(x < -s.lambd, x + s.bias, 0)),
           lambda x, o, s: (np.abs(x) > s.lambd) * 1.0,
           {"bias": Attr("float", 0.0, "what is taken off |x|"), "lambd": Attr("float", 0.5, "the threshold")}),
)


class _Flat(Layer):
    """Base of the piecewise-constant layers: their gradient is zero wherever it exists."""

    inputs = ("x",)
    output_types = elementwise_types

    def forward(self, x):
        self.x_shape = x.shape
        return self.f(x)

    def backward(self, dout):
        return (np.zeros(self.x_shape, dtype=dout.dtype),)


def _flat(name: str, doc: str, f) -> type[Layer]:
    return type(name, (_Flat,), {"__doc__": doc, "__module__": __name__, "f": staticmethod(f)})


FLAT = (
    _flat("Sign", "-1, 0 or 1 by the sign of x (zero gradient).", np.sign),
    _flat("Floor", "The largest integer <= x (zero gradient).", np.floor),
    _flat("Ceil", "The smallest integer >= x (zero gradient).", np.ceil),
    _flat("Round", "x rounded to the nearest integer, halves to even (zero gradient).", np.round),
)


class _Binary(Layer):
    inputs = ("x", "y")
    output_types = elementwise_types

    def forward(self, x, y):
        self.x, self.y = x, y
        self.out = self.f(x, y)
        return self.out

    def backward(self, dout):
        needs = self.needs_input_grad or (True, True)
        dx, dy = self.grads(dout, needs)
        return (reduce_to_shape(dx, self.x.shape) if needs[0] else None,
                reduce_to_shape(dy, self.y.shape) if needs[1] else None)


class Pow(_Binary):
    """x ** y elementwise, with broadcasting (the gradient of y needs x > 0 where it is used)."""

    def f(self, x, y):
        if x.dtype.kind in "iu" and y.dtype.kind in "iu":
            return np.power(x, y.astype(x.dtype))
        return np.power(x, y).astype(x.dtype, copy=False)

    def grads(self, dout, needs):
        x, y = self.x, self.y
        dx = dout * y * np.power(x, y - 1) if needs[0] else None
        # log x is undefined for x <= 0; there x ** y is integer-valued in y (or NaN), and torch gives 0 too.
        dy = dout * self.out * np.log(np.where(x > 0, x, 1)) if needs[1] else None
        return dx, dy


class Mod(_Binary):
    """x mod y: the sign of y (Python's %) by default, the sign of x (C's fmod) with fmod."""

    attributes = {"fmod": Attr("bool", False, "take the sign of x, as C's fmod (ONNX requires it for floats)")}

    def f(self, x, y):
        return np.fmod(x, y) if self.fmod else np.mod(x, y)

    def grads(self, dout, needs):
        quotient = np.trunc(self.x / self.y) if self.fmod else np.floor(self.x / self.y)
        return dout, -dout * quotient


class Max(_Binary):
    """The larger of x and y, elementwise with broadcasting (a tie sends half the gradient to each)."""

    def f(self, x, y):
        return np.maximum(x, y)

    def grads(self, dout, needs):
        share = np.where(self.x > self.y, 1.0, np.where(self.x == self.y, 0.5, 0.0)).astype(dout.dtype)
        return dout * share, dout * (1 - share)


class Min(_Binary):
    """The smaller of x and y, elementwise with broadcasting (a tie sends half the gradient to each)."""

    def f(self, x, y):
        return np.minimum(x, y)

    def grads(self, dout, needs):
        share = np.where(self.x < self.y, 1.0, np.where(self.x == self.y, 0.5, 0.0)).astype(dout.dtype)
        return dout * share, dout * (1 - share)


class PRelu(_Binary):
    """x for x >= 0, else slope * x, with slope broadcast to x (ONNX PRelu's inputs X, slope)."""

    inputs = ("x", "slope")

    def f(self, x, y):
        return np.where(x >= 0, x, y * x).astype(x.dtype, copy=False)

    def grads(self, dout, needs):
        negative = self.x < 0
        return dout * np.where(negative, self.y, 1).astype(dout.dtype), dout * np.where(negative, self.x, 0)


class Clip(Layer):
    """x limited to [min, max] elementwise (ONNX Clip; the importer gives -inf/inf where a bound is absent)."""

    inputs = ("x", "min", "max")
    output_types = elementwise_types

    def forward(self, x, min, max):  # noqa: A002 - ONNX's input names
        self.x, self.lo, self.hi = x, min, max
        return np.minimum(np.maximum(x, min.astype(x.dtype)), max.astype(x.dtype))

    def backward(self, dout):
        x, lo, hi = self.x, self.lo, self.hi
        # out = min(max(x, lo), hi): hi wins wherever max(x, lo) exceeds it (lo > hi included), then lo where x < lo.
        to_hi = np.maximum(x, lo) > hi
        to_lo = (x < lo) & ~to_hi
        to_x = ~(to_hi | to_lo)
        return (reduce_to_shape(dout * to_x, x.shape), reduce_to_shape(dout * to_lo, lo.shape),
                reduce_to_shape(dout * to_hi, hi.shape))


class Where(Layer):
    """x where condition is true, else y, with broadcasting (ONNX Where)."""

    inputs = ("condition", "x", "y")
    differentiable = ("x", "y")
    output_types = elementwise_types

    def forward(self, condition, x, y):
        self.condition = condition.astype(bool, copy=False)
        self.x_shape, self.y_shape = x.shape, y.shape
        return np.where(self.condition, x, y)

    def backward(self, dout):
        zero = np.zeros((), dtype=dout.dtype)
        return (None, reduce_to_shape(np.where(self.condition, dout, zero), self.x_shape),
                reduce_to_shape(np.where(self.condition, zero, dout), self.y_shape))


class _NoGrad(Layer):
    """Base of layers whose outputs are booleans or integers: no input takes a gradient (all elementwise)."""

    differentiable = ()
    output_types = elementwise_types

    def backward(self, *douts):
        return (None,) * len(self.inputs)


def _binary_nograd(name: str, doc: str, f) -> type[Layer]:
    def forward(self, x, y):
        return f(x, y)
    return type(name, (_NoGrad,), {"__doc__": doc, "__module__": __name__, "inputs": ("x", "y"),
                                   "forward": forward})


def _unary_nograd(name: str, doc: str, f) -> type[Layer]:
    def forward(self, x):
        return f(x)
    return type(name, (_NoGrad,), {"__doc__": doc, "__module__": __name__, "inputs": ("x",), "forward": forward})


def _bool(f):
    return lambda x, y: f(x.astype(bool, copy=False), y.astype(bool, copy=False))


COMPARISONS = (
    _binary_nograd("Equal", "x == y elementwise, as bool (no gradient).", np.equal),
    _binary_nograd("Less", "x < y elementwise, as bool (no gradient).", np.less),
    _binary_nograd("LessOrEqual", "x <= y elementwise, as bool (no gradient).", np.less_equal),
    _binary_nograd("Greater", "x > y elementwise, as bool (no gradient).", np.greater),
    _binary_nograd("GreaterOrEqual", "x >= y elementwise, as bool (no gradient).", np.greater_equal),
)

LOGIC = (
    _unary_nograd("Not", "Logical not of a bool tensor.", lambda x: np.logical_not(x)),
    _binary_nograd("And", "Logical and, with broadcasting.", _bool(np.logical_and)),
    _binary_nograd("Or", "Logical or, with broadcasting.", _bool(np.logical_or)),
    _binary_nograd("Xor", "Logical exclusive or, with broadcasting.", _bool(np.logical_xor)),
    _unary_nograd("IsNaN", "Whether each element is NaN.", np.isnan),
    _unary_nograd("BitwiseNot", "Bitwise not of an integer tensor.", np.invert),
    _binary_nograd("BitwiseAnd", "Bitwise and of integer tensors, with broadcasting.", np.bitwise_and),
    _binary_nograd("BitwiseOr", "Bitwise or of integer tensors, with broadcasting.", np.bitwise_or),
    _binary_nograd("BitwiseXor", "Bitwise exclusive or of integer tensors, with broadcasting.", np.bitwise_xor),
)


class IsInf(_NoGrad):
    """Whether each element is infinite, of the signs asked for."""

    inputs = ("x",)
    attributes = {"detect_negative": Attr("bool", True, "count -inf"),
                  "detect_positive": Attr("bool", True, "count +inf")}

    def forward(self, x):
        return (np.isposinf(x) & self.detect_positive) | (np.isneginf(x) & self.detect_negative)


class BitShift(_NoGrad):
    """x shifted by y bits, left or right, for unsigned integers (ONNX BitShift)."""

    inputs = ("x", "y")
    attributes = {"direction": Attr("str", doc="LEFT or RIGHT")}

    def forward(self, x, y):
        if self.direction not in ("LEFT", "RIGHT"):
            raise ValueError(f"direction must be LEFT or RIGHT, got {self.direction!r}")
        shift = np.left_shift if self.direction == "LEFT" else np.right_shift
        return shift(x, y.astype(x.dtype, copy=False))


LAYERS = (*UNARY, *FLAT, Pow, Mod, Max, Min, PRelu, Clip, Where, *COMPARISONS, *LOGIC, IsInf, BitShift)
