"""The book's layer classes, running on a gradserve server: change only the import line.

    from gradserve.client.book import MulLayer, AddLayer, Relu, Sigmoid, Affine, SoftmaxWithLoss
    from gradserve.client.book import Dropout, BatchNormalization, Convolution, Pooling

Constructors, methods and the attributes the book's code reads (``.W``, ``.dW``, ``.gamma``, ``.dgamma``,
``running_mean``, ``.mask`` ...) are the book's. Dropout draws its mask from numpy's global generator on the
client, as the book's does, so a seeded script gives the book's numbers.

They use a default client: the server at GRADSERVE_TARGET, else an embedded
server started on first use; ``set_client()`` chooses another.
"""

from __future__ import annotations

import atexit
import os
import threading

import numpy as np

from gradserve.client.connection import Client, connect

_default: Client | None = None
_lock = threading.Lock()


def set_client(client: Client | None) -> None:
    """Make ``client`` the one the book's layers use (None: back to the default)."""
    global _default
    with _lock:
        _default = client


def get_client() -> Client:
    global _default
    with _lock:
        if _default is None:
            _default = connect(os.environ.get("GRADSERVE_TARGET") or None)
            _close_at_exit(_default)
        return _default


def _close_at_exit(client: Client) -> None:
    """Close ``client`` as the interpreter exits, before it joins thread-pool threads: an embedded server's
    thread still serving this client's open Session stream would otherwise hold the exit until the stream's
    idle bound (concurrent.futures joins its workers from the same private hook, run last-registered first)."""
    register = getattr(threading, "_register_atexit", atexit.register)
    register(client.close)


def _remote(op: str, **attrs):
    return get_client().layer_class(op)(**attrs)


class _Binary:
    op = ""

    def __init__(self):
        self._layer = _remote(self.op)

    def forward(self, x, y):
        return self._layer.forward(x, y)

    def backward(self, dout):
        return self._layer.backward(dout)


class MulLayer(_Binary):
    """out = x * y; backward returns (dx, dy)."""

    op = "Mul"


class AddLayer(_Binary):
    """out = x + y; backward returns (dx, dy)."""

    op = "Add"


class _Unary:
    op = ""

    def __init__(self):
        self._layer = _remote(self.op)

    def forward(self, x):
        return self._layer.forward(x)

    def backward(self, dout):
        (dx,) = self._layer.backward(dout)
        return dx


class Relu(_Unary):
    """max(x, 0); backward returns dx. ``.mask`` marks x <= 0, as the book's."""

    op = "Relu"

    def __init__(self):
        super().__init__()
        self.mask = None

    def forward(self, x):
        self.mask = np.asarray(x) <= 0
        return super().forward(x)


class Sigmoid(_Unary):
    """1 / (1 + exp(-x)); backward returns dx. ``.out`` is forward's result, as the book's."""

    op = "Sigmoid"

    def __init__(self):
        super().__init__()
        self.out = None

    def forward(self, x):
        self.out = super().forward(x)
        return self.out


class Affine:
    """x @ W + b; backward returns dx and sets self.dW and self.db."""

    def __init__(self, W, b):
        self.W = W
        self.b = b
        self.x = None
        self.original_x_shape = None
        self.dW = None
        self.db = None
        self._layer = _remote("Affine")

    def forward(self, x):
        self.original_x_shape = shape = np.shape(x)
        self.x = np.reshape(x, (shape[0], int(np.prod(shape[1:], dtype=np.int64)))) if shape else x
        return self._layer.forward(x, self.W, self.b)

    def backward(self, dout):
        dx, self.dW, self.db = self._layer.backward(dout)
        return dx


class SoftmaxWithLoss:
    """Softmax and cross-entropy loss against labels t (indices, one-hot or soft); backward(dout=1) returns dx.

    dx is the book's: (y - t) / N. With soft labels the loss is their cross-entropy -sum(t * log y) / N, the
    loss that dx is the gradient of (the book's cross_entropy_error scores their argmax instead).
    """

    def __init__(self):
        self.loss = None
        self.t = None
        self._x = None
        self._layer = _remote("SoftmaxWithLoss")

    @property
    def y(self):
        """softmax(x) of the last forward, as the book keeps it (computed here: the server returns the loss)."""
        if self._x is None:
            return None
        x = np.asarray(self._x, dtype=np.float64)
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    def forward(self, x, t):
        self._x, self.t = x, t
        self.loss = self._layer.forward(x, t)
        return self.loss

    def backward(self, dout=1):
        dx, _ = self._layer.backward(dout)
        return dx


