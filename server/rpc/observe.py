"""One interceptor that logs every call (method, graph id, status, duration) and counts it in the metrics."""

from __future__ import annotations

import functools
import logging
import time

import grpc

from gradserve.proto import gradserve_pb2 as pb
from gradserve.server.rpc.interceptors import HandlerCache, rewrapped
from gradserve.server.runtime.metrics import Metrics

#: The request log; `gradserve serve --log-json` turns its lines (and all others) into JSON.
REQUEST_LOGGER = logging.getLogger("gradserve.requests")

#: Probes call these every few seconds: counted, but logged at DEBUG only, so they do not drown the log.
QUIET_SERVICES = frozenset({"grpc.health.v1.Health"})


class RequestObserver(grpc.ServerInterceptor):
    """Time each unary call, then log one line and record it in ``metrics`` (when metrics are on).

    Streaming calls (health Watch, reflection) pass through unobserved: their duration is a
    subscription's lifetime, not a request's.
    """

    def __init__(self, metrics: Metrics | None = None):
        self.metrics = metrics
        self._handlers = HandlerCache(self._wrap)

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler.request_streaming or handler.response_streaming:
            return handler
        return self._handlers.get(handler_call_details.method, handler)

    def _wrap(self, name: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        service, _, method = name.lstrip("/").rpartition("/")
        return rewrapped(handler, self._observed(handler.unary_unary, service, method))

    def _observed(self, behavior, service: str, method: str):
        metrics = self.metrics
        level = logging.DEBUG if service in QUIET_SERVICES else logging.INFO

        def observed(request, context):
            if metrics is None and not REQUEST_LOGGER.isEnabledFor(level):
                return behavior(request, context)  # nothing to record: no timing, no status lookups
            start = time.perf_counter()
            response = None
            raised = False
            if metrics is not None:
                metrics.in_flight.inc()
            try:
                response = behavior(request, context)
                return response
            except BaseException:
                raised = True
                raise
            finally:
                seconds = time.perf_counter() - start
                code = _code(context, raised)
                if metrics is not None:
                    metrics.in_flight.dec()
                    metrics.requests.labels(service, method, code).inc()
                    metrics.latency.labels(service, method).observe(seconds)
                _log(level, method, request, response, code, seconds, context)

        return observed


def _code(context: grpc.ServicerContext, raised: bool) -> str:
    """The status the caller gets (or would have got, had it not gone away)."""
    code = context.code()
    if code is not None:
        return code.name
    if raised:  # an exception without abort(): grpc answers UNKNOWN
        return "UNKNOWN"
    return "OK" if context.is_active() else "CANCELLED"


def _log(level: int, method: str, request, response, code: str, seconds: float,
         context: grpc.ServicerContext) -> None:
    if not REQUEST_LOGGER.isEnabledFor(level):
        return
    graph_id = _graph_id(request, response)
    # A session id lets its holder call Backward: log a prefix, enough to follow one session's calls.
    session_id = (getattr(response, "session_id", "") or getattr(request, "session_id", ""))[:8]
    fields = {"method": method, "graph_id": graph_id, "code": code, "duration_ms": round(seconds * 1000, 3),
              "peer": context.peer()}
    text = f"{method} graph={graph_id or '-'} code={code} {fields['duration_ms']:.1f}ms peer={fields['peer']}"
    if session_id:
        fields["session_id"] = session_id
        text += f" session={session_id}"
    # Written once the answer is on its way (gRPC calls back when the call ends), not before it: formatting
    # and writing the line took 60 to 120 µs of a tiny Run's p50. A call already over logs at once.
    write = functools.partial(REQUEST_LOGGER.log, level, text, extra=fields)
    if not context.add_callback(write):
        write()


def _graph_id(request, response) -> str:
    """The graph a call concerns: the id the server answered with, else the id or name the request gave."""
    answered = getattr(response, "graph_id", "")
    if answered:
        return answered
    ref = getattr(request, "graph", None)
    if isinstance(ref, pb.GraphRef) and ref.WhichOneof("ref") in ("graph_id", "name"):
        return getattr(ref, ref.WhichOneof("ref"))
    return getattr(request, "model_name", "") or ""  # KServe calls name their graph as a model
