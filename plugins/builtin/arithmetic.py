"""Elementwise arithmetic (numpy broadcasting) and matrix product layers.

Mul, Add, Sub and Div are written alike, as a layer author would copy them: forward keeps what backward needs
(the inputs, or only their shapes), backward computes one gradient per input and sums each back to its
input's shape with reduce_to_shape (a no-op where no broadcasting happened).
"""

import numpy as np

from gradserve.plugins import Layer, TensorType, elementwise_types, probe_dtypes, reduce_to_shape


class Mul(Layer):
    """Elementwise product x * y (the book's MulLayer), with broadcasting."""

    inputs = ("x", "y")
    output_types = elementwise_types

    def forward(self, x, y):
        self.x = x
        self.y = y
        return x * y

    def backward(self, dout):
        return reduce_to_shape(dout * self.y, self.x.shape), reduce_to_shape(dout * self.x, self.y.shape)


class Add(Layer):
    """Elementwise sum x + y (the book's AddLayer), with broadcasting."""

    inputs = ("x", "y")
    output_types = elementwise_types

    def forward(self, x, y):
        self.x_shape = x.shape
        self.y_shape = y.shape
        return x + y

    def backward(self, dout):
        return reduce_to_shape(dout, self.x_shape), reduce_to_shape(dout, self.y_shape)


class Sub(Layer):
    """Elementwise difference x - y, with broadcasting."""

    inputs = ("x", "y")
    output_types = elementwise_types

    def forward(self, x, y):
        self.x_shape = x.shape
        self.y_shape = y.shape
        return x - y

    def backward(self, dout):
        return reduce_to_shape(dout, self.x_shape), reduce_to_shape(-dout, self.y_shape)


class Div(Layer):
    """Elementwise quotient x / y, with broadcasting."""

    inputs = ("x", "y")
    output_types = elementwise_types

    def forward(self, x, y):
        self.y = y
        self.x_shape = x.shape
        self.out = x / y
        return self.out

    def backward(self, dout):
        dx = dout / self.y
        dy = -dx * self.out  # d(x/y)/dy = -x/y**2 = -(1/y) * out
        return reduce_to_shape(dx, self.x_shape), reduce_to_shape(dy, self.y.shape)


class Neg(Layer):
    """Elementwise negation -x."""

    inputs = ("x",)
    output_types = elementwise_types

    def forward(self, x):
        return -x

    def backward(self, dout):
        return (-dout,)


class MatMul(Layer):
    """Matrix product x @ y as numpy.matmul computes it (batched, 1-D operands promoted)."""

    inputs = ("x", "y")

    def forward(self, x, y):
        self.x = x
        self.y = y
        return np.matmul(x, y)

    def output_types(self, x, y):
        return (TensorType(matmul_shape(x.shape, y.shape), probe_dtypes(self, x, y)[0]),)

    def backward(self, dout):
        x, y = self.x, self.y
        # Promote 1-D operands the way matmul does, so one formula covers every rank.
        x2 = x[np.newaxis, :] if x.ndim == 1 else x
        y2 = y[:, np.newaxis] if y.ndim == 1 else y
        # dout without the promoted axes (1-D @ 1-D gives a scalar): restore them by reshaping.
        d = dout.reshape(np.broadcast_shapes(x2.shape[:-2], y2.shape[:-2]) + (x2.shape[-2], y2.shape[-1]))
        needs = self.needs_input_grad or (True, True)
        dx = reduce_to_shape(np.matmul(d, np.swapaxes(y2, -1, -2)), x2.shape).reshape(x.shape) if needs[0] else None
        dy = reduce_to_shape(np.matmul(np.swapaxes(x2, -1, -2), d), y2.shape).reshape(y.shape) if needs[1] else None
        return dx, dy

def matmul_shape(x: tuple[int, ...], y: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of numpy.matmul(x, y) for operands of these shapes, or a ValueError as matmul raises."""
    if not x or not y:
        raise ValueError("matmul takes no scalar operand")
    x2 = (1, *x) if len(x) == 1 else x
    y2 = (*y, 1) if len(y) == 1 else y
    if x2[-1] != y2[-2]:
        raise ValueError(f"matmul: x of shape {x} and y of shape {y} do not agree (x's last axis {x2[-1]}, "
                         f"y's {'only' if len(y) == 1 else 'second to last'} axis {y2[-2]})")
    shape = np.broadcast_shapes(x2[:-2], y2[:-2]) + (x2[-2], y2[-1])
    if len(y) == 1:
        shape = shape[:-1]
    if len(x) == 1:
        shape = shape[:-2] + shape[-1:] if len(y) > 1 else shape[:-1]
    return shape


LAYERS = (Mul, Add, Sub, Div, Neg, MatMul)
