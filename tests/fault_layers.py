"""Test-only layers for the fault tests, loaded through an entry point the tests make (never installed)."""

from __future__ import annotations

import threading
import time

import numpy as np

from gradserve.plugins import Attr, Layer, hookimpl

_lock = threading.Lock()
_entered = {"forward": 0, "backward": 0}


def entered(what: str) -> int:
    """How many Nap nodes have started ``what`` ("forward" or "backward") since the last reset()."""
    with _lock:
        return _entered[what]


def reset() -> None:
    with _lock:
        for key in _entered:
            _entered[key] = 0


def _enter(what: str) -> None:
    with _lock:
        _entered[what] += 1


class Nap(Layer):
    """Identity that sleeps first (forward_seconds, backward_seconds), counting the nodes that started."""

    inputs = ("x",)
    attributes = {
        "forward_seconds": Attr("float", 0.02, "sleep before forward returns"),
        "backward_seconds": Attr("float", 0.0, "sleep before backward returns"),
    }

    def forward(self, x):
        _enter("forward")
        time.sleep(self.forward_seconds)
        return x

    def backward(self, dout):
        _enter("backward")
        time.sleep(self.backward_seconds)
        return (dout,)


class ToComplex(Layer):
    """x as complex128: a dtype the wire cannot carry, so the server cannot send this output back."""

    inputs = ("x",)

    def forward(self, x):
        return x.astype(np.complex128)

    def backward(self, dout):
        return (dout.real,)


@hookimpl
def register_layers(register):
    register(Nap)
    register(ToComplex)
