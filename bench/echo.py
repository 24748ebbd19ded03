"""The transport baseline: a bare gRPC echo service (bytes in, the same bytes out), generic handler, no protobuf."""

from __future__ import annotations

from concurrent import futures

import grpc

SERVICE = "bench.Echo"
METHOD = f"/{SERVICE}/Echo"
STREAM_METHOD = f"/{SERVICE}/EchoStream"  # every message of a stream echoed back on it: the Session stream's floor


def _echo(request: bytes, context) -> bytes:
    return request


def _echo_stream(requests, context):
    yield from requests


def start_echo_server(address: str, max_workers: int, options: list) -> tuple[grpc.Server, int]:
    """An echo server with the thread pool and channel options gradserve's server uses."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers), options=options)
    handler = grpc.method_handlers_generic_handler(SERVICE, {
        "Echo": grpc.unary_unary_rpc_method_handler(_echo),
        "EchoStream": grpc.stream_stream_rpc_method_handler(_echo_stream),
    })
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(address)
    server.start()
    return server, port


def echo_callable(channel: grpc.Channel):
    """``call(payload) -> payload`` over ``channel``: bytes pass through untouched on both sides."""
    return channel.unary_unary(METHOD)


class StreamEcho:
    """``echo(payload) -> payload`` as one message and its answer on an open stream (a queue feeds the
    stream's request iterator, as the Session stream's client does)."""

    def __init__(self, channel: grpc.Channel):
        import queue

        self._outbox = queue.SimpleQueue()
        self._call = channel.stream_stream(STREAM_METHOD)(iter(self._outbox.get, None))

    def __call__(self, payload: bytes) -> bytes:
        self._outbox.put(payload)
        return next(self._call)

    def close(self) -> None:
        self._outbox.put(None)
        for _ in self._call:
            pass
