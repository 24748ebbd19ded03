"""Every limit refuses with its status and a message naming it and its value; deadlines stop a run between nodes."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest

import gradserve.client as gs
from gradserve.proto import gradserve_pb2 as pb
from gradserve.proto import gradserve_pb2_grpc as pb_grpc
from gradserve.proto.tensors import to_tensor_map
from gradserve.server.rpc.server import ServerOptions, start_server
from gradserve.server.service.limits import Limits
from gradserve.server.service.registry import load_registry
import gate_plugin

SERVICE = "gradserve.v1.GradServe"


@pytest.fixture()
def serve(registry):
    """start(registry=..., metrics=False, **limits) -> (Running, connected Client); all stopped after the test."""
    started = []

    def start(layers=registry, metrics=False, **limits):
        running = start_server("127.0.0.1:0", layers, ServerOptions(limits=Limits(**limits),
                                                                    metrics_port=0 if metrics else None))
        client = gs.connect(f"127.0.0.1:{running.port}", timeout=60)
        started.append((running, client))
        return running, client

    yield start
    for running, client in started:
        client.close()
        running.stop(None)


def chain(depth: int, dtype: str = "float32") -> gs.Graph:
    """x -> Relu -> ... -> Relu (depth nodes) -> y."""
    g = gs.Graph(dtype=dtype)
    value = g.input("x")
    for _ in range(depth):
        value = g.Relu(value)
    g.output(value, "y")
    return g


def product() -> gs.Graph:
    g = gs.Graph(dtype="float64")
    x, w = g.inputs("x", "w")
    g.output(x * w, "y")
    return g


def ones(n: int, dtype=np.float32) -> np.ndarray:
    return np.ones(n, dtype=dtype)


def refused(error: pytest.ExceptionInfo, cls: type, flag: str, value) -> None:
    assert isinstance(error.value, cls), error.value
    assert flag in error.value.message and str(value) in error.value.message, error.value.message


# -- sizes --

def test_request_over_max_message_bytes_is_resource_exhausted(serve):
    """A request larger than max-message-bytes is refused by gRPC itself with RESOURCE_EXHAUSTED and the limit."""
    _, client = serve(max_message_bytes=1 << 20)
    with pytest.raises(gs.ResourceExhausted) as err:
        client.run(chain(1), {"x": ones(1 << 19)}, grad=False)  # 2 MiB of float32
    assert str(1 << 20) in err.value.message


def test_answer_over_max_message_bytes_is_resource_exhausted(serve):
    """An answer that would exceed max-message-bytes is not sent: RESOURCE_EXHAUSTED, and the server goes on."""
    _, client = serve(max_message_bytes=1 << 20)
    g = gs.Graph()
    g.output(g.input("a") * g.input("b"), "outer")
    feeds = {"a": np.ones((1024, 1), np.float32), "b": np.ones((1, 1024), np.float32)}  # 4 MiB answer
    with pytest.raises(gs.ResourceExhausted):
        client.run(g, feeds, grad=False)
    assert client.run(chain(1), {"x": ones(4)}, grad=False).outputs["y"].tolist() == [1, 1, 1, 1]


def test_graph_over_max_graph_nodes_is_refused(serve):
    """A graph with more nodes than max-graph-nodes is refused naming the limit and its value."""
    _, client = serve(max_graph_nodes=5)
    client.register(chain(5))
    with pytest.raises(gs.GradserveError) as err:
        client.register(chain(6))
    refused(err, gs.ResourceExhausted, "max-graph-nodes", 5)


def test_tensor_over_max_tensor_elements_is_refused(serve):
    """A tensor with more elements than max-tensor-elements is refused naming the limit, its value and the tensor."""
    _, client = serve(max_tensor_elements=100)
    assert client.run(chain(1), {"x": ones(100)}, grad=False).outputs["y"].shape == (100,)
    with pytest.raises(gs.GradserveError) as err:
        client.run(chain(1), {"x": ones(101)}, grad=False)
    refused(err, gs.ResourceExhausted, "max-tensor-elements", 100)
    assert "'x'" in err.value.message


def test_request_over_max_request_elements_is_refused(serve):
    """Tensors that together exceed max-request-elements are refused naming the limit and its value."""
    _, client = serve(max_request_elements=100)
    with pytest.raises(gs.GradserveError) as err:
        client.run(product(), {"x": ones(60, np.float64), "w": ones(60, np.float64)})
    refused(err, gs.ResourceExhausted, "max-request-elements", 100)


def test_gradient_check_over_max_gradcheck_elements_is_refused(serve):
    """A gradient check over more elements than max-gradcheck-elements is refused naming the limit."""
    _, client = serve(max_gradcheck_elements=10)
    with pytest.raises(gs.GradserveError) as err:
        client.check_gradients(chain(1, "float64"), {"x": ones(11, np.float64)}, seed_grads={"y": ones(11, np.float64)})
    refused(err, gs.ResourceExhausted, "max-gradcheck-elements", 10)


# -- sessions --

def test_sessions_over_max_sessions_are_refused(serve):
    """A Forward beyond max-sessions live sessions is refused naming the limit; releasing one makes room."""
    _, client = serve(max_sessions=2)
    feeds = {"x": ones(4)}
    first = client.forward(chain(1), feeds)
    client.forward(chain(1), feeds)
    with pytest.raises(gs.GradserveError) as err:
        client.forward(chain(1), feeds)
    refused(err, gs.ResourceExhausted, "max-sessions", 2)
    first.release()
    assert client.forward(chain(1), feeds).session_id


def test_session_past_its_ttl_is_failed_precondition(serve):
    """Backward on a session unused for longer than session-ttl is FAILED_PRECONDITION naming the limit."""
    _, client = serve(session_ttl=0.0)
    session = client.forward(chain(1), {"x": ones(4)})
    with pytest.raises(gs.GradserveError) as err:
        session.backward({"y": ones(4)})
    refused(err, gs.FailedPrecondition, "session-ttl", "0s")


def test_forward_over_max_session_bytes_is_refused(serve):
    """A Forward whose kept pass alone exceeds max-session-bytes is refused naming the limit; Run still works."""
    _, client = serve(max_session_bytes=1000)
    with pytest.raises(gs.GradserveError) as err:
        client.forward(chain(1), {"x": ones(1000)})
    refused(err, gs.ResourceExhausted, "max-session-bytes", 1000)
    assert client.run(chain(1), {"x": ones(1000)}, seed_grads={"y": ones(1000)}).grads["x"].shape == (1000,)


def test_oldest_session_is_evicted_under_max_session_bytes(serve):
    """When a new session does not fit under max-session-bytes, the least recently used one is evicted."""
    feeds = {"x": ones(100, np.float64), "w": ones(100, np.float64)}
    probe, probe_client = serve()
    probe_client.forward(product(), feeds)
    one_session = probe.service.sessions.nbytes
    cap = one_session * 3 // 2
    _, client = serve(max_session_bytes=cap)
    old = client.forward(product(), feeds)
    new = client.forward(product(), feeds)
    with pytest.raises(gs.GradserveError) as err:
        old.backward({"y": ones(100, np.float64)})
    refused(err, gs.FailedPrecondition, "max-session-bytes", cap)
    assert "evicted" in err.value.message
    assert new.backward({"y": ones(100, np.float64)})["x"].tolist() == [1.0] * 100


def test_plan_evicted_under_max_cached_plans_is_sent_again(serve):
    """Past max-cached-plans the oldest plan is dropped: its id is NOT_FOUND, and a Graph is re-sent by the client."""
    _, client = serve(max_cached_plans=1)
    first, second = chain(1), chain(2)
    first_id = client.register(first)
    client.register(second)
    with pytest.raises(gs.NotFound):
        client.run(first_id, {"x": ones(2)}, grad=False)
    assert client.run(first, {"x": ones(2)}, grad=False).outputs["y"].tolist() == [1, 1]


# -- deadlines and cancellation stop between nodes --

@pytest.fixture()
def gate_registry(tmp_path, monkeypatch):
    """The installed layers plus the test Gate layer."""
    monkeypatch.syspath_prepend(str(gate_plugin.install(tmp_path)))
    yield load_registry(environ={})
    sys.modules.pop(gate_plugin.MODULE, None)


TICKS = 500  # 20 ms each: a run that went on after the server learnt of the cancel would take 10 s more


def gated_ticks(gate: gate_plugin.Gate) -> gs.Graph:
    """x -> Gate -> Tick x TICKS -> y: held at the gate, then slow enough that stopping early shows."""
    g = gs.Graph()
    value = g.node("Gate", g.input("x"), path=str(gate.path))
    for _ in range(TICKS):
        value = g.node("Tick", value)
    g.output(value, "y")
    return g


def wait_for(condition, what: str, timeout: float = 30.0, describe=None):
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}" + (f": {describe()}" if describe else ""))


def sample(running, name: str, **labels) -> float:
    return running.metrics.registry.get_sample_value(name, labels) or 0.0


def run_counts(running) -> dict[str, float]:
    """Run calls the server finished, by status code."""
    return {s.labels["code"]: s.value for family in running.metrics.registry.collect() for s in family.samples
            if s.name == "gradserve_requests_total" and s.labels["method"] == "Run"}


def test_deadline_stops_the_run_between_nodes(serve, gate_registry, tmp_path):
    """A call whose deadline passes mid-graph is DEADLINE_EXCEEDED and the server stops before the last node."""
    running, client = serve(gate_registry, metrics=True)
    gate = gate_plugin.Gate(tmp_path)
    graph_id = client.register(gated_ticks(gate))
    with pytest.raises(gs.DeadlineExceeded):
        client.run(graph_id, {"x": ones(4)}, grad=False, timeout=1.0)  # the gate holds the call past its deadline
    assert gate.entered()
    gate.open()
    # The client gives up at its deadline, a moment before the server's copy of it passes: the server
    # records whichever it saw first.
    wait_for(lambda: run_counts(running).keys() & {"DEADLINE_EXCEEDED", "CANCELLED"}, "the server to stop the run",
             describe=lambda: run_counts(running))
    assert sum(run_counts(running).values()) == 1
    assert sample(running, "gradserve_layer_forward_seconds_count", layer="Tick") < TICKS
    assert client.run(chain(2), {"x": -ones(4)}, grad=False).outputs["y"].tolist() == [0, 0, 0, 0]  # it goes on


def test_cancelled_call_stops_the_run_between_nodes(serve, gate_registry, tmp_path):
    """A call its client cancels mid-graph is CANCELLED on the server, which stops before the last node."""
    running, client = serve(gate_registry, metrics=True)
    gate = gate_plugin.Gate(tmp_path)
    graph_id = client.register(gated_ticks(gate))
    request = pb.RunRequest(graph=pb.GraphRef(graph_id=graph_id), no_grad=True)
    to_tensor_map({"x": ones(4)}, request.feeds)
    future = pb_grpc.GradServeStub(client._channel).Run.future(request)
    wait_for(gate.entered, "the call to reach the gate")
    future.cancel()
    gate.open()
    wait_for(lambda: run_counts(running) == {"CANCELLED": 1}, "the server to stop the run",
             describe=lambda: run_counts(running))
    assert sample(running, "gradserve_layer_forward_seconds_count", layer="Tick") < TICKS
    assert sample(running, "gradserve_requests_in_flight") == 0


def test_call_past_max_call_seconds_stops_between_nodes(serve, gate_registry, tmp_path):
    """A call with no deadline still stops between nodes at the server's max-call-seconds, naming the limit."""
    _, client = serve(gate_registry, max_call_seconds=0.5)
    gate = gate_plugin.Gate(tmp_path)
    graph_id = client.register(gated_ticks(gate))
    gate.open()  # the Ticks alone take longer than the limit
    with pytest.raises(gs.GradserveError) as err:
        client.run(graph_id, {"x": ones(4)}, grad=False)
    refused(err, gs.ResourceExhausted, "max-call-seconds", 0.5)
    assert client.run(chain(2), {"x": ones(4)}, grad=False).outputs["y"].tolist() == [1, 1, 1, 1]


def test_names_over_max_named_graphs_are_refused(serve):
    """A new name past max-named-graphs is refused naming the limit; re-registering a known name is fine."""
    _, client = serve(max_named_graphs=1)
    client.register(chain(1), name="first")
    client.register(chain(2), name="first")
    with pytest.raises(gs.GradserveError) as err:
        client.register(chain(1), name="second")
    refused(err, gs.ResourceExhausted, "max-named-graphs", 1)
