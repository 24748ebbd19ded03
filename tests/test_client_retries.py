"""The client's channel retries the idempotent calls on UNAVAILABLE (gRPC's retryPolicy), not Forward/Backward."""

from __future__ import annotations

import json
import queue
import threading

import grpc
import numpy as np

import gradserve.client as gs
from gradserve.client.channel import open_channel, service_config
from gradserve.server.rpc.server import start_server

APPLE = {"apple": np.float64(100), "num": np.float64(2)}


def price_graph() -> gs.Graph:
    g = gs.Graph(dtype="float64")
    apple, num = g.inputs("apple", "num")
    g.output(apple * num, "price")
    return g


def test_run_succeeds_across_a_server_restart_on_the_same_port(registry):
    """A Run sent while its server is down is retried until a new server on the same port answers it."""
    first = start_server("127.0.0.1:0", registry)
    target = f"127.0.0.1:{first.port}"
    states: queue.Queue = queue.Queue()
    channel = open_channel(target)  # the channel connect() makes, watched
    channel.subscribe(states.put)
    second = None
    try:
        with gs.Client(target, channel=channel, timeout=60) as client:
            graph = price_graph()
            assert client.run(graph, APPLE).outputs["price"] == 200.0
            first.stop(None)
            answer: dict = {}
            call = threading.Thread(target=lambda: answer.update(result=_run(client, graph)))
            call.start()
            while states.get(timeout=30) != grpc.ChannelConnectivity.TRANSIENT_FAILURE:
                pass  # the Run's first attempt found nothing listening
            assert call.is_alive(), answer  # ... and the call waits for its next attempt
            second = start_server(target, registry)
            call.join(30)
    finally:
        for running in (first, second):
            if running is not None:
                running.stop(None)
    result = answer["result"]
    assert isinstance(result, gs.Result), result
    assert result.outputs["price"] == 200.0 and result.grads["apple"] == 2.0


def _run(client: gs.Client, graph: gs.Graph):
    try:
        return client.run(graph, APPLE)
    except gs.GradserveError as error:
        return error


def test_only_calls_without_side_effects_are_retried():
    """The retry policy names Run, RunStream, ListLayers, RegisterGraph, CheckGradients and health Check on
    UNAVAILABLE only; Forward, Backward and ReleaseSession are sent once."""
    (method_config,) = json.loads(service_config())["methodConfig"]
    names = {(name["service"], name["method"]) for name in method_config["name"]}
    assert names == {("gradserve.v1.GradServe", m) for m in ("Run", "RunStream", "ListLayers", "RegisterGraph",
                                                            "CheckGradients")} | {("grpc.health.v1.Health", "Check")}
    assert method_config["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert "methodConfig" not in json.loads(service_config(retries=False))
