"""Central differences: the numerical gradient that backprop is checked against.

CheckGradients (the server's engine) and the conformance kit (gradserve.testing, which must run without the
server) both use it, and a layer author may too: it lives with the layer API, numpy only.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def central_differences(loss: Callable[[np.ndarray], "float | np.ndarray"], x: np.ndarray, eps: float,
                        positions=None) -> np.ndarray:
    """(loss(x + eps) - loss(x - eps)) / (2 eps), ``x`` bumped at one flat position at a time.

    ``positions`` are flat indices into ``x`` (default: all of them, in order). ``loss`` is called with an
    array of ``x``'s dtype and shape, bumped at one element (one private copy, restored after each element),
    and may return a number or a vector (one loss per row). The result has one column per position: shape
    ``(len(positions),)``, or ``(len(loss), len(positions))`` for a vector loss, in float64.
    """
    work = np.array(x, copy=True)
    flat = work.reshape(-1)  # a view: bumping it bumps ``work``
    columns = []
    for p in range(flat.size) if positions is None else positions:
        original = flat[p]
        flat[p] = original + eps
        plus = np.asarray(loss(work), dtype=np.float64)
        flat[p] = original - eps
        minus = np.asarray(loss(work), dtype=np.float64)
        flat[p] = original
        columns.append((plus - minus) / (2 * eps))
    if not columns:
        return np.zeros((0,))
    return np.stack(columns, axis=-1)
