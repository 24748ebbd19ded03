"""Typed exceptions for RPC errors, carrying the status code, the message and the node."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2
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


_BY_CODE = {cls.code: cls for cls in (InvalidArgument, NotFound, FailedPrecondition, ResourceExhausted,
                                      Unauthenticated, PermissionDenied, Cancelled, DeadlineExceeded,
                                      Unavailable, Internal)}


def from_rpc_error(error: grpc.RpcError) -> GradserveError:
    """The typed exception for a failed call, with the node and reason from google.rpc details."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    message = error.details() if hasattr(error, "details") else str(error)
    status = rpc_status.from_call(error) if hasattr(error, "trailing_metadata") else None
    node, reason = _error_info(status.details if status is not None else ())
    cls = _BY_CODE.get(code, GradserveError)
    return cls(message or "", code, node, reason)


_CODE_BY_VALUE = {code.value[0]: code for code in grpc.StatusCode}


def from_status(status) -> GradserveError:
    """The typed exception for a google.rpc.Status a stream answered one message with (code, message, details)."""
    code = _CODE_BY_VALUE.get(status.code, grpc.StatusCode.UNKNOWN)
    node, reason = _error_info(status.details)
    return _BY_CODE.get(code, GradserveError)(status.message, code, node, reason)


def _error_info(details) -> tuple[str | None, str | None]:
    """(node, reason) from the google.rpc.ErrorInfo among a status's details."""
    for detail in details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.metadata.get("node"), info.reason
    return None, None