class Dropout:
    """The book's Dropout: forward(x, train_flg=True) drops units at random in training, scales otherwise.

    The mask is drawn here, np.random.rand(*x.shape) > dropout_ratio as the book draws it, and sent with x.
    """

    def __init__(self, dropout_ratio=0.5):
        self.dropout_ratio = dropout_ratio
        self.mask = None
        self._apply_mask = _remote("Mul")
        self._scale = _remote("Dropout", ratio=float(dropout_ratio))
        self._layer = None

    def forward(self, x, train_flg=True):
        if train_flg:
            self.mask = np.random.rand(*np.shape(x)) > self.dropout_ratio
            self._layer = self._apply_mask
            return self._layer.forward(x, self.mask.astype(np.result_type(np.asarray(x).dtype, np.float32)))
        self._layer = self._scale
        self._layer.training = False
        return self._layer.forward(x)

    def backward(self, dout):
        return self._layer.backward(dout)[0]


class BatchNormalization:
    """The book's BatchNormalization(gamma, beta, momentum, running_mean, running_var) over flattened features.

    forward(x, train_flg=True) normalizes with the batch's statistics and updates running_mean and
    running_var in training, uses them otherwise; backward returns dx and sets dgamma and dbeta.
    """

    def __init__(self, gamma, beta, momentum=0.9, running_mean=None, running_var=None):
        self.gamma = gamma
        self.beta = beta
        self.momentum = momentum
        self.input_shape = None
        self.running_mean = running_mean
        self.running_var = running_var
        self.batch_size = None
        self.dgamma = None
        self.dbeta = None
        self._layer = _remote("BatchNormalization", momentum=float(momentum))

    def forward(self, x, train_flg=True):
        x = np.asarray(x)
        self.input_shape = x.shape
        features = int(np.prod(x.shape[1:], dtype=np.int64))
        if self.running_mean is None:
            self.running_mean = np.zeros(features)
            self.running_var = np.zeros(features)
        self.batch_size = x.shape[0]
        self._layer.training = bool(train_flg)
        out, running_mean, running_var = self._layer.forward(x, self.gamma, self.beta, self.running_mean,
                                                             self.running_var)
        if train_flg:
            self.running_mean, self.running_var = running_mean, running_var
        return out

    def backward(self, dout):
        dx, self.dgamma, self.dbeta, _, _ = self._layer.backward(dout)
        return dx


class Convolution:
    """The book's Convolution(W, b, stride=1, pad=0) over images (N, C, H, W); backward sets dW and db."""

    def __init__(self, W, b, stride=1, pad=0):
        self.W = W
        self.b = b
        self.stride = stride
        self.pad = pad
        self.x = None
        self.dW = None
        self.db = None
        self._layer = _remote("Convolution", strides=[int(stride)] * 2, pads=[int(pad)] * 4)

    def forward(self, x):
        self.x = x
        return self._layer.forward(x, self.W, self.b)

    def backward(self, dout):
        dx, self.dW, self.db = self._layer.backward(dout)
        return dx


class Pooling:
    """The book's (max) Pooling(pool_h, pool_w, stride=1, pad=0) over images (N, C, H, W).

    One difference: padding never wins a window's max here (the book pads with zeros, which beat negative
    values); with pad=0, as the book's networks use it, the numbers are the book's.
    """

    def __init__(self, pool_h, pool_w, stride=1, pad=0):
        self.pool_h = pool_h
        self.pool_w = pool_w
        self.stride = stride
        self.pad = pad
        self.x = None
        self._layer = _remote("Pooling", mode="max", kernel_shape=[int(pool_h), int(pool_w)],
                              strides=[int(stride)] * 2, pads=[int(pad)] * 4)

    def forward(self, x):
        self.x = x
        return self._layer.forward(x)

    def backward(self, dout):
        (dx,) = self._layer.backward(dout)
        return dx
