"""Lifecycle: SIGTERM/SIGINT drain in-flight calls and exit 0; --workers N processes share one port."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

import gate_plugin
import gradserve.client as gs
from serve_process import ServeProcess, gradserve_command, reserved_port


def wait_for(condition, what: str, timeout: float = 30.0):
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def with_gate_plugin(folder) -> dict:
    """Environment for a `gradserve serve` child that also loads the test Gate plugin from ``folder``."""
    gate_plugin.install(folder)
    paths = [str(folder)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {"PYTHONPATH": os.pathsep.join(paths)}


def refused(target: str) -> bool:
    """Whether a new call to ``target`` is refused rather than served.

    UNAVAILABLE, or CANCELLED for a call that reached the server as it began to shut down.
    """
    with gs.connect(target, timeout=5) as client:
        try:
            client.list_layers()
        except (gs.Unavailable, gs.Cancelled):
            return True
    return False


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_drains_the_in_flight_call_and_exits_zero(signum, tmp_path):
    """On SIGTERM/SIGINT: health NOT_SERVING, new calls refused, the in-flight call completes, exit code 0."""
    gate = gate_plugin.Gate(tmp_path)
    with ServeProcess("--grace", "60", env=with_gate_plugin(tmp_path)) as server:
        g = gs.Graph()
        value = g.node("Gate", g.input("x"), path=str(gate.path))
        g.output(g.Relu(value), "y")
        answers = []

        def call_through_the_gate():
            try:
                answers.append(client.run(graph_id, {"x": np.array([-1.0, 2.0], np.float32)}, grad=False))
            except gs.GradserveError as error:
                answers.append(error)

        with gs.connect(server.target, timeout=60) as client:
            graph_id = client.register(g)
            call = threading.Thread(target=call_through_the_gate)
            call.start()
            wait_for(gate.entered, "the call to reach the gate")
            with grpc.insecure_channel(server.target) as channel:
                watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=60)
                assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
                server.proc.send_signal(signum)
                assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
                watch.cancel()
            wait_for(lambda: refused(server.target), "new calls to be refused")
            assert call.is_alive() and server.alive()  # refused while draining, not because it is gone
            gate.open()
            call.join(60)
        assert server.proc.wait(60) == 0
        assert isinstance(answers[0], gs.Result), f"{answers[0]!r}\n{server.log()}"
        assert answers[0].outputs["y"].tolist() == [0.0, 2.0]


def test_workers_need_an_explicit_port():
    """--workers N with port 0 is refused: every worker would bind a different port."""
    done = subprocess.run([*gradserve_command(), "serve", "--workers", "2", "--port", "0"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--workers needs an explicit --port" in done.stderr


def test_workers_that_cannot_serve_stop_with_exit_code_one():
    """When the workers fail before serving (the port is taken), the supervisor stops and exits 1."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = subprocess.run([*gradserve_command(), "serve", "--workers", "2", "--port", str(taken.getsockname()[1])],
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "before serving; stopping" in done.stderr


def serving_workers(server: ServeProcess) -> set[int]:
    """Pids of the workers that announced they serve ("gradserve serving on HOST:PORT (worker I, pid P)")."""
    return {int(pid) for pid in re.findall(r"serving on \S+ \(worker \d+, pid (\d+)\)", server.log())}


def free_port_pair() -> int:
    """A port p such that p and p + 1 are both free (worker i serves metrics on metrics-port + i)."""
    for _ in range(50):
        with socket.socket() as first, socket.socket() as second:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise RuntimeError("no two consecutive free ports")


def runs_served(metrics_port: int) -> float:
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as answer:
        families = text_string_to_metric_families(answer.read().decode())
    return sum(s.value for f in families for s in f.samples
               if s.name == "gradserve_requests_total" and s.labels["method"] == "Run")


def test_workers_share_the_port_and_exit_zero():
    """--workers 2: two processes serve one port, each with its own metrics port; SIGTERM stops both, exit 0."""
    metrics_port = free_port_pair()
    with reserved_port() as port, ServeProcess("--workers", "2", "--metrics-port", str(metrics_port),
                                               port=port) as server:
        workers = server.children()
        assert len(workers) == 2
        wait_for(lambda: serving_workers(server) == set(workers), "both workers to serve")
        g = gs.Graph()
        g.output(g.input("x") * 3.0, "y")
        for _ in range(40):
            # A channel of its own per call: a new connection, which the kernel hands to either worker.
            channel = grpc.insecure_channel(server.target, options=[("grpc.use_local_subchannel_pool", 1)])
            with gs.Client(server.target, channel=channel, timeout=30) as client:
                assert client.run(g, {"x": np.float32(2)}, grad=False).outputs["y"] == 6.0
        served = [runs_served(metrics_port), runs_served(metrics_port + 1)]
        assert sum(served) == 40 and min(served) > 0, served
        assert server.stop() == 0
    assert not any(os.path.exists(f"/proc/{pid}") for pid in workers)


def test_a_killed_worker_is_replaced():
    """A worker killed with SIGKILL is replaced by a new one; the server keeps serving and still exits 0."""
    with reserved_port() as port, ServeProcess("--workers", "2", port=port) as server:
        first, second = server.children()
        wait_for(lambda: serving_workers(server) == {first, second}, "both workers to serve")
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: len(serving_workers(server) - {first, second}) == 1, "a replacement worker to serve")
        assert set(server.children()) == serving_workers(server) - {first}
        assert "died (killed by SIGKILL); starting another" in server.log()
        with gs.connect(server.target, timeout=30) as client:
            assert client.list_layers().layers
        assert server.stop() == 0
