"""Normalization layers: BatchNormalization (training and inference, the book's and ONNX's) and LayerNormalization."""

from __future__ import annotations

import math

import numpy as np

from gradserve.plugins import Attr, Layer, TensorType, probe_dtypes, reduce_to_shape


class BatchNormalization(Layer):
    """Batch normalization; running statistics go in as inputs and come back as outputs (ONNX BatchNormalization).

    A training request normalizes with the batch's statistics and updates the running ones
    (new = momentum * old + (1 - momentum) * batch); otherwise it uses the running ones. spatial=False is the
    book's: x is flattened to (N, -1) and every feature has its own statistics (gamma of shape (D,)).
    spatial=True is ONNX's (and torch's): one statistic per channel of x (N, C, *spatial), over N and the
    spatial axes (gamma of shape (C,)). training_mode, when set, overrides the request's flag (an ONNX
    model exported in training mode says so on the node).
    """

    inputs = ("x", "gamma", "beta", "running_mean", "running_var")
    outputs = ("out", "running_mean_out", "running_var_out")
    differentiable = ("x", "gamma", "beta")
    attributes = {
        "momentum": Attr("float", 0.9, "weight of the old running statistics"),
        "epsilon": Attr("float", 1e-6, "added to the variance before the square root (the book's 10e-7)"),
        "spatial": Attr("bool", False, "one statistic per channel (axis 1, ONNX) instead of per flattened feature"),
        "training_mode": Attr("bool", None, "batch statistics (true) or running ones (false), as ONNX's "
                                            "training_mode; unset: the request's training flag"),
    }

    def forward(self, x, gamma, beta, running_mean, running_var):
        if self.training_mode is not None:
            self.training = self.training_mode
        if x.ndim < 1 + self.spatial:
            raise ValueError(f"BatchNormalization takes x with a batch axis{' and a channel axis' * self.spatial}, "
                             f"got shape {x.shape}")
        self.input_shape = x.shape
        if self.spatial:
            # (N, C, *spatial) -> (C, N * spatial...) rows, so the statistics run along axis 1 of a 2-D view.
            self.axes = (0,) + tuple(range(2, x.ndim))
            x2 = np.moveaxis(x, 1, 0).reshape(x.shape[1], -1).T
        else:
            x2 = x.reshape(x.shape[0], int(np.prod(x.shape[1:], dtype=np.int64)))
        features = x2.shape[1]
        for name, value in (("gamma", gamma), ("beta", beta), ("running_mean", running_mean),
                            ("running_var", running_var)):
            if value.size != features:
                raise ValueError(f"BatchNormalization {name} has {value.size} elements, x has {features} "
                                 f"{'channels' if self.spatial else 'features per example'}")
        if self.training and x2.shape[0] == 0:
            raise ValueError("BatchNormalization in training needs a non-empty batch for its statistics")
        self.gamma_shape, self.beta_shape, stats_shape = gamma.shape, beta.shape, running_mean.shape
        self.gamma = gamma.reshape(-1)
        beta = beta.reshape(-1)
        running_mean, running_var = running_mean.reshape(-1), running_var.reshape(-1)
        if self.training:
            mu = x2.mean(axis=0)
            self.xc = x2 - mu
            var = (self.xc**2).mean(axis=0)
            self.std = np.sqrt(var + self.epsilon)
            m = self.momentum
            new_mean = m * running_mean + (1 - m) * mu
            new_var = m * running_var + (1 - m) * var
        else:
            self.xc = x2 - running_mean
            self.std = np.sqrt(running_var + self.epsilon)
            new_mean, new_var = running_mean, running_var
        self.xn = self.xc / self.std
        out = self._unflatten(self.gamma * self.xn + beta)
        dtype = x.dtype
        return (out, np.asarray(new_mean, dtype=dtype).reshape(stats_shape),
                np.asarray(new_var, dtype=dtype).reshape(stats_shape))

    def output_types(self, x, gamma, beta, running_mean, running_var):
        if len(x.shape) < 1 + self.spatial:
            raise ValueError(f"BatchNormalization takes x with a batch axis{' and a channel axis' * self.spatial}, "
                             f"got shape {x.shape}")
        features = x.shape[1] if self.spatial else math.prod(x.shape[1:])
        for name, value in (("gamma", gamma), ("beta", beta), ("running_mean", running_mean),
                            ("running_var", running_var)):
            if math.prod(value.shape) != features:
                raise ValueError(f"BatchNormalization {name} has {math.prod(value.shape)} elements, x has "
                                 f"{features} {'channels' if self.spatial else 'features per example'}")
        dtypes = probe_dtypes(self, x, gamma, beta, running_mean, running_var)
        return (TensorType(x.shape, dtypes[0]), TensorType(running_mean.shape, dtypes[1]),
                TensorType(running_mean.shape, dtypes[2]))

    def _flatten(self, a: np.ndarray) -> np.ndarray:
        if self.spatial:
            return np.moveaxis(a, 1, 0).reshape(a.shape[1], -1).T
        return a.reshape(self.xc.shape)

    def _unflatten(self, a2: np.ndarray) -> np.ndarray:
        if self.spatial:
            moved = (self.input_shape[1], self.input_shape[0]) + self.input_shape[2:]
            return np.ascontiguousarray(np.moveaxis(a2.T.reshape(moved), 0, 1))
        return a2.reshape(self.input_shape)

    def backward(self, dout, drunning_mean=None, drunning_var=None):
        batch = self.xc.shape[0]
        if dout is None:  # only the running statistics were used downstream
            dx = np.zeros_like(self.xc)
            dgamma, dbeta = np.zeros_like(self.gamma), np.zeros(self.beta_shape, dtype=self.xc.dtype)
        else:
            dout = self._flatten(dout)
            dbeta = dout.sum(axis=0)
            dgamma = (self.xn * dout).sum(axis=0)
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
                dx = dx + (rest / batch) * drunning_mean.reshape(-1)
            if drunning_var is not None:
                dx = dx + (2.0 * rest / batch) * self.xc * drunning_var.reshape(-1)
        return (self._unflatten(dx), np.reshape(dgamma, self.gamma_shape), np.reshape(dbeta, self.beta_shape),
                None, None)


