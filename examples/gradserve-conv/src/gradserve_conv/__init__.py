"""gradserve-conv: the book's Convolution and Pooling layers, served by gradserve as a plugin."""

from gradserve.plugins import hookimpl
from gradserve_conv.layers import Convolution, Pooling

__all__ = ["Convolution", "Pooling", "register_layers"]


@hookimpl
def register_layers(register):
    register(Convolution)
    register(Pooling)
