"""Plain-numpy versions of the book's ch05-ch07 layers and networks, re-typed for the tests (no server).

Each class keeps the book's constructor, methods and attribute names, so one network definition runs on
either these or gradserve.client.book's remote layers (``layers`` is the module the network builds from).
"""

from __future__ import annotations

from collections import OrderedDict
from types import SimpleNamespace

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def _softmax(x):
    shifted = x - x.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


class Relu:
    def __init__(self):
        self.mask = None

    def forward(self, x):
        self.mask = x <= 0
        return np.where(self.mask, 0.0, x)

    def backward(self, dout):
        return np.where(self.mask, 0.0, dout)


class Affine:
    def __init__(self, W, b):
        self.W, self.b = W, b
        self.dW = self.db = None

    def forward(self, x):
        self.original_x_shape = x.shape
        self.x = x.reshape(x.shape[0], -1)
        return self.x @ self.W + self.b

    def backward(self, dout):
        self.dW = self.x.T @ dout
        self.db = dout.sum(axis=0)
        return (dout @ self.W.T).reshape(self.original_x_shape)


class SoftmaxWithLoss:
    """Index, one-hot or soft labels; the loss with log-softmax (the service's; the book adds 1e-7 in its log)."""

    def forward(self, x, t):
        x2 = x.reshape(1, -1) if x.ndim == 1 else x
        self.y = _softmax(x2)
        n = x2.shape[0]
        shifted = x2 - x2.max(axis=-1, keepdims=True)
        log_y = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
        if t.size == x2.size:
            self.t = t.reshape(x2.shape).astype(np.float64)
            self.loss = -(self.t * log_y).sum() / n
        else:
            self.t = t.reshape(-1)
            self.loss = -log_y[np.arange(n), self.t].sum() / n
        self.x_shape = x.shape
        return self.loss

    def backward(self, dout=1):
        n = self.y.shape[0]
        if self.t.ndim == 2:
            dx = self.y - self.t
        else:
            dx = self.y.copy()
            dx[np.arange(n), self.t] -= 1
        return (dx * dout / n).reshape(self.x_shape)


class Dropout:
    def __init__(self, dropout_ratio=0.5):
        self.dropout_ratio = dropout_ratio
        self.mask = None

    def forward(self, x, train_flg=True):
        if not train_flg:
            return x * (1.0 - self.dropout_ratio)
        self.mask = np.random.rand(*x.shape) > self.dropout_ratio
        return x * self.mask

    def backward(self, dout):
        return dout * self.mask


class BatchNormalization:
    def __init__(self, gamma, beta, momentum=0.9, running_mean=None, running_var=None):
        self.gamma, self.beta, self.momentum = gamma, beta, momentum
        self.running_mean, self.running_var = running_mean, running_var
        self.dgamma = self.dbeta = None

    def forward(self, x, train_flg=True):
        self.input_shape = x.shape
        x = x.reshape(x.shape[0], -1)
        if self.running_mean is None:
            self.running_mean = np.zeros(x.shape[1])
            self.running_var = np.zeros(x.shape[1])
        if train_flg:
            mu = x.mean(axis=0)
            self.xc = x - mu
            var = (self.xc**2).mean(axis=0)
            self.std = np.sqrt(var + 1e-6)
            self.xn = self.xc / self.std
            self.running_mean = self.momentum * self.running_mean + (1 - self.momentum) * mu
            self.running_var = self.momentum * self.running_var + (1 - self.momentum) * var
        else:
            self.xn = (x - self.running_mean) / np.sqrt(self.running_var + 1e-6)
        return (self.gamma * self.xn + self.beta).reshape(self.input_shape)

    def backward(self, dout):
        n = dout.shape[0]
        dout = dout.reshape(n, -1)
        self.dbeta = dout.sum(axis=0)
        self.dgamma = (self.xn * dout).sum(axis=0)
        dxn = self.gamma * dout
        # the normalized gradient: direct term minus its mean and its projection on xn
        dx = (dxn - dxn.mean(axis=0) - self.xn * (dxn * self.xn).mean(axis=0)) / self.std
        return dx.reshape(self.input_shape)