class LayerNormalization(Layer):
    """Normalizes x over the axes from `axis` on, then scale * x + bias (ONNX LayerNormalization).

    Outputs as ONNX: out, and the mean and inverse standard deviation (1 / sqrt(var + epsilon)) over those
    axes, kept with length one. scale and bias broadcast against the normalized axes.
    """

    inputs = ("x", "scale", "bias")
    outputs = ("out", "mean", "inv_std_dev")
    attributes = {
        "axis": Attr("int", -1, "the first normalized axis; negative counts from the end"),
        "epsilon": Attr("float", 1e-5, "added to the variance before the square root"),
    }

    def forward(self, x, scale, bias):
        axis = self.axis + x.ndim if self.axis < 0 else self.axis
        if not 0 <= axis < max(x.ndim, 1):
            raise ValueError(f"LayerNormalization axis {self.axis} is out of range for x of rank {x.ndim}")
        if x.dtype.kind != "f":
            raise ValueError(f"LayerNormalization takes floating-point x, got {x.dtype}")
        normalized = x.shape[axis:]
        for name, value in (("scale", scale), ("bias", bias)):
            try:
                fits = np.broadcast_shapes(value.shape, normalized) == normalized
            except ValueError:
                fits = False
            if not fits:
                raise ValueError(f"LayerNormalization {name} of shape {value.shape} does not broadcast to the "
                                 f"normalized shape {normalized}")
        self.axes = tuple(range(axis, x.ndim))
        self.scale, self.scale_shape, self.bias_shape = scale, scale.shape, bias.shape
        self.count = int(np.prod(normalized, dtype=np.int64))
        mean = x.mean(axis=self.axes, keepdims=True)
        self.xc = x - mean
        var = (self.xc * self.xc).mean(axis=self.axes, keepdims=True)
        self.inv = 1.0 / np.sqrt(var + x.dtype.type(self.epsilon))
        self.xn = self.xc * self.inv
        out = self.xn * scale + bias
        return out.astype(x.dtype, copy=False), mean, self.inv

    def output_types(self, x, scale, bias):
        ndim = len(x.shape)
        axis = self.axis + ndim if self.axis < 0 else self.axis
        if not 0 <= axis < max(ndim, 1):
            raise ValueError(f"LayerNormalization axis {self.axis} is out of range for x of rank {ndim}")
        normalized = tuple(x.shape[axis:])
        for name, value in (("scale", scale), ("bias", bias)):
            if np.broadcast_shapes(value.shape, normalized) != normalized:
                raise ValueError(f"LayerNormalization {name} of shape {value.shape} does not broadcast to the "
                                 f"normalized shape {normalized}")
        stats = tuple(x.shape[:axis]) + (1,) * (ndim - axis)
        dtypes = probe_dtypes(self, x, scale, bias)
        return TensorType(x.shape, dtypes[0]), TensorType(stats, dtypes[1]), TensorType(stats, dtypes[2])

    def backward(self, dout, dmean=None, dinv=None):
        axes, count = self.axes, self.count
        dx = np.zeros_like(self.xc)
        dscale = dbias = None
        if dout is not None:
            dbias = reduce_to_shape(dout, self.bias_shape)
            dscale = reduce_to_shape(dout * self.xn, self.scale_shape)
            dxn = dout * self.scale
            # d/dx of xc * inv: the usual three terms (direct, through the mean, through the variance).
            dx = self.inv * (dxn - dxn.mean(axis=axes, keepdims=True)
                             - self.xn * (dxn * self.xn).mean(axis=axes, keepdims=True))
        if dmean is not None:
            dx = dx + dmean / dx.dtype.type(count)
        if dinv is not None:
            # inv = (var + eps)^-1/2, dvar/dx = 2 xc / count
            dx = dx - dinv * self.inv**3 * self.xc / dx.dtype.type(count)
        if dscale is None:
            dscale = np.zeros(self.scale_shape, dtype=dx.dtype)
            dbias = np.zeros(self.bias_shape, dtype=dx.dtype)
        return dx.astype(self.xc.dtype, copy=False), dscale, dbias


LAYERS = (BatchNormalization, LayerNormalization)
