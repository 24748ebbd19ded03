"""Issue 13, points 2, 5 and 10: requests whose outputs, shape probes or gradient checks would cost far more
than they carry are refused before the server computes or allocates anything."""

from __future__ import annotations

import threading
from pathlib import Path

import grpc
import numpy as np
import pytest

import gradserve.client as gs
from gradserve.proto import kserve_pb2 as kpb
from gradserve.proto import kserve_pb2_grpc as kpb_grpc
from serve_process import ServeProcess

MiB = 1 << 20


def peak_rss(pid: int) -> int:
    """The process's peak resident memory so far (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def one_node(op, *names, **attrs):
    g = gs.Graph()
    values = [g.input(n) for n in names]
    g.output(getattr(g, op)(*values, **attrs), "out")
    return g


AMPLIFIERS = {
    "sum of a zero-size [0, 2**28]": (one_node("Sum", "x", axis=[0]), {"x": np.zeros((0, 1 << 28), np.float32)}),
    "matmul [16384, 0] @ [0, 16384]": (one_node("MatMul", "x", "y"),
                                       {"x": np.zeros((16384, 0), np.float32), "y": np.zeros((0, 16384), np.float32)}),
    "convolution with pads 16000 on one pixel": (
        one_node("Convolution", "x", "W", "b", pads=[16000] * 4),
        {"x": np.ones((1, 1, 1, 1), np.float32), "W": np.ones((1, 1, 1, 1), np.float32), "b": np.ones(1, np.float32)}),
    "constant of shape [32768, 32768] (a 16-byte shape)": (
        one_node("ConstantOfShape", "shape"), {"shape": np.array([32768, 32768], np.int64)}),
    "mul (16384, 1) * (1, 16384)": (one_node("Mul", "x", "y"),
                                    {"x": np.zeros((16384, 1), np.float32), "y": np.zeros((1, 16384), np.float32)}),
}


@pytest.fixture(scope="module")
def default_server():
    """`gradserve serve` at its default limits."""
    with ServeProcess("--log-level", "WARNING") as process:
        yield process


@pytest.mark.parametrize("attack", list(AMPLIFIERS))
def test_an_amplifying_request_is_refused_before_it_allocates(default_server, attack):
    """A tiny request whose output would be a GiB is RESOURCE_EXHAUSTED naming the node and the limit, and the
    server's peak memory stays within 100 MB of idle."""
    graph, feeds = AMPLIFIERS[attack]
    before = peak_rss(default_server.pid)
    with gs.connect(default_server.target) as client:
        with pytest.raises(gs.GradserveError) as info:
            client.run(graph, feeds, grad=True)
    assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED, info.value
    assert "max-tensor-elements" in info.value.message and info.value.node
    assert peak_rss(default_server.pid) - before < 100 * MiB


def test_a_constant_longer_than_a_tensor_may_be_is_refused_at_registration():
    """A Constant attribute with more elements than max-tensor-elements is RESOURCE_EXHAUSTED, naming the node."""
    with ServeProcess("--max-tensor-elements", "1000", "--log-level", "WARNING") as process, \
            gs.connect(process.target) as client:
        g = gs.Graph()
        g.output(g.Constant(value=[1.0] * 1001, shape=[1001]), "out")
        with pytest.raises(gs.GradserveError) as info:
            client.register(g)
    assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "max-tensor-elements" in info.value.message


def test_all_the_values_of_a_pass_are_bounded_together():
    """A chain whose values each fit but together exceed max-pass-elements is refused before it runs."""
    with ServeProcess("--max-pass-elements", "100000", "--log-level", "WARNING") as process, \
            gs.connect(process.target) as client:
        g = gs.Graph()
        value = g.input("x")
        for _ in range(20):
            value = g.Relu(value)
        g.output(g.Sum(value), "out")
        with pytest.raises(gs.GradserveError) as info:
            client.run(g, {"x": np.ones(10_000, np.float32)})
        assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "max-pass-elements" in info.value.message
        assert client.run(g, {"x": np.ones(1000, np.float32)}).outputs["out"] == 1000


def test_a_bias_that_would_grow_affines_output_is_invalid_argument(client):
    """Affine with a bias of shape (1, 1, M) is the caller's mistake (INVALID_ARGUMENT), not INTERNAL."""
    graph = one_node("Affine", "x", "W", "b")
    with pytest.raises(gs.GradserveError) as info:
        client.run(graph, {"x": np.ones((4, 3)), "W": np.ones((3, 5)), "b": np.ones((1, 1, 5))}, grad=True)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT and "b of shape" in info.value.message


def expensive_named_graph(client, name: str) -> None:
    """A named graph with declared shapes whose forward takes seconds: 40 chained 2048x2048 products."""
    g = gs.Graph()
    x = g.input("x", dtype="float32", shape=[2048, 2048])
    value = x
    for _ in range(40):
        value = g.MatMul(value, x)
    g.output(value, "out")
    client.register(g, name=name)


def test_kserve_metadata_calls_run_nothing(default_server):
    """16 concurrent ModelMetadata and ModelReady calls (2 s deadlines) on an expensive named graph all answer,
    with the output shape, and a canary Run answers within 2 s meanwhile; the server's CPU stays idle."""
    with gs.connect(default_server.target) as client:
        expensive_named_graph(client, "expensive")
        stat = Path(f"/proc/{default_server.pid}/stat")
        cpu = lambda: sum(int(v) for v in stat.read_text().rsplit(")", 1)[1].split()[11:13])  # noqa: E731
        start_cpu = cpu()
        answers = []
        with grpc.insecure_channel(default_server.target) as channel:
            stub = kpb_grpc.GRPCInferenceServiceStub(channel)

            def ask():
                answers.append(stub.ModelMetadata(kpb.ModelMetadataRequest(name="expensive"), timeout=2))
                stub.ModelReady(kpb.ModelReadyRequest(name="expensive"), timeout=2)

            threads = [threading.Thread(target=ask) for _ in range(16)]
            for thread in threads:
                thread.start()
            client.run(one_node("Sum", "x"), {"x": np.ones(3)}, timeout=2)  # DEADLINE_EXCEEDED if starved
            for thread in threads:
                thread.join(10)
        assert len(answers) == 16 and list(answers[0].outputs[0].shape) == [2048, 2048]
        assert (cpu() - start_cpu) / 100 < 2.0  # clock ticks: running the graph even once would take longer


def test_a_gradient_check_over_budget_is_refused_before_it_runs():
    """CheckGradients whose elements x forward cost exceeds max-gradcheck-work is RESOURCE_EXHAUSTED at once."""
    with ServeProcess("--log-level", "WARNING") as process, gs.connect(process.target) as client:
        g = gs.Graph()
        x = g.input("x")
        value = x
        for _ in range(50):
            value = g.Tanh(value)
        g.output(g.Sum(value), "loss")
        with pytest.raises(gs.GradserveError) as info:
            client.check_gradients(g, {"x": np.ones(150_000)}, timeout=20)  # 300,000 passes if it ran
        assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "max-gradcheck-work" in info.value.message
        assert client.check_gradients(g, {"x": np.ones(5)})
