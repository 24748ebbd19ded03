"""gradserve's Python client: build graphs offline, run them remotely, get numpy outputs and gradients."""

from gradserve.client.connection import Client, GradientCheck, LayerInfo, LayerList, Result, Session, connect
from gradserve.client.errors import (
    ArgumentTypeError,
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    GradserveError,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from gradserve.client.graph import Graph, Value

__all__ = [
    "ArgumentTypeError", "Cancelled", "Client", "DeadlineExceeded", "FailedPrecondition", "GradientCheck",
    "GradserveError", "Graph", "Internal", "InvalidArgument", "LayerInfo", "LayerList", "NotFound", "PermissionDenied",
    "ResourceExhausted", "Result", "Session", "Unauthenticated", "Unavailable", "Value", "connect",
]
