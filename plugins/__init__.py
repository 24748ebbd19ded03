"""The plugin API: what a layer or optimizer author imports (numpy and pluggy only)."""

from gradserve.plugins.hookspecs import hookimpl, hookspec
from gradserve.plugins.layer import Attr, Layer, SchemaError, reduce_to_shape
from gradserve.plugins.optimizer import Optimizer

PROJECT_NAME = "gradserve"

__all__ = ["PROJECT_NAME", "Attr", "Layer", "Optimizer", "SchemaError", "hookimpl", "hookspec", "reduce_to_shape"]
