"""A server interceptor that answers INVALID_ARGUMENT to requests whose bytes do not parse.

grpc answers INTERNAL ("Exception deserializing request!") when a request's bytes are not a valid
message, which blames the server for the caller's mistake. This interceptor parses leniently and ends
such calls with INVALID_ARGUMENT naming the message type, for every service on the server (health too).
Register it last, so that authentication and metrics interceptors see the call first.
"""

from __future__ import annotations

import grpc

from gradserve.server.rpc.interceptors import HandlerCache, kind_of, rewrapped


class _Undecodable:
    """Stands in for a request whose bytes did not parse, carrying why and the status to answer with."""

    __slots__ = ("code", "message")

    def __init__(self, message: str, code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT):
        self.code = code
        self.message = message


def _lenient(deserializer, method: str):
    message_type = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
    what = message_type.full_name if message_type is not None else f"request for {method}"

    def deserialize(data: bytes):
        try:
            return deserializer(data)
        except MemoryError:  # valid or not, the request is more than this server can hold (see --max-memory)
            return _Undecodable(f"reading the {what} needs more memory than the server has ({len(data)} bytes)",
                                grpc.StatusCode.RESOURCE_EXHAUSTED)
        except Exception as exc:  # noqa: BLE001 - any parse failure is the caller's bytes, not our bug
            return _Undecodable(f"the request is not a valid {what} message ({type(exc).__name__}: {exc})")

    return deserialize


def _reject(context: grpc.ServicerContext, request: _Undecodable):
    context.abort(request.code, request.message)


def _checked_stream(requests, context):
    for request in requests:
        if isinstance(request, _Undecodable):
            _reject(context, request)
        yield request


def _wrap(behavior, request_streaming: bool):
    if request_streaming:
        return lambda requests, context: behavior(_checked_stream(requests, context), context)

    def unary(request, context):
        if isinstance(request, _Undecodable):
            _reject(context, request)
        return behavior(request, context)

    return unary


class RejectUndecodable(grpc.ServerInterceptor):
    """Turn grpc's INTERNAL for an unparseable request into INVALID_ARGUMENT."""

    def __init__(self):
        self._handlers = HandlerCache(_lenient_handler)

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        return self._handlers.get(handler_call_details.method, handler)


def _lenient_handler(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """``handler`` with a deserializer that never raises, and a behaviour that rejects what did not parse."""
    behavior = getattr(handler, kind_of(handler).attribute)
    return rewrapped(handler, _wrap(behavior, handler.request_streaming),
                     request_deserializer=_lenient(handler.request_deserializer, method))
