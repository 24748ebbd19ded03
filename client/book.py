"""The book's layer classes, running on a gradserve server: change only the import line.

    from gradserve.client.book import MulLayer, AddLayer, Relu, Sigmoid, Affine, SoftmaxWithLoss

They use a default client: the server at GRADSERVE_TARGET, else an embedded
server started on first use; ``set_client()`` chooses another.
"""

from __future__ import annotations

import atexit
import os
import threading

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
            atexit.register(_default.close)
        return _default


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
    """max(x, 0); backward returns dx."""

    op = "Relu"


class Sigmoid(_Unary):
    """1 / (1 + exp(-x)); backward returns dx."""

    op = "Sigmoid"


class Affine:
    """x @ W + b; backward returns dx and sets self.dW and self.db."""

    def __init__(self, W, b):
        self.W = W
        self.b = b
        self.dW = None
        self.db = None
        self._layer = _remote("Affine")

    def forward(self, x):
        return self._layer.forward(x, self.W, self.b)

    def backward(self, dout):
        dx, self.dW, self.db = self._layer.backward(dout)
        return dx


class SoftmaxWithLoss:
    """Softmax and cross-entropy loss against labels t; backward(dout=1) returns dx."""

    def __init__(self):
        self.loss = None
        self._layer = _remote("SoftmaxWithLoss")

    def forward(self, x, t):
        self.loss = self._layer.forward(x, t)
        return self.loss

    def backward(self, dout=1):
        dx, _ = self._layer.backward(dout)
        return dx


class Dropout:
    """The book's Dropout: forward(x, train_flg=True) drops units at random in training."""

    def __init__(self, dropout_ratio=0.5):
        self._layer = _remote("Dropout", ratio=float(dropout_ratio))

    def forward(self, x, train_flg=True):
        self._layer.training = train_flg
        return self._layer.forward(x)

    def backward(self, dout):
        (dx,) = self._layer.backward(dout)
        return dx
