"""Elementwise arithmetic (numpy broadcasting) and matrix product layers."""

import numpy as np

from gradserve.plugins import Layer, TensorType, elementwise_types, probe_dtypes, reduce_to_shape


def _shape(a) -> tuple[int, ...]:
    """``np.shape(a)``, without its call overhead for the arrays the engine passes (it counts on tiny graphs)."""
    return a.shape if type(a) is np.ndarray else np.shape(a)


class Mul(Layer):
    """Elementwise product x * y (the book's MulLayer), with broadcasting."""

    inputs = ("x", "y")
    output_types = elementwise_types

    def forward(self, x, y):
        self.x = x
        self.y = y
        return x * y

    def backward(self, dout):
        x, y = self.x, self.y
        dx, dy = dout * y, dout * x
        # reduce_to_shape only where broadcasting happened: the test inline saves a third of a 1-element backward.
        x_shape, y_shape = _shape(x), _shape(y)
        return (dx if _shape(dx) == x_shape else reduce_to_shape(dx, x_shape),
                dy if _shape(dy) == y_shape else reduce_to_shape(dy, y_shape))


class Add(Layer):
    """Elementwise sum x + y (the book's AddLayer), with broadcasting."""

    inputs = ("x", "y")
    output_types = elementwise_types

    def forward(self, x, y):
        self.x_shape = x.shape if type(x) is np.ndarray else np.shape(x)  # _shape(x), inlined: Add is hot
        self.y_shape = y.shape if type(y) is np.ndarray else np.shape(y)
        return x + y

    def backward(self, dout):
        shape, x_shape, y_shape = _shape(dout), self.x_shape, self.y_shape
        return (dout if shape == x_shape else reduce_to_shape(dout, x_shape),
                dout if shape == y_shape else reduce_to_shape(dout, y_shape))


class Sub(Layer):
    """Elementwise difference x - y, with broadcasting."""

    inputs = ("x", "y")
    output_types = elementwise_types

    def forward(self, x, y):
        self.x_shape = _shape(x)
        self.y_shape = _shape(y)
        return x - y

    def backward(self, dout):
        return reduce_to_shape(dout, self.x_shape), reduce_to_shape(-dout, self.y_shape)


class Div(Layer):
    """Elementwise quotient x / y, with broadcasting."""

    inputs = ("x", "y")
    output_types = elementwise_types

    def forward(self, x, y):
        self.x_shape = _shape(x)
        self.y = y
        self.out = x / y
        return self.out

    def backward(self, dout):
        dx = dout / self.y
        dy = -dx * self.out
        return reduce_to_shape(dx, self.x_shape), reduce_to_shape(dy, _shape(self.y))


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
