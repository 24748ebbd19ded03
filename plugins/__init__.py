"""The layer plugin API: what a layer author imports (numpy and pluggy only)."""

from gradserve.plugins.hookspecs import hookimpl, hookspec
from gradserve.plugins.layer import Attr, Layer, SchemaError, reduce_to_shape

PROJECT_NAME = "gradserve"

__all__ = ["PROJECT_NAME", "Attr", "Layer", "SchemaError", "hookimpl", "hookspec", "reduce_to_shape"]
