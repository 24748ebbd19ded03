"""The book's optimizers (SGD, Momentum, Nesterov, AdaGrad, RMSprop, Adam): update(params, grads) changes numpy
params in place, in the client (a Train stream runs the same rules on the server)."""

from __future__ import annotations

import inspect
from typing import Mapping, MutableMapping

import numpy as np

#: Keeps AdaGrad's and Adam's denominators away from zero, as the book does.
EPS = 1e-7


class Optimizer:
    """Base: ``update(params, grads)`` with the same keys; state (velocities, moments) per key."""

    def update(self, params: MutableMapping[str, np.ndarray], grads: Mapping[str, np.ndarray]) -> None:
        raise NotImplementedError

    @staticmethod
    def _zeros(params) -> dict[str, np.ndarray]:
        return {key: np.zeros_like(value) for key, value in params.items()}

    def __repr__(self) -> str:
        settings = ", ".join(f"{name}={getattr(self, name)}" for name in inspect.signature(type(self)).parameters)
        return f"{type(self).__name__}({settings})"


class SGD(Optimizer):
    """W <- W - lr * dW."""

    def __init__(self, lr: float = 0.01):
        self.lr = lr

    def update(self, params, grads):
        for key in params:
            params[key] -= self.lr * grads[key]


class Momentum(Optimizer):
    """v <- momentum * v - lr * dW; W <- W + v."""

    def __init__(self, lr: float = 0.01, momentum: float = 0.9):
        self.lr = lr
        self.momentum = momentum
        self.v: dict[str, np.ndarray] | None = None

    def update(self, params, grads):
        if self.v is None:
            self.v = self._zeros(params)
        for key in params:
            self.v[key] = self.momentum * self.v[key] - self.lr * grads[key]
            params[key] += self.v[key]


class Nesterov(Optimizer):
    """The book's Nesterov momentum: v <- momentum * v - lr * dW, then W moves by momentum^2 * v less
    (1 + momentum) * lr * dW (the velocity's look-ahead, written in terms of the new velocity)."""

    def __init__(self, lr: float = 0.01, momentum: float = 0.9):
        self.lr = lr
        self.momentum = momentum
        self.v: dict[str, np.ndarray] | None = None

    def update(self, params, grads):
        if self.v is None:
            self.v = self._zeros(params)
        for key in params:
            self.v[key] = self.momentum * self.v[key] - self.lr * grads[key]
            params[key] += self.momentum ** 2 * self.v[key] - (1 + self.momentum) * self.lr * grads[key]


class AdaGrad(Optimizer):
    """h <- h + dW * dW; W <- W - lr * dW / (sqrt(h) + 1e-7)."""

    def __init__(self, lr: float = 0.01):
        self.lr = lr
        self.h: dict[str, np.ndarray] | None = None

    def update(self, params, grads):
        if self.h is None:
            self.h = self._zeros(params)
        for key in params:
            self.h[key] += grads[key] * grads[key]
            params[key] -= self.lr * grads[key] / (np.sqrt(self.h[key]) + EPS)


class RMSprop(Optimizer):
    """h decays: h <- decay_rate * h + (1 - decay_rate) * dW * dW; W <- W - lr * dW / (sqrt(h) + 1e-7)."""

    def __init__(self, lr: float = 0.01, decay_rate: float = 0.99):
        self.lr = lr
        self.decay_rate = decay_rate
        self.h: dict[str, np.ndarray] | None = None

    def update(self, params, grads):
        if self.h is None:
            self.h = self._zeros(params)
        for key in params:
            self.h[key] = self.decay_rate * self.h[key] + (1 - self.decay_rate) * grads[key] ** 2
            params[key] -= self.lr * grads[key] / (np.sqrt(self.h[key]) + EPS)


class Adam(Optimizer):
    """The book's Adam: moments m and v, with the bias correction folded into the step size lr_t."""

    def __init__(self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999):
        self.lr = lr
        self.beta1 = beta1
        self.beta2 = beta2
        self.iter = 0
        self.m: dict[str, np.ndarray] | None = None
        self.v: dict[str, np.ndarray] | None = None

    def update(self, params, grads):
        if self.m is None:
            self.m, self.v = self._zeros(params), self._zeros(params)
        self.iter += 1
        # A Python float, so float32 parameters stay float32 arithmetic.
        lr_t = self.lr * (1.0 - self.beta2**self.iter) ** 0.5 / (1.0 - self.beta1**self.iter)
        for key in params:
            self.m[key] += (1 - self.beta1) * (grads[key] - self.m[key])
            self.v[key] += (1 - self.beta2) * (grads[key] ** 2 - self.v[key])
            params[key] -= lr_t * self.m[key] / (np.sqrt(self.v[key]) + EPS)


OPTIMIZERS = {cls.__name__.lower(): cls for cls in (SGD, Momentum, Nesterov, AdaGrad, RMSprop, Adam)}


def make_optimizer(name: str, **settings) -> Optimizer:
    """An optimizer by (case-insensitive) name: sgd, momentum, nesterov, adagrad, rmsprop, adam."""
    try:
        cls = OPTIMIZERS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}") from None
    return cls(**settings)
