"""Test-only plugin: Twin, a layer with two outputs, loaded through an entry point the tests make (never installed)."""

from __future__ import annotations

from gradserve.plugins import Attr, Layer, hookimpl


class Twin(Layer):
    """lo = x * scale[0] and hi = x * scale[1]."""

    inputs = ("x",)
    outputs = ("lo", "hi")
    attributes = {"scale": Attr("floats", (1.0, 2.0), "the factor of each output")}

    def forward(self, x):
        return x * self.scale[0], x * self.scale[1]

    def backward(self, dlo, dhi):
        dx = sum(d * s for d, s in zip((dlo, dhi), self.scale) if d is not None)
        return (dx,)


@hookimpl
def register_layers(register):
    register(Twin)
