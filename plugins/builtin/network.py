"""The book's network layers: Affine, SoftmaxWithLoss, Dropout, BatchNormalization."""

import numpy as np

import math

from gradserve.plugins import Attr, Layer, TensorType, elementwise_types, probe_dtypes, reduce_to_shape
from gradserve.plugins.builtin.arithmetic import matmul_shape
from gradserve.plugins.builtin.activations import softmax


class Affine(Layer):
    """Fully connected layer x @ W + b; x of rank > 2 is flattened to (N, -1)."""

    inputs = ("x", "W", "b")

    def forward(self, x, W, b):
        if x.ndim == 0:
            raise ValueError("x must have a batch axis: rank 1 or more (the book's (N, D))")
        self.original_x_shape = x.shape
        self.x = x.reshape(x.shape[0], -1)
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
    """Softmax then mean cross-entropy against labels t (one-hot, or class indices)."""

    inputs = ("x", "t")
    outputs = ("loss",)
    differentiable = ("x",)

    def forward(self, x, t):
        x2 = x.reshape(1, -1) if x.ndim == 1 else x
        if t.shape == x.shape:
            t_index = np.asarray(t).reshape(x2.shape).argmax(axis=-1)
        elif np.issubdtype(t.dtype, np.integer) and t.size == x2.shape[0]:
            t_index = t.reshape(-1)
            if t_index.size and (t_index.min() < 0 or t_index.max() >= x2.shape[-1]):
                raise ValueError(f"labels must lie in [0, {x2.shape[-1]}), got {t_index.min()}..{t_index.max()}")
        else:
            raise ValueError(
                f"labels t must be one-hot of shape {x.shape} or integer class indices of length "
                f"{x2.shape[0]}, got {t.dtype} {t.shape}"
            )
        self.x_shape = x.shape
        self.t_index = t_index
        self.y = softmax(x2)
        batch = x2.shape[0]
        # log-softmax keeps the loss exact where the book adds 1e-7 inside log().
        shifted = x2 - x2.max(axis=-1, keepdims=True)
        log_y = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
        return np.asarray(-log_y[np.arange(batch), t_index].sum() / batch, dtype=x.dtype)

    def output_types(self, x, t):
        rows = 1 if len(x.shape) == 1 else x.shape[0]
        if len(x.shape) not in (1, 2):
            raise ValueError(f"SoftmaxWithLoss takes x of shape (N, classes) or (classes,), got {x.shape}")
        if t.shape != x.shape and not (np.issubdtype(t.dtype, np.integer) and math.prod(t.shape) == rows):
            raise ValueError(f"labels t must be one-hot of shape {x.shape} or integer class indices of length "
                             f"{rows}, got {t.dtype} {t.shape}")
        return (TensorType((), x.dtype),)

    def backward(self, dout):
        batch = self.y.shape[0]
        dx = self.y.copy()
        dx[np.arange(batch), self.t_index] -= 1
        dx *= dout / batch
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


class BatchNormalization(Layer):
    """Batch normalization; running statistics go in as inputs and come back as outputs."""

    inputs = ("x", "gamma", "beta", "running_mean", "running_var")
    outputs = ("out", "running_mean_out", "running_var_out")
    differentiable = ("x", "gamma", "beta")
    attributes = {
        "momentum": Attr("float", 0.9, "weight of the old running statistics"),
        "eps": Attr("float", 1e-6, "added to the variance before the square root (the book's 10e-7)"),
    }

    def forward(self, x, gamma, beta, running_mean, running_var):
        self.input_shape = x.shape
        x = x.reshape(x.shape[0], -1)
        self.gamma = gamma
        self.beta_shape = beta.shape
        if self.training:
            mu = x.mean(axis=0)
            self.xc = x - mu
            var = (self.xc**2).mean(axis=0)
            self.std = np.sqrt(var + self.eps)
            m = self.momentum
            new_mean = m * running_mean + (1 - m) * mu
            new_var = m * running_var + (1 - m) * var
        else:
            self.xc = x - running_mean
            self.std = np.sqrt(running_var + self.eps)
            new_mean, new_var = running_mean, running_var
        self.xn = self.xc / self.std
        out = (gamma * self.xn + beta).reshape(self.input_shape)
        dtype = x.dtype
        return out, np.asarray(new_mean, dtype=dtype), np.asarray(new_var, dtype=dtype)

    def output_types(self, x, gamma, beta, running_mean, running_var):
        if not x.shape:
            raise ValueError("x must have a batch axis: rank 1 or more")
        rows = (x.shape[0], math.prod(x.shape[1:]))
        stats = np.broadcast_shapes(running_mean.shape, running_var.shape)
        if self.training:
            stats = np.broadcast_shapes(stats, rows[1:])
        out = np.broadcast_shapes(rows, gamma.shape, beta.shape, stats)
        if out != rows:
            raise ValueError(f"gamma {gamma.shape}, beta {beta.shape} and the running statistics must broadcast "
                             f"to x's (N, D) = {rows}")
        dtypes = probe_dtypes(self, x, gamma, beta, running_mean, running_var)
        return TensorType(x.shape, dtypes[0]), TensorType(stats, dtypes[1]), TensorType(stats, dtypes[2])

    def backward(self, dout, drunning_mean=None, drunning_var=None):
        batch = self.xc.shape[0]
        if dout is None:  # only the running statistics were used downstream
            dx = np.zeros_like(self.xc)
            dgamma, dbeta = np.zeros_like(self.gamma), np.zeros(self.beta_shape, dtype=self.xc.dtype)
        else:
            dout = dout.reshape(batch, -1)
            dbeta = reduce_to_shape(dout, self.beta_shape)
            dgamma = reduce_to_shape(self.xn * dout, self.gamma.shape)
            dxn = self.gamma * dout
            dx = dxn / self.std
            if self.training:
                dstd = -((dxn * self.xc) / (self.std * self.std)).sum(axis=0)
                dvar = 0.5 * dstd / self.std
                dx = dx + (2.0 / batch) * self.xc * dvar
                dx = dx - dx.sum(axis=0) / batch
        if self.training:
            # In training the new running statistics depend on x through the batch mean and variance.
            rest = 1.0 - self.momentum
            if drunning_mean is not None:
                dx = dx + (rest / batch) * drunning_mean
            if drunning_var is not None:
                dx = dx + (2.0 * rest / batch) * self.xc * drunning_var
        return dx.reshape(self.input_shape), dgamma, dbeta, None, None

LAYERS = (Affine, SoftmaxWithLoss, Dropout, BatchNormalization)
