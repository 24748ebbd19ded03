"""Faults: clients that go away mid-call leave no session or thread behind; a worker killed under load
leaves the other workers serving."""

from __future__ import annotations

import importlib.metadata
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import grpc
import numpy as np
import pytest

import fault_layers
from gradserve.proto import gradserve_pb2 as pb
from gradserve.proto import gradserve_pb2_grpc as pb_grpc
from gradserve.proto.tensors import from_tensor, to_tensor
from gradserve.server.engine import execute as engine
from gradserve.server.rpc.server import ServerOptions, start_server
from gradserve.server.service.registry import load_registry
from gradserve.proto import REPLICA_KEY
from serve_process import ServeProcess, reserved_port, thread_count

POOL = 4  # server threads: few, so that the pool is full before a test counts threads
CHAIN = 200  # Nap nodes in a long call; at 0.02 s each a call that is not stopped runs for 4 s


@pytest.fixture(scope="module")
def nap_registry():
    """The installed layers plus the test plugin's Nap and ToComplex, loaded through an entry point."""
    test_plugin = importlib.metadata.EntryPoint("fault_layers", "fault_layers", "gradserve")
    return load_registry({}, [*importlib.metadata.entry_points(group="gradserve"), test_plugin])


@pytest.fixture()
def nap_server(nap_registry):
    """An in-process server of its own per test, so that one test's leftover session cannot fail another."""
    running = start_server("127.0.0.1:0", nap_registry, ServerOptions(max_workers=POOL))
    yield running
    running.stop(None)


@pytest.fixture()
def stub(nap_server):
    with grpc.insecure_channel(f"127.0.0.1:{nap_server.port}") as channel:
        stub = pb_grpc.GradServeStub(channel)
        fill_pool(stub)
        fault_layers.reset()
        yield stub


def naps(n: int, forward_seconds: float = 0.02, backward_seconds: float = 0.0, loss: bool = True) -> pb.GraphRef:
    """x -> n Nap nodes -> Sum as "loss" (without ``loss``: the last Nap is the output)."""
    g = pb.Graph(inputs=[pb.ValueInfo(name="x")])
    previous = "x"
    for i in range(n):
        g.nodes.add(name=f"nap{i}", op="Nap", inputs=[previous], attrs={
            "forward_seconds": pb.AttrValue(f=forward_seconds), "backward_seconds": pb.AttrValue(f=backward_seconds)})
        previous = f"nap{i}"
    if loss:
        g.nodes.add(name="loss", op="Sum", inputs=[previous])
        previous = "loss"
    g.outputs.add(name="loss", value=previous)
    return pb.GraphRef(graph=g)


FEEDS = {"x": to_tensor(np.arange(3.0))}


def fill_pool(stub) -> None:
    """Run POOL calls at once, so the server's thread pool has all its threads before a test counts them."""
    calls = [stub.Run.future(pb.RunRequest(graph=naps(3, 0.05), feeds=FEEDS), timeout=30) for _ in range(POOL)]
    for call in calls:
        call.result()


def wait_until(predicate, what: str, timeout: float = 30.0) -> None:
    give_up = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > give_up:
            raise AssertionError(f"after {timeout}s still not true: {what}")
        time.sleep(0.02)


def threads_in_engine() -> list[str]:
    """Names of this process's threads that are running the engine right now."""
    busy = []
    names = {t.ident: t.name for t in threading.enumerate()}
    for ident, frame in sys._current_frames().items():
        while frame is not None:
            if frame.f_code.co_filename == engine.__file__:
                busy.append(names.get(ident, str(ident)))
                break
            frame = frame.f_back
    return busy


def assert_nothing_left(nap_server, threads_before: int) -> None:
    """No thread still runs the engine, the thread count is back, and the store holds no session."""
    wait_until(lambda: not threads_in_engine(), "no server thread runs the engine")
    wait_until(lambda: thread_count(os.getpid()) <= threads_before, f"thread count back to {threads_before}")
    assert nap_server.service.sessions.count == 0


