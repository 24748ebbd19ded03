"""Build and start a gRPC server with the GradServe, KServe v2, health and reflection services: start_server()."""

from __future__ import annotations

import logging
import threading
from concurrent import futures
from dataclasses import dataclass, field, replace

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from gradserve.proto import gradserve_pb2 as pb
from gradserve.proto import message_size_options
from gradserve.server.rpc import kserve_servicer as kserve
from gradserve.server.rpc.streams import StreamGuard
from gradserve.server.rpc.undecodable import RejectUndecodable
from gradserve.server.service.limits import Limits
from gradserve.server.runtime.malloc import Trimmer
from gradserve.server.runtime.memory_cap import MemoryBudget, current_cap, format_size
from gradserve.server.runtime.metrics import Metrics
from gradserve.server.rpc.observe import RequestObserver
from gradserve.server.service.registry import Registry, load_registry
from gradserve.server.rpc.auth import TokenAuth, server_credentials
from gradserve.server.service.operations import Service
from gradserve.server.rpc.gradserve_servicer import GradServeServicer, add_to_server

_LOGGER = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GradServe"].full_name


@dataclass
class ServerOptions:
    """How to run the server; every field has a CLI flag."""

    limits: Limits = field(default_factory=Limits)
    max_workers: int = 16
    graph_store: str | None = None
    reuse_port: bool = False
    tls_cert: bytes | None = None  # PEM; with tls_key, the server speaks TLS only
    tls_key: bytes | None = None
    tls_client_ca: bytes | None = None  # PEM; set: mutual TLS, clients must show a certificate it signed
    tokens: tuple[str, ...] = ()  # bearer tokens accepted; empty: no token needed
    metrics_port: int | None = None  # None: no metrics at all; 0: serve them on a free port
    metrics_host: str = "127.0.0.1"
    # Seconds before the server asks a client to reconnect (gRPC GOAWAY); calls under way get the grace to finish.
    # A reconnecting round_robin client resolves the name again, so it sees replicas added since. None: never.
    max_connection_age: float | None = None
    max_connection_age_grace: float = 10.0
    # Give the heap's free memory back once a burst of large calls is over (server/runtime/malloc.py).
    trim_memory: bool = True


@dataclass
class Running:
    """A started server and the parts a caller may need (tests, CLI, embedded mode)."""

    server: grpc.Server
    port: int
    service: Service
    health: health.HealthServicer
    executor: futures.ThreadPoolExecutor
    metrics: Metrics | None = None
    metrics_port: int | None = None
    streams: StreamGuard | None = None
    budget: MemoryBudget | None = None  # None: the process runs uncapped

    def stop(self, grace: float | None = None) -> None:
        """Health goes NOT_SERVING, new calls are refused, in-flight ones get ``grace`` seconds; Session
        streams end with UNAVAILABLE (the server is going away): at once when waiting, else after their step."""
        self.health.enter_graceful_shutdown()
        self.service.streams.shut_down()
        self.server.stop(grace).wait()
        self.executor.shutdown(wait=True)
        if self.streams is not None:
            self.streams.stop()
        if self.metrics is not None:
            self.metrics.stop()


def channel_options(limits: Limits) -> list[tuple[str, int]]:
    return message_size_options(limits.max_message_bytes)


def connection_age_options(options: ServerOptions) -> list[tuple[str, int]]:
    """gRPC's server options for ``max_connection_age`` (none when it is unset)."""
    if not options.max_connection_age:
        return []
    return [("grpc.max_connection_age_ms", round(options.max_connection_age * 1000)),
            ("grpc.max_connection_age_grace_ms", round(options.max_connection_age_grace * 1000))]


