"""The book's network layers: Affine, SoftmaxWithLoss, Dropout (BatchNormalization is in normalization.py)."""

import numpy as np

import math

from gradserve.plugins import Attr, Layer, TensorType, elementwise_types, probe_dtypes, reduce_to_shape
from gradserve.plugins.builtin.arithmetic import matmul_shape


class Affine(Layer):
    """Fully connected layer x @ W + b; x of rank > 2 is flattened to (N, -1)."""

    inputs = ("x", "W", "b")

    def forward(self, x, W, b):
        if x.ndim == 0:
            raise ValueError("x must have a batch axis: rank 1 or more (the book's (N, D))")
        self.original_x_shape = x.shape
        # The column count from the shape, not -1: reshape cannot infer -1 for a zero-size batch.
        self.x = x.reshape(x.shape[0], int(np.prod(x.shape[1:], dtype=np.int64)))
        self.W = W
        self.b_shape = b.shape
        return self.x @ W + b

    def output_types(self, x, W, b):
        if not x.shape:
            raise ValueError("x must have a batch axis: rank 1 or more (the book's (N, D))")
        product = matmul_shape((x.shape[0], math.prod(x.shape[1:])), W.shape)
        if np.broadcast_shapes(product, b.shape) != product:
            raise ValueError(f"b of shape {b.shape} does not broadcast to the product's shape {product}")
        return (TensorType(product, probe_dtypes(self, x, W, b)[0]),)

    def backward(self, dout):
        needs = self.needs_input_grad
        # x is usually a batch of data, not a parameter: then its gradient, a GEMM as big as dW's, is skipped.
        dx = (dout @ self.W.T).reshape(self.original_x_shape) if needs is None or needs[0] else None
        dW = self.x.T @ dout
        db = reduce_to_shape(dout, self.b_shape)
        return dx, dW, db


class SoftmaxWithLoss(Layer):
    """Softmax then mean cross-entropy against labels t: class indices, or one-hot or soft labels of x's shape.

    With labels of x's shape the loss is -sum(t * log(softmax(x))) / N and dx = (softmax(x) * sum(t) - t) / N,
    which is the book's (y - t) / N for rows of t that sum to one; one-hot labels are the special case.
    """

    inputs = ("x", "t")
    outputs = ("loss",)
    differentiable = ("x",)

    def forward(self, x, t):
        x2 = x.reshape(1, -1) if x.ndim == 1 else x
        if x2.ndim != 2:
            raise ValueError(f"SoftmaxWithLoss takes scores x of shape (N, classes) or (classes,), got {x.shape}")
        batch = x2.shape[0]
        if t.shape == x.shape and t.size:
            self.t = np.asarray(t, dtype=x.dtype).reshape(x2.shape)
            self.t_index = None
        elif np.issubdtype(t.dtype, np.integer) and t.size == batch and (t.ndim <= 1 or t.shape == (batch, 1)):
            self.t = None
            self.t_index = t.reshape(-1)
            if self.t_index.size and (self.t_index.min() < 0 or self.t_index.max() >= x2.shape[-1]):
                raise ValueError(f"labels must lie in [0, {x2.shape[-1]}), got "
                                 f"{self.t_index.min()}..{self.t_index.max()}")
        else:
            raise ValueError(
                f"labels t must be one-hot or soft labels of shape {x.shape}, or integer class indices of length "
                f"{batch}, got {t.dtype} {t.shape}"
            )
        self.x_shape = x.shape
        # log-softmax keeps the loss exact where the book adds 1e-7 inside log().
        shifted = x2 - x2.max(axis=-1, keepdims=True) if x2.size else x2
        log_y = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
        self.y = np.exp(log_y)
        if batch == 0:
            return np.zeros((), dtype=x.dtype)
        if self.t is None:
            loss = -log_y[np.arange(batch), self.t_index].sum() / batch
        else:
            loss = -(self.t * log_y).sum() / batch
        return np.asarray(loss, dtype=x.dtype)

    def output_types(self, x, t):
        rows = 1 if len(x.shape) == 1 else x.shape[0]
        if len(x.shape) not in (1, 2):
            raise ValueError(f"SoftmaxWithLoss takes scores x of shape (N, classes) or (classes,), got {x.shape}")
        one_hot = t.shape == x.shape and math.prod(t.shape)
        indices = (np.issubdtype(t.dtype, np.integer) and math.prod(t.shape) == rows
                   and (len(t.shape) <= 1 or t.shape == (rows, 1)))
        if not (one_hot or indices):
            raise ValueError(f"labels t must be one-hot of shape {x.shape} or integer class indices of length "
                             f"{rows}, got {t.dtype} {t.shape}")
        return (TensorType((), x.dtype),)

    def backward(self, dout):
        batch = self.y.shape[0]
        if self.t is None:
            dx = self.y.copy()
            dx[np.arange(batch), self.t_index] -= 1
        else:
            dx = self.y * self.t.sum(axis=-1, keepdims=True) - self.t
        dx *= dout / max(batch, 1)
        return dx.reshape(self.x_shape), None


class Dropout(Layer):
    """Zeroes a random fraction `ratio` of x in training; scales by (1 - ratio) otherwise, as the book does."""

    inputs = ("x",)
    attributes = {"ratio": Attr("float", 0.5, "the fraction of units dropped in training")}
    output_types = elementwise_types

    def forward(self, x):
        if not 0.0 <= self.ratio < 1.0:
            raise ValueError(f"Dropout ratio must lie in [0, 1), got {self.ratio}")
        if self.training:
            self.mask = self.rng.random(x.shape) > self.ratio
            return x * self.mask
        self.mask = None
        return x * x.dtype.type(1.0 - self.ratio)

    def backward(self, dout):
        if self.mask is None:
            return (dout * dout.dtype.type(1.0 - self.ratio),)
        return (dout * self.mask,)


LAYERS = (Affine, SoftmaxWithLoss, Dropout)
