"""What the server's interceptors share: the four kinds of gRPC method handler, and a cache of wrapped handlers."""

from __future__ import annotations

from typing import Callable, NamedTuple

import grpc


class HandlerKind(NamedTuple):
    """One of gRPC's four method shapes: the handler attribute holding its behaviour, and its factory."""

    attribute: str  # "unary_unary", ...
    factory: Callable[..., grpc.RpcMethodHandler]  # grpc.unary_unary_rpc_method_handler, ...


#: (request_streaming, response_streaming) -> the kind of handler.
KINDS = {
    (False, False): HandlerKind("unary_unary", grpc.unary_unary_rpc_method_handler),
    (False, True): HandlerKind("unary_stream", grpc.unary_stream_rpc_method_handler),
    (True, False): HandlerKind("stream_unary", grpc.stream_unary_rpc_method_handler),
    (True, True): HandlerKind("stream_stream", grpc.stream_stream_rpc_method_handler),
}


def kind_of(handler: grpc.RpcMethodHandler | None) -> HandlerKind:
    """The kind of ``handler`` (unary-unary for None: a method the server does not have)."""
    if handler is None:
        return KINDS[False, False]
    return KINDS[bool(handler.request_streaming), bool(handler.response_streaming)]


def rewrapped(handler: grpc.RpcMethodHandler, behavior, request_deserializer=None) -> grpc.RpcMethodHandler:
    """A handler of ``handler``'s kind and serializers running ``behavior`` (and ``request_deserializer``,
    when given, instead of its own)."""
    return kind_of(handler).factory(
        behavior,
        request_deserializer=request_deserializer or handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class HandlerCache:
    """Each method's wrapped handler, made once by ``wrap(method, handler)``: grpc asks every interceptor for a
    handler on every call, and building one (with its closures) cost more than the rest of an interceptor's work.

    A handler the continuation returns anew (another interceptor's, or a server reconfigured) is wrapped anew.
    """

    def __init__(self, wrap: Callable[[str, grpc.RpcMethodHandler], grpc.RpcMethodHandler]):
        self._wrap = wrap
        # Two threads may both wrap a new method once; the last one's entry stays (a dict store is atomic).
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def get(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """The wrapped form of ``handler``, the handler of ``method``."""
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped
