"""The book's optimizers (SGD, Momentum, Nesterov, AdaGrad, RMSprop, Adam), one parameter per update call.

Each update works in place and multiplies by Python floats only, so float32 parameters stay float32.
"""

import numpy as np

from gradserve.plugins import Optimizer

#: Keeps the adaptive methods' denominators off zero (the book's 1e-7).
EPS = 1e-7


class SGD(Optimizer):
    """Plain gradient descent: W <- W - lr * dW."""

    settings = {"lr": 0.01}

    def update(self, param, grad, state, step):
        param -= self.lr * grad


class Momentum(Optimizer):
    """A velocity that remembers past steps: v <- momentum * v - lr * dW; W <- W + v."""

    settings = {"lr": 0.01, "momentum": 0.9}
    state = ("v",)

    def update(self, param, grad, state, step):
        v = state["v"]
        v *= self.momentum
        v -= self.lr * grad
        param += v


class Nesterov(Optimizer):
    """Momentum that looks ahead along its velocity (the book's form): v <- momentum * v - lr * dW;
    W <- W + momentum^2 * v - (1 + momentum) * lr * dW."""

    settings = {"lr": 0.01, "momentum": 0.9}
    state = ("v",)

    def update(self, param, grad, state, step):
        v = state["v"]
        v *= self.momentum
        v -= self.lr * grad
        param += (self.momentum * self.momentum) * v
        param -= ((1.0 + self.momentum) * self.lr) * grad


class AdaGrad(Optimizer):
    """Steps shrink where gradients were large: h <- h + dW^2; W <- W - lr * dW / (sqrt(h) + 1e-7)."""

    settings = {"lr": 0.01}
    state = ("h",)

    def update(self, param, grad, state, step):
        h = state["h"]
        h += grad * grad
        param -= self.lr * grad / (np.sqrt(h) + EPS)


class RMSprop(Optimizer):
    """AdaGrad with a fading memory: h <- decay_rate * h + (1 - decay_rate) * dW^2;
    W <- W - lr * dW / (sqrt(h) + 1e-7)."""

    settings = {"lr": 0.01, "decay_rate": 0.99}
    state = ("h",)

    def update(self, param, grad, state, step):
        h = state["h"]
        h *= self.decay_rate
        h += (1.0 - self.decay_rate) * grad * grad
        param -= self.lr * grad / (np.sqrt(h) + EPS)


class Adam(Optimizer):
    """Moments m and v of the gradient, the bias correction folded into the step size as the book does:
    lr_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t); W <- W - lr_t * m / (sqrt(v) + 1e-7)."""

    settings = {"lr": 0.001, "beta1": 0.9, "beta2": 0.999}
    state = ("m", "v")

    def update(self, param, grad, state, step):
        m, v = state["m"], state["v"]
        lr_t = self.lr * (1.0 - self.beta2 ** step) ** 0.5 / (1.0 - self.beta1 ** step)
        m += (1.0 - self.beta1) * (grad - m)
        v += (1.0 - self.beta2) * (grad * grad - v)
        param -= lr_t * m / (np.sqrt(v) + EPS)


OPTIMIZERS = (SGD, Momentum, Nesterov, AdaGrad, RMSprop, Adam)