@pytest.mark.parametrize("method", ["Forward", "Run"])
def test_cancelled_call_stops_and_leaves_no_session_or_thread(nap_server, stub, method):
    """A call cancelled mid-graph stops between nodes; it keeps no session and no thread."""
    threads_before = thread_count(os.getpid())
    if method == "Forward":
        call = stub.Forward.future(pb.ForwardRequest(graph=naps(CHAIN), feeds=FEEDS, keep_for_backward=True))
    else:
        call = stub.Run.future(pb.RunRequest(graph=naps(CHAIN), feeds=FEEDS))
    wait_until(lambda: fault_layers.entered("forward") >= 1, "the call reached its first node")
    call.cancel()
    assert call.code() is grpc.StatusCode.CANCELLED
    assert_nothing_left(nap_server, threads_before)
    assert fault_layers.entered("forward") < CHAIN, "the call ran to the end after it was cancelled"


def test_killed_client_process_leaves_no_session_or_thread(nap_server, stub):
    """A client process killed with SIGKILL during Forward leaves no session and no busy thread on the server."""
    threads_before = thread_count(os.getpid())
    request = pb.ForwardRequest(graph=naps(CHAIN), feeds=FEEDS, keep_for_backward=True).SerializeToString()
    client = subprocess.Popen(
        [sys.executable, "-c", "import sys, grpc; grpc.insecure_channel(sys.argv[1]).unary_unary("
         "'/gradserve.v1.GradServe/Forward')(sys.stdin.buffer.read())", f"127.0.0.1:{nap_server.port}"],
        stdin=subprocess.PIPE,
    )
    try:
        client.stdin.write(request)
        client.stdin.close()
        wait_until(lambda: fault_layers.entered("forward") >= 1, "the client's call reached its first node")
    finally:
        client.kill()
        client.wait()
    assert client.returncode == -signal.SIGKILL
    assert_nothing_left(nap_server, threads_before)
    assert fault_layers.entered("forward") < CHAIN, "the call ran to the end after its client died"


def test_caller_gone_during_the_last_node_leaves_no_session(nap_server, stub):
    """A Forward whose caller leaves while its last node runs keeps no session (no check follows that node)."""
    threads_before = thread_count(os.getpid())
    graph = naps(1, forward_seconds=1.0, loss=False)
    call = stub.Forward.future(pb.ForwardRequest(graph=graph, feeds=FEEDS, keep_for_backward=True))
    wait_until(lambda: fault_layers.entered("forward") == 1, "the call reached its only Nap")
    call.cancel()
    assert_nothing_left(nap_server, threads_before)


def test_cancelled_backward_releases_the_session_it_was_ending(nap_server, stub):
    """Backward (without retain) cancelled mid-graph ends its session, as a finished one would have."""
    threads_before = thread_count(os.getpid())
    forward = stub.Forward(pb.ForwardRequest(graph=naps(CHAIN, 0.0, 0.02), feeds=FEEDS, keep_for_backward=True))
    assert nap_server.service.sessions.count == 1
    call = stub.Backward.future(pb.BackwardRequest(session_id=forward.session_id))
    wait_until(lambda: fault_layers.entered("backward") >= 1, "Backward reached its first node")
    call.cancel()
    assert_nothing_left(nap_server, threads_before)
    assert fault_layers.entered("backward") < CHAIN


def test_forward_whose_outputs_cannot_be_sent_keeps_no_session(nap_server, stub):
    """When a Forward fails after its pass was stored (an output the wire cannot carry), the session goes too."""
    g = pb.Graph(inputs=[pb.ValueInfo(name="x")], nodes=[pb.Node(name="c", op="ToComplex", inputs=["x"])],
                 outputs=[pb.Output(name="c", value="c")])
    with pytest.raises(grpc.RpcError) as failure:
        stub.Forward(pb.ForwardRequest(graph=pb.GraphRef(graph=g), feeds=FEEDS, keep_for_backward=True))
    assert failure.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INTERNAL)
    assert nap_server.service.sessions.count == 0


# -- a worker killed under load --

def small_graph() -> pb.GraphRef:
    """loss = sum(tanh(x * w))."""
    g = pb.Graph(inputs=[pb.ValueInfo(name="x"), pb.ValueInfo(name="w")],
                 nodes=[pb.Node(name="h", op="Mul", inputs=["x", "w"]), pb.Node(name="t", op="Tanh", inputs=["h"]),
                        pb.Node(name="loss", op="Sum", inputs=["t"])],
                 outputs=[pb.Output(name="loss", value="loss")])
    return pb.GraphRef(graph=g)


