"""gradserve-conv: layers for convolutional networks that gradserve does not build in (Maxout, Snake)."""

from gradserve.plugins import hookimpl
from gradserve_conv.layers import Maxout, Snake

__all__ = ["Maxout", "Snake", "register_layers"]


@hookimpl
def register_layers(register):
    register(Maxout)
    register(Snake)
