"""Prometheus metrics of one server, in a private registry, served over HTTP on their own port."""

from __future__ import annotations

import logging
import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.process_collector import ProcessCollector

from gradserve.server.service.registry import Registry
from gradserve.server.service.sessions import SessionStore
from gradserve.server.service.version import gradserve_version

_LOGGER = logging.getLogger(__name__)

NAMESPACE = "gradserve"

# Calls span a cached ListLayers (microseconds) to a large Run (seconds).
REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# One layer call on a small tensor takes microseconds.
LAYER_BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0)


class Metrics:
    """Every gradserve_* series of one server.

    Each server gets its own CollectorRegistry, so that several servers in one
    process (tests, embedded mode) never share or clash over series.
    """

    def __init__(self, layers: Registry | None = None):
        self.registry = CollectorRegistry()
        self.requests = Counter("requests", "Finished calls by gRPC service, method and status code",
                                ("service", "method", "code"), namespace=NAMESPACE, registry=self.registry)
        self.latency = Histogram("request_duration_seconds", "Time from receiving a call to answering it",
                                 ("service", "method"), namespace=NAMESPACE, registry=self.registry,
                                 buckets=REQUEST_BUCKETS)
        self.in_flight = Gauge("requests_in_flight", "Calls being served right now",
                               namespace=NAMESPACE, registry=self.registry)
        self._layer_seconds = {
            phase: Histogram(f"layer_{phase}_seconds", f"Time spent in Layer.{phase} by layer type", ("layer",),
                             namespace=NAMESPACE, registry=self.registry, buckets=LAYER_BUCKETS)
            for phase in ("forward", "backward")
        }
        self._layer_children: dict[tuple[str, str], object] = {}
        self._children_lock = threading.Lock()
        self._http = None
        Info("build", "The gradserve version serving", namespace=NAMESPACE,
             registry=self.registry).info({"version": gradserve_version()})
        ProcessCollector(namespace=NAMESPACE, registry=self.registry)
        if layers is not None:
            self._count_plugins(layers)

    # -- what the server reports --

    def observe_layer(self, op: str, phase: str, seconds: float) -> None:
        """The engine's observer: one layer call of ``op`` took ``seconds`` (phase "forward" or "backward")."""
        child = self._layer_children.get((op, phase))
        if child is None:  # op names come from the registry, so the label set stays bounded
            with self._children_lock:
                child = self._layer_children[(op, phase)] = self._layer_seconds[phase].labels(op)
        child.observe(seconds)

    def _count_plugins(self, layers: Registry) -> None:
        plugins = Gauge("plugins", "Plugins by load status (loaded, failed, blocked)", ("status",),
                        namespace=NAMESPACE, registry=self.registry)
        for status in ("loaded", "failed", "blocked"):
            plugins.labels(status).set(sum(p.status == status for p in layers.plugins))
        Gauge("layers", "Layers the server offers", namespace=NAMESPACE,
              registry=self.registry).set(len(layers.layers))

    def watch_sessions(self, sessions: SessionStore) -> None:
        self.registry.register(_SessionCollector(sessions))

    # -- the HTTP endpoint --

    def serve(self, host: str, port: int) -> int:
        """Serve /metrics on ``host:port`` (0 picks a free port) in a daemon thread; return the port."""
        self._http, _ = start_http_server(port, addr=host.strip("[]"), registry=self.registry)
        bound = self._http.server_address[1]
        _LOGGER.info("metrics on http://%s:%d/metrics", host, bound)
        return bound

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


class _SessionCollector:
    """Live Forward sessions and the bytes they hold, read at scrape time (expired ones dropped first)."""

    def __init__(self, sessions: SessionStore):
        self.sessions = sessions

    def collect(self):
        self.sessions.expire()
        yield GaugeMetricFamily(f"{NAMESPACE}_sessions", "Live Forward sessions kept for Backward",
                                value=self.sessions.count)
        yield GaugeMetricFamily(f"{NAMESPACE}_session_bytes", "Bytes the live sessions keep",
                                value=self.sessions.nbytes)

    def describe(self):
        return []
