"""Typed exceptions for RPC errors, carrying the status code, the message and the node."""

from __future__ import annotations

from collections.abc import Mapping

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status


class GradserveError(Exception):
    """An error the server reported: ``code`` (grpc.StatusCode), ``message``, and ``node`` when one is to blame."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, code: grpc.StatusCode | None = None, node: str | None = None,
                 reason: str | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.node = node
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class InvalidArgument(GradserveError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class ArgumentTypeError(InvalidArgument, TypeError):
    """A call was given an argument of the wrong type (``argument`` names it); the client sent nothing."""

    def __init__(self, message: str, argument: str):
        super().__init__(message)
        self.argument = argument

    def __str__(self) -> str:  # no status code: no server was asked
        return self.message


def check_mapping(argument: str, value, required: bool = False):
    """``value`` if it maps names to arrays (None: an empty one, unless ``required``); else ArgumentTypeError."""
    if value is None and not required:
        return {}
    if not isinstance(value, Mapping):
        text = repr(value)
        raise ArgumentTypeError(f"{argument} must be a mapping of names to arrays, such as {{'x': np.ones(3)}}; "
                                f"got {type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}",
                                argument=argument)
    return value


class NotFound(GradserveError):
    code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(GradserveError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(GradserveError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unauthenticated(GradserveError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(GradserveError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Cancelled(GradserveError):
    code = grpc.StatusCode.CANCELLED


class DeadlineExceeded(GradserveError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unavailable(GradserveError):
    code = grpc.StatusCode.UNAVAILABLE


class Internal(GradserveError):
    code = grpc.StatusCode.INTERNAL


class ServerShuttingDown(Unavailable):
    """The server is going away (SIGTERM) and ended the session stream: open a new session (another replica)."""


class StreamBroken(GradserveError):
    """A session stream ended or answered out of turn; the session it held is gone (open a new one)."""


_BY_CODE = {cls.code: cls for cls in (InvalidArgument, NotFound, FailedPrecondition, ResourceExhausted,
                                      Unauthenticated, PermissionDenied, Cancelled, DeadlineExceeded,
                                      Unavailable, Internal)}


def from_rpc_error(error: grpc.RpcError) -> GradserveError:
    """The typed exception for a failed call, with the node and reason from google.rpc details."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    message = error.details() if hasattr(error, "details") else str(error)
    status = rpc_status.from_call(error) if hasattr(error, "trailing_metadata") else None
    return _typed(code, message or "", status)


def from_status(status: status_pb2.Status) -> GradserveError:
    """The typed exception for a google.rpc.Status (a Session stream's answer to a step that failed)."""
    code = _CODE_OF.get(status.code, grpc.StatusCode.UNKNOWN)
    return _typed(code, status.message, status)


_CODE_OF = {code.value[0]: code for code in grpc.StatusCode}
_BY_REASON = {"ShuttingDownError": ServerShuttingDown}
_SHUTTING_DOWN = "the server is shutting down"  # how the server's message for it begins


def _typed(code: grpc.StatusCode, message: str, status: status_pb2.Status | None) -> GradserveError:
    node = reason = None
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason = info.reason
                node = info.metadata.get("node")
    cls = _BY_REASON.get(reason) or _BY_CODE.get(code, GradserveError)
    if cls is Unavailable and _SHUTTING_DOWN in message:  # a stream the server ended from outside its handler
        cls = ServerShuttingDown
    return cls(message, code, node, reason)
