"""Observability: Prometheus series on their own port, one log line per request, JSON logs with a flag."""

from __future__ import annotations

import json
import logging
import sys
import textwrap
import time
import urllib.request

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

import gradserve.client as gs
from gradserve.server.rpc.server import ServerOptions, start_server
from gradserve.server.service.registry import load_registry
from serve_process import ServeProcess

SERVICE = "gradserve.v1.GradServe"


@pytest.fixture()
def metered(registry):
    """start(layers=registry) -> Running with metrics on a free port; all stopped after the test."""
    started = []

    def start(layers=registry):
        running = start_server("127.0.0.1:0", layers, ServerOptions(metrics_port=0))
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop(None)


def scrape(running) -> dict[tuple[str, frozenset], float]:
    """Every sample the /metrics endpoint serves, keyed by (name, labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{running.metrics_port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples, name: str, **labels) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def price_graph() -> gs.Graph:
    g = gs.Graph(dtype="float64")
    apple, num = g.inputs("apple", "num")
    g.output(g.Relu(apple * num), "price")
    return g


FEEDS = {"apple": np.float64(100), "num": np.float64(2)}


def test_metrics_endpoint_serves_the_series_after_calls(metered):
    """After a few calls, /metrics has requests by method and code, latencies, layer times, sessions and plugins."""
    running = metered()
    with gs.connect(f"127.0.0.1:{running.port}") as client:
        for _ in range(3):
            client.run(price_graph(), FEEDS)
        session = client.forward(price_graph(), FEEDS)
        g = gs.Graph()
        g.output(g.node("NoSuchLayer", g.input("x")), "y")
        with pytest.raises(gs.NotFound):
            client.register(g)
        live = scrape(running)
        session.backward()
    after = scrape(running)

    assert all(name.startswith("gradserve_") for name, _ in after)
    assert value(after, "gradserve_requests_total", service=SERVICE, method="Run", code="OK") == 3
    assert value(after, "gradserve_requests_total", service=SERVICE, method="RegisterGraph", code="NOT_FOUND") == 1
    assert value(after, "gradserve_requests_total", service=SERVICE, method="Backward", code="OK") == 1
    assert value(after, "gradserve_request_duration_seconds_count", service=SERVICE, method="Run") == 3
    assert value(after, "gradserve_request_duration_seconds_bucket", service=SERVICE, method="Run", le="+Inf") == 3
    assert value(after, "gradserve_layer_forward_seconds_count", layer="Mul") == 4
    assert value(after, "gradserve_layer_forward_seconds_count", layer="Relu") == 4
    assert value(after, "gradserve_layer_backward_seconds_count", layer="Mul") == 4
    assert value(after, "gradserve_requests_in_flight") == 0
    assert value(live, "gradserve_sessions") == 1 and value(live, "gradserve_session_bytes") > 0
    assert value(after, "gradserve_sessions") == 0 and value(after, "gradserve_session_bytes") == 0
    assert value(after, "gradserve_plugins", status="loaded") >= 1
    assert value(after, "gradserve_plugins", status="failed") == 0


def test_failed_plugins_are_counted(metered, tmp_path, monkeypatch):
    """A plugin that fails to load shows in gradserve_plugins{status="failed"}."""
    (tmp_path / "gsplug_broken.py").write_text("raise ImportError('broken on purpose')\n")
    info = tmp_path / "gsplug_broken-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: gsplug-broken\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[gradserve]\ngsplug_broken = gsplug_broken\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    running = metered(load_registry(environ={}))
    samples = scrape(running)
    sys.modules.pop("gsplug_broken", None)
    assert value(samples, "gradserve_plugins", status="failed") == 1
    assert value(samples, "gradserve_plugins", status="loaded") >= 1


def test_each_server_keeps_its_own_metrics(metered):
    """Two servers in one process never share series: each has a private registry."""
    busy, idle = metered(), metered()
    with gs.connect(f"127.0.0.1:{busy.port}") as client:
        client.run(price_graph(), FEEDS)
    assert value(scrape(busy), "gradserve_requests_total", service=SERVICE, method="Run", code="OK") == 1
    assert value(scrape(idle), "gradserve_requests_total", service=SERVICE, method="Run", code="OK") is None


def test_metrics_are_off_by_default(registry):
    """Without a metrics port nothing is collected: no endpoint, and the engine gets no observer."""
    running = start_server("127.0.0.1:0", registry)
    try:
        assert running.metrics is None and running.metrics_port is None
        assert running.service.observe is None
    finally:
        running.stop(None)


def test_every_request_logs_one_line(client, caplog):
    """Each call logs one line with its method, graph id, status code and duration (once its answer is sent)."""
    with caplog.at_level(logging.INFO, logger="gradserve.requests"):
        result = client.run(price_graph(), FEEDS)
        with pytest.raises(gs.InvalidArgument):
            client.run(price_graph(), {"apple": np.float64(1)})

        def runs():
            return [r for r in caplog.records if r.name == "gradserve.requests" and r.method == "Run"]

        give_up = time.monotonic() + 10
        while len(runs()) < 2 and time.monotonic() < give_up:  # written after the answer went out
            time.sleep(0.01)
    runs = runs()
    assert [(r.graph_id, r.code) for r in runs] == [(result.graph_id, "OK"), (result.graph_id, "INVALID_ARGUMENT")]
    assert all(r.duration_ms >= 0 and f"graph={result.graph_id}" in r.getMessage() for r in runs)


def test_log_json_writes_json_lines(tmp_path):
    """`serve --log-json` writes every stderr line as JSON, the request lines with their fields."""
    with ServeProcess("--log-json") as server:
        with gs.connect(server.target) as client:
            result = client.run(price_graph(), FEEDS)
        server.stop()
    lines = [json.loads(line) for line in server.log().splitlines() if line.strip()]
    runs = [line for line in lines if line.get("method") == "Run"]
    assert len(runs) == 1, textwrap.indent(server.log(), "  ")
    assert runs[0]["graph_id"] == result.graph_id and runs[0]["code"] == "OK"
    assert runs[0]["duration_ms"] >= 0 and runs[0]["logger"] == "gradserve.requests"
