"""gradserve's built-in layers and optimizers, registered through our own entry point like any plugin.

Each module groups one family of layers and lists them in its own ``LAYERS``; a new module joins ``MODULES``.
"""

from gradserve.plugins import hookimpl
from gradserve.plugins.builtin import (activations, arithmetic, convolution, elementwise, network, normalization,
                                       onnx_ops, optimizers, reductions, shaping, tensors)

MODULES = (arithmetic, activations, elementwise, reductions, shaping, tensors, network, normalization, convolution,
           onnx_ops)


@hookimpl
def register_layers(register):
    for module in MODULES:
        for layer in module.LAYERS:
            register(layer)


@hookimpl
def register_optimizers(register):
    for optimizer in optimizers.OPTIMIZERS:
        register(optimizer)
