"""The transport baseline: a bare gRPC echo service (bytes in, the same bytes out), generic handler, no protobuf."""

from __future__ import annotations

from concurrent import futures

import grpc

SERVICE = "bench.Echo"
METHOD = f"/{SERVICE}/Echo"


def _echo(request: bytes, context) -> bytes:
    return request


def start_echo_server(address: str, max_workers: int, options: list) -> tuple[grpc.Server, int]:
    """An echo server with the thread pool and channel options gradserve's server uses."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers), options=options)
    handler = grpc.method_handlers_generic_handler(SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(_echo)})
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(address)
    server.start()
    return server, port


def echo_callable(channel: grpc.Channel):
    """``call(payload) -> payload`` over ``channel``: bytes pass through untouched on both sides."""
    return channel.unary_unary(METHOD)