def _windows(x, fh, fw, stride, pad, fill=0.0):
    """(N, C, out_h, out_w, fh, fw) views of the padded images."""
    padded = np.pad(x, [(0, 0), (0, 0), (pad, pad), (pad, pad)], constant_values=fill)
    return sliding_window_view(padded, (fh, fw), axis=(2, 3))[:, :, ::stride, ::stride]


def _scatter_windows(dwin, x_shape, stride, pad):
    """The adjoint of _windows: adds each window's entries back onto the pixels they were read from."""
    n, c, h, w = x_shape
    _, _, oh, ow, fh, fw = dwin.shape
    padded = np.zeros((n, c, h + 2 * pad, w + 2 * pad))
    for i in range(fh):
        for j in range(fw):
            padded[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride] += dwin[:, :, :, :, i, j]
    return padded[:, :, pad:pad + h, pad:pad + w]


class Convolution:
    def __init__(self, W, b, stride=1, pad=0):
        self.W, self.b, self.stride, self.pad = W, b, stride, pad
        self.dW = self.db = None

    def forward(self, x):
        self.x = x
        self.win = _windows(x, self.W.shape[2], self.W.shape[3], self.stride, self.pad)
        return np.einsum("ncijhw,fchw->nfij", self.win, self.W) + self.b[None, :, None, None]

    def backward(self, dout):
        self.db = dout.sum(axis=(0, 2, 3))
        self.dW = np.einsum("nfij,ncijhw->fchw", dout, self.win)
        dwin = np.einsum("nfij,fchw->ncijhw", dout, self.W)
        return _scatter_windows(dwin, self.x.shape, self.stride, self.pad)


class Pooling:
    def __init__(self, pool_h, pool_w, stride=1, pad=0):
        self.pool_h, self.pool_w, self.stride, self.pad = pool_h, pool_w, stride, pad

    def forward(self, x):
        self.x_shape = x.shape
        win = _windows(x, self.pool_h, self.pool_w, self.stride, self.pad, fill=-np.inf)
        flat = win.reshape(win.shape[:4] + (-1,))
        self.arg = flat.argmax(axis=-1)
        return flat.max(axis=-1)

    def backward(self, dout):
        one_hot = np.eye(self.pool_h * self.pool_w)[self.arg] * dout[..., None]
        dwin = one_hot.reshape(dout.shape + (self.pool_h, self.pool_w))
        return _scatter_windows(dwin, self.x_shape, self.stride, self.pad)


LOCAL = SimpleNamespace(Relu=Relu, Affine=Affine, SoftmaxWithLoss=SoftmaxWithLoss, Dropout=Dropout,
                        BatchNormalization=BatchNormalization, Convolution=Convolution, Pooling=Pooling)


def numerical_gradient(f, x, h=1e-4):
    """Central differences of f() by each element of x, bumped in place as the book's numerical_gradient does."""
    grad = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        kept = x[idx]
        x[idx] = kept + h
        up = f()
        x[idx] = kept - h
        down = f()
        x[idx] = kept
        grad[idx] = (up - down) / (2 * h)
    return grad


class MultiLayerNetExtend:
    """ch06's network: (Affine, BatchNormalization, Relu, Dropout) per hidden layer, then Affine, SoftmaxWithLoss.

    ``dropout_seed`` reseeds numpy's global generator before each forward, so repeated losses (a numerical
    gradient) see the same masks.
    """

    def __init__(self, layers, input_size, hidden_size_list, output_size, use_dropout=False, dropout_ratio=0.5,
                 use_batchnorm=False, dropout_seed=None):
        self.use_dropout, self.use_batchnorm, self.dropout_seed = use_dropout, use_batchnorm, dropout_seed
        sizes = [input_size, *hidden_size_list, output_size]
        self.params = {}
        for i in range(1, len(sizes)):
            self.params[f"W{i}"] = np.sqrt(2.0 / sizes[i - 1]) * np.random.randn(sizes[i - 1], sizes[i])
            self.params[f"b{i}"] = np.zeros(sizes[i])
        self.layers = OrderedDict()
        hidden = len(hidden_size_list)
        for i in range(1, hidden + 1):
            self.layers[f"Affine{i}"] = layers.Affine(self.params[f"W{i}"], self.params[f"b{i}"])
            if use_batchnorm:
                self.params[f"gamma{i}"] = np.ones(sizes[i])
                self.params[f"beta{i}"] = np.zeros(sizes[i])
                self.layers[f"BatchNorm{i}"] = layers.BatchNormalization(self.params[f"gamma{i}"],
                                                                         self.params[f"beta{i}"])
            self.layers[f"Activation_function{i}"] = layers.Relu()
            if use_dropout:
                self.layers[f"Dropout{i}"] = layers.Dropout(dropout_ratio)
        last = hidden + 1
        self.layers[f"Affine{last}"] = layers.Affine(self.params[f"W{last}"], self.params[f"b{last}"])
        self.last_layer = layers.SoftmaxWithLoss()

    def predict(self, x, train_flg=False):
        if self.dropout_seed is not None:
            np.random.seed(self.dropout_seed)
        for name, layer in self.layers.items():
            x = layer.forward(x, train_flg) if name.startswith(("Dropout", "BatchNorm")) else layer.forward(x)
        return x

    def loss(self, x, t, train_flg=False):
        return self.last_layer.forward(self.predict(x, train_flg), t)

    def gradient(self, x, t):
        self.loss(x, t, train_flg=True)
        dout = self.last_layer.backward(1)
        for layer in reversed(self.layers.values()):
            dout = layer.backward(dout)
        grads = {}
        for name in self.params:
            kind, i = name.rstrip("0123456789"), name[len(name.rstrip("0123456789")):]
            layer = self.layers[f"BatchNorm{i}" if kind in ("gamma", "beta") else f"Affine{i}"]
            grads[name] = getattr(layer, {"W": "dW", "b": "db", "gamma": "dgamma", "beta": "dbeta"}[kind])
        return grads

    def numerical_gradient(self, x, t):
        return {name: numerical_gradient(lambda: self.loss(x, t, train_flg=True), p)
                for name, p in self.params.items()}


class SimpleConvNet:
    """ch07's network: Convolution, Relu, Pooling(2x2, stride 2), Affine, Relu, Affine, SoftmaxWithLoss."""

    def __init__(self, layers, input_dim=(1, 28, 28), conv_param=None, hidden_size=100, output_size=10,
                 weight_init_std=0.01):
        p = {"filter_num": 30, "filter_size": 5, "pad": 0, "stride": 1, **(conv_param or {})}
        fn, fs, pad, stride = p["filter_num"], p["filter_size"], p["pad"], p["stride"]
        size = input_dim[1]
        conv_out = (size - fs + 2 * pad) // stride + 1
        pool_out = fn * (conv_out // 2) * (conv_out // 2)
        self.params = {
            "W1": weight_init_std * np.random.randn(fn, input_dim[0], fs, fs), "b1": np.zeros(fn),
            "W2": weight_init_std * np.random.randn(pool_out, hidden_size), "b2": np.zeros(hidden_size),
            "W3": weight_init_std * np.random.randn(hidden_size, output_size), "b3": np.zeros(output_size),
        }
        self.layers = OrderedDict([
            ("Conv1", layers.Convolution(self.params["W1"], self.params["b1"], stride, pad)),
            ("Relu1", layers.Relu()),
            ("Pool1", layers.Pooling(pool_h=2, pool_w=2, stride=2)),
            ("Affine1", layers.Affine(self.params["W2"], self.params["b2"])),
            ("Relu2", layers.Relu()),
            ("Affine2", layers.Affine(self.params["W3"], self.params["b3"])),
        ])
        self.last_layer = layers.SoftmaxWithLoss()

    def predict(self, x):
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def loss(self, x, t):
        return self.last_layer.forward(self.predict(x), t)

    def gradient(self, x, t):
        self.loss(x, t)
        dout = self.last_layer.backward(1)
        for layer in reversed(self.layers.values()):
            dout = layer.backward(dout)
        owners = {"1": "Conv1", "2": "Affine1", "3": "Affine2"}
        return {name: getattr(self.layers[owners[name[1]]], "d" + name[0]) for name in self.params}

    def numerical_gradient(self, x, t):
        return {name: numerical_gradient(lambda: self.loss(x, t), p) for name, p in self.params.items()}
