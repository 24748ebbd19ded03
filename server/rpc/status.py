"""Engine errors -> gRPC status codes, with google.rpc details naming the node."""

from __future__ import annotations

import logging

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from gradserve.proto.tensors import TensorError
from gradserve.server.engine import errors
from gradserve.server.engine.execute import LayerContractError
from gradserve.server.service.stream_sessions import ShuttingDownError

_LOGGER = logging.getLogger(__name__)

ERROR_DOMAIN = "gradserve.dev"
#: The longest status message sent: gRPC puts it in a header, and a client's header limit is 8 KiB by default.
MAX_MESSAGE_CHARS = 2048

# Most specific first: the first matching class decides the code.
_CODES: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (ShuttingDownError, grpc.StatusCode.UNAVAILABLE),
    (errors.UnknownOpError, grpc.StatusCode.NOT_FOUND),
    (errors.UnknownGraphError, grpc.StatusCode.NOT_FOUND),
    (errors.SessionExpiredError, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.SessionError, grpc.StatusCode.NOT_FOUND),
    (errors.LimitError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.DeadlineError, grpc.StatusCode.DEADLINE_EXCEEDED),
    (errors.CancelledError, grpc.StatusCode.CANCELLED),
    (LayerContractError, grpc.StatusCode.INTERNAL),
    (errors.EngineError, grpc.StatusCode.INVALID_ARGUMENT),
    (TensorError, grpc.StatusCode.INVALID_ARGUMENT),
)


def status_for(exc: Exception) -> status_pb2.Status:
    """The google.rpc.Status for an exception a request caused (INTERNAL for anything unexpected)."""
    if isinstance(exc, MemoryError):  # outside a layer (reading or writing tensors): as the engine reports a layer's
        exc = errors.LimitError("the call needs more memory than the server has" + (f": {exc}" if str(exc) else ""))
    code = next((c for cls, c in _CODES if isinstance(exc, cls)), grpc.StatusCode.INTERNAL)
    node = getattr(exc, "node", None)
    message = str(exc)
    if code is grpc.StatusCode.INTERNAL and not isinstance(exc, LayerContractError):
        message = f"internal error ({type(exc).__name__}: {exc}); the server logged it"
    message = bounded(message)
    info = error_details_pb2.ErrorInfo(reason=type(exc).__name__, domain=ERROR_DOMAIN)
    if node:
        info.metadata["node"] = bounded(node, 200)
    detail = any_pb2.Any()
    detail.Pack(info)
    return status_pb2.Status(code=code.value[0], message=message, details=[detail])


def bounded(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``message`` cut to ``limit`` characters, saying how much was cut (the start and the end say most)."""
    if len(message) <= limit:
        return message
    cut = len(message) - limit
    note = f" [... {cut} characters cut ...] "
    keep = limit - len(note)
    return message[:keep - keep // 4] + note + message[len(message) - keep // 4:]


def abort(context: grpc.ServicerContext, exc: Exception) -> None:
    """End the call with the status for ``exc`` (raises, as context.abort does)."""
    status = status_for(exc)
    if status.code == code_pb2.INTERNAL:
        _LOGGER.error("internal error", exc_info=exc)
    context.abort_with_status(rpc_status.to_status(status))
