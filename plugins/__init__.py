"""The layer plugin API: what a layer author imports (numpy and pluggy only)."""

from gradserve.plugins.hookspecs import hookimpl, hookspec
from gradserve.plugins.layer import (Attr, Layer, SchemaError, TensorType, elementwise_types, probe_dtypes,
                                     reduce_to_shape, reshaped)

PROJECT_NAME = "gradserve"

__all__ = ["PROJECT_NAME", "Attr", "Layer", "SchemaError", "TensorType", "elementwise_types", "hookimpl", "hookspec",
           "probe_dtypes", "reduce_to_shape", "reshaped"]