class WorkerLoad(threading.Thread):
    """One client on its own connection sending checked Runs; remembers which worker answered each."""

    def __init__(self, target: str, seed: int):
        super().__init__(name=f"worker-load-{seed}", daemon=True)
        self.channel = grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        self.stub = pb_grpc.GradServeStub(self.channel)
        self.rng = np.random.default_rng(seed)
        self.stop = threading.Event()
        self.served_by: list[int] = []  # worker pid of each successful call, in order
        self.failures: list[tuple[int, grpc.StatusCode, str]] = []  # (calls served before it, code, details)
        self.wrong: list[str] = []

    def run(self) -> None:
        graph = small_graph()
        try:
            while not self.stop.is_set():
                x, w = self.rng.standard_normal(16), self.rng.standard_normal(16)
                request = pb.RunRequest(graph=graph, feeds={"x": to_tensor(x), "w": to_tensor(w)})
                try:
                    # wait_for_ready: after a worker dies, the next call waits for the reconnection.
                    response, call = self.stub.Run.with_call(request, timeout=30, wait_for_ready=True)
                except grpc.RpcError as error:
                    self.failures.append((len(self.served_by), error.code(), error.details()))
                    continue
                replica = dict(call.trailing_metadata() or ())[REPLICA_KEY]
                self.served_by.append(int(replica.rsplit(":", 1)[1]))
                t = np.tanh(x * w)
                if not (np.allclose(from_tensor(response.outputs["loss"]), t.sum())
                        and np.allclose(from_tensor(response.grads["x"]), (1 - t**2) * w)):
                    self.wrong.append(f"wrong result from worker {self.served_by[-1]}")
        finally:
            self.channel.close()


def test_sigkilled_worker_leaves_the_other_workers_serving():
    """Under load, SIGKILL to one of two workers: the other's clients never fail, every client is served again."""
    with reserved_port() as port:
        served = ServeProcess("--workers", "2", "--log-level", "WARNING", port=port)
        served.start()
    clients: list[WorkerLoad] = []
    try:
        wait_until(lambda: len(served.children()) == 2, "two workers are running")
        workers = set(served.children())
        # The kernel spreads connections over the workers by hash: add clients until both workers have some.
        while len(clients) < 32 and (len(clients) < 8 or len({c.served_by[-1] for c in clients}) < 2):
            clients.append(WorkerLoad(served.target, seed=len(clients)))
            clients[-1].start()
            wait_until(lambda: len(clients[-1].served_by) >= 1, "the new client was served")
        wait_until(lambda: all(len(c.served_by) >= 5 for c in clients), "every client was served 5 times")
        pinned = {c: c.served_by[-1] for c in clients}  # a client's one connection goes to one worker
        assert set(pinned.values()) == workers, f"both workers {workers} serve before the kill: {pinned}"
        victim = Counter(pinned.values()).most_common(1)[0][0]
        marks = {c: len(c.served_by) for c in clients}
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: all(len(c.served_by) >= marks[c] + 20 for c in clients),
                   "every client completed 20 more calls after the kill", timeout=60)
        wait_until(lambda: len(set(served.children()) - {victim}) == 2, "the supervisor started a replacement")
    finally:
        for c in clients:
            c.stop.set()
        for c in clients:
            c.join(60)
        exit_code = served.stop()
    story = f"victim {victim}; " + "; ".join(
        f"{c.name} on {pinned[c]}: served by {dict(Counter(c.served_by))}, failures {c.failures}" for c in clients)
    assert not [w for c in clients for w in c.wrong], story
    for c in clients:
        after_kill = c.served_by[marks[c]:]
        if pinned[c] == victim:
            # Its connection died: the call in flight may fail UNAVAILABLE, then it reconnects elsewhere.
            assert all(code is grpc.StatusCode.UNAVAILABLE and at >= marks[c] for at, code, _ in c.failures), story
            assert victim not in after_kill[1:], f"the killed worker answered after the kill: {story}"
        else:
            assert not c.failures, f"a client of a surviving worker saw failures: {story}"
            assert set(after_kill) == {pinned[c]}, f"a surviving worker stopped serving its clients: {story}"
    assert exit_code == 0, served.log()[-3000:]
