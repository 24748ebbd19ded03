"""Build and start a gRPC server with the GradServe, KServe v2, health and reflection services: start_server()."""

from __future__ import annotations

import logging
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from gradserve.proto import gradserve_pb2 as pb
from gradserve.proto import message_size_options
from gradserve.server.rpc import kserve_servicer as kserve
from gradserve.server.rpc.undecodable import RejectUndecodable
from gradserve.server.service.limits import Limits
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

    def stop(self, grace: float | None = None) -> None:
        """Health goes NOT_SERVING, new calls are refused, in-flight ones get ``grace`` seconds (Train streams
        refuse further batches but hand their parameters back in that time)."""
        self.service.stopping.set()
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        self.executor.shutdown(wait=True)
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
    service = Service(registry, options.limits, options.graph_store,
                      observe=metrics.observe_layer if metrics is not None else None)
    grpc_options = channel_options(options.limits) + [("grpc.so_reuseport", 1 if options.reuse_port else 0)] \
        + connection_age_options(options)
    executor = futures.ThreadPoolExecutor(max_workers=options.max_workers, thread_name_prefix="gradserve")
    # RejectUndecodable goes last: authentication and metrics see a call before its bytes are judged.
    interceptors = [RequestObserver(metrics)] + ([TokenAuth(options.tokens)] if options.tokens else [])
    interceptors.append(RejectUndecodable())
    server = grpc.server(executor, options=grpc_options, interceptors=interceptors)
    add_to_server(GradServeServicer(service), server)
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
            raise
    _LOGGER.info("gradserve listening on %s (port %d, %s%s) with %d layers", address, port,
                 "mutual TLS" if options.tls_client_ca else "TLS" if credentials else "plaintext",
                 ", token required" if options.tokens else "", len(registry.layers))
    return Running(server, port, service, health_servicer, executor, metrics, metrics_port)
