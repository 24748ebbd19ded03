"""Build a gRPC server with the GradServe, health and reflection services: create_server()."""

from __future__ import annotations

import logging
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from gradserve.proto import gradserve_pb2 as pb
from gradserve.proto import gradserve_pb2_grpc as pb_grpc
from gradserve.server.limits import Limits
from gradserve.server.registry import Registry, load_registry
from gradserve.server.service import Service
from gradserve.server.servicer import GradServeServicer

_LOGGER = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GradServe"].full_name


@dataclass
class ServerOptions:
    """How to run the server; every field has a CLI flag."""

    limits: Limits = field(default_factory=Limits)
    max_workers: int = 16
    graph_store: str | None = None
    reuse_port: bool = False


@dataclass
class Running:
    """A started server and the parts a caller may need (tests, CLI, embedded mode)."""

    server: grpc.Server
    port: int
    service: Service
    health: health.HealthServicer
    executor: futures.ThreadPoolExecutor

    def stop(self, grace: float | None = None) -> None:
        """Health goes NOT_SERVING, new calls are refused, in-flight ones get ``grace`` seconds."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        self.executor.shutdown(wait=True)


def channel_options(limits: Limits) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", limits.max_message_bytes),
        ("grpc.max_send_message_length", limits.max_message_bytes),
    ]


def create_server(address: str = "127.0.0.1:0", registry: Registry | None = None,
                  options: ServerOptions | None = None) -> tuple[grpc.Server, int]:
    """A started server bound to ``address`` (port 0 picks a free one) and its port."""
    running = start_server(address, registry, options)
    return running.server, running.port


def start_server(address: str = "127.0.0.1:0", registry: Registry | None = None,
                 options: ServerOptions | None = None) -> Running:
    options = options or ServerOptions()
    registry = registry if registry is not None else load_registry()
    service = Service(registry, options.limits, options.graph_store)
    grpc_options = channel_options(options.limits) + [("grpc.so_reuseport", 1 if options.reuse_port else 0)]
    executor = futures.ThreadPoolExecutor(max_workers=options.max_workers, thread_name_prefix="gradserve")
    server = grpc.server(executor, options=grpc_options)
    pb_grpc.add_GradServeServicer_to_server(GradServeServicer(service), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    port = server.add_insecure_port(address)
    server.start()
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    _LOGGER.info("gradserve listening on %s (port %d) with %d layers", address, port, len(registry.layers))
    return Running(server, port, service, health_servicer, executor)