def start_server(address: str = "127.0.0.1:0", registry: Registry | None = None,
                 options: ServerOptions | None = None) -> Running:
    """Build the server, bind ``address`` (port 0 picks a free one) and start it; stop it with ``Running.stop``."""
    options = options or ServerOptions()
    registry = registry if registry is not None else load_registry()
    credentials = server_credentials(options.tls_cert, options.tls_key, options.tls_client_ca)
    metrics = Metrics(registry) if options.metrics_port is not None else None
    executor = futures.ThreadPoolExecutor(max_workers=options.max_workers, thread_name_prefix="gradserve")
    budget = None
    cap = current_cap()
    if cap is not None:
        _start_threads(executor, options.max_workers)  # their stacks now, before the budget is measured
        budget = MemoryBudget.under_cap(cap)
        options = replace(options, limits=capped_limits(options.limits, budget.total, options.max_workers))
        _LOGGER.info("memory budget for calls and sessions: %s of the %s cap (sessions up to %s, messages up to "
                     "%s; bigger tensors go in streams)", format_size(budget.total), format_size(cap),
                     format_size(options.limits.max_session_bytes), format_size(options.limits.max_message_bytes))
    service = Service(registry, options.limits, options.graph_store,
                      observe=metrics.observe_layer if metrics is not None else None)
    if budget is not None:
        budget = MemoryBudget(budget.total, held=lambda: service.sessions.nbytes)
    grpc_options = channel_options(options.limits) + [("grpc.so_reuseport", 1 if options.reuse_port else 0)] \
        + connection_age_options(options)
    # Authentication first: a call without a good token is refused before anything reads its message. The
    # stream guard next: it reads every request itself, timed, so the ones after it see calls as they were.
    # RejectUndecodable goes last: metrics see a call before its bytes are judged.
    streams = StreamGuard(options.limits, options.max_workers, budget, Trimmer() if options.trim_memory else None)
    interceptors = ([TokenAuth(options.tokens)] if options.tokens else []) + [streams, RequestObserver(metrics),
                                                                              RejectUndecodable()]
    server = grpc.server(executor, options=grpc_options, interceptors=interceptors)
    add_to_server(GradServeServicer(service, streams), server)
    kserve.add_to_server(service, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, kserve.SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server,
        pool=kserve.reflection_pool(),
    )
    if credentials is not None:
        try:
            port = server.add_secure_port(address, credentials)
        except RuntimeError as exc:  # grpc says only "failed to bind", also for a key that does not fit the cert
            raise RuntimeError(f"{exc} With TLS, also check that --tls-key is the key of --tls-cert.") from None
    else:
        port = server.add_insecure_port(address)
        if options.tokens:
            _LOGGER.warning("bearer tokens without TLS travel in clear text: use --tls-cert/--tls-key unless "
                            "the network path is encrypted (loopback, a service mesh)")
    server.start()
    for name in ("", SERVICE_NAME, kserve.SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    metrics_port = None
    if metrics is not None:
        metrics.watch_sessions(service.sessions)
        try:
            metrics_port = metrics.serve(options.metrics_host, options.metrics_port)
        except OSError:  # the metrics port is taken: fail whole, not half-started
            server.stop(None).wait()
            executor.shutdown(wait=False)
            streams.stop()
            raise
    _LOGGER.info("gradserve listening on %s (port %d, %s%s) with %d layers", address, port,
                 "mutual TLS" if options.tls_client_ca else "TLS" if credentials else "plaintext",
                 ", token required" if options.tokens else "", len(registry.layers))
    return Running(server, port, service, health_servicer, executor, metrics, metrics_port, streams, budget)


def capped_limits(limits: Limits, budget: int, max_workers: int) -> Limits:
    """``limits`` made to fit a memory budget: sessions may keep half of it, plans a quarter, and a message is
    small enough that every thread reading one at once (gRPC holds each twice while it hands it over) takes
    half of it.
    Messages are received whole before any handler can look at them, so only their size bounds them."""
    message_bytes = max(MIN_CAPPED_MESSAGE_BYTES, budget // (4 * max_workers))
    # Compiled plans are kept outside the budget's count: an eighth of it each for the cache and named graphs.
    return replace(limits, max_session_bytes=min(limits.max_session_bytes, budget // 2),
                   max_message_bytes=min(limits.max_message_bytes, message_bytes),
                   max_cached_plan_bytes=min(limits.max_cached_plan_bytes, budget // 8),
                   max_named_graph_bytes=min(limits.max_named_graph_bytes, budget // 8))


#: Under the smallest cap, messages still hold a few MiB (the client streams requests from 8 MiB on).
MIN_CAPPED_MESSAGE_BYTES = 4 << 20


def _start_threads(executor: futures.ThreadPoolExecutor, count: int) -> None:
    """Make the pool start all ``count`` threads now (it starts them one call at a time otherwise)."""
    barrier = threading.Barrier(count + 1)
    for _ in range(count):
        executor.submit(barrier.wait)
    barrier.wait()
