"""The chapter's TwoLayerNet (Affine, Relu, Affine, SoftmaxWithLoss) written out in numpy: the reference."""

from __future__ import annotations

import numpy as np


def two_layer_net(params, x, t) -> tuple[float, np.ndarray, dict[str, np.ndarray]]:
    """Loss, scores and the gradients of x, W1, b1, W2 and b2, for integer labels ``t``."""
    h = x @ params["W1"] + params["b1"]
    r = np.maximum(h, 0)
    s = r @ params["W2"] + params["b2"]
    e = np.exp(s - s.max(axis=1, keepdims=True))
    y = e / e.sum(axis=1, keepdims=True)
    n = len(t)
    loss = -np.log(y[np.arange(n), t]).mean()
    ds = y.copy()
    ds[np.arange(n), t] -= 1
    ds /= n
    dh = (ds @ params["W2"].T) * (h > 0)
    grads = {"x": dh @ params["W1"].T, "W1": x.T @ dh, "b1": dh.sum(0), "W2": r.T @ ds, "b2": ds.sum(0)}
    return loss, s, grads
