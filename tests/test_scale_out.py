"""Scale-out: a round_robin client spreads stateless Runs over three `gradserve serve` replicas."""

from __future__ import annotations

import contextlib
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import gradserve.client as gs
from serve_process import ServeProcess

APPLE_FEEDS = {"apple": np.float64(200), "apple_num": np.float64(5), "tax": np.float64(1.1)}
APPLE_GRADS = {"apple": 5.5, "apple_num": 220.0, "tax": 1000.0}


def apple_graph():
    g = gs.Graph("float64")
    apple, apple_num, tax = g.inputs("apple", "apple_num", "tax")
    g.output(apple * apple_num * tax, "price")
    return g


def assert_apple(outputs, grads):
    assert outputs["price"] == pytest.approx(1100)
    assert {name: float(grads[name]) for name in APPLE_GRADS} == pytest.approx(APPLE_GRADS)


@pytest.fixture(scope="module")
def replicas():
    """Three server processes on free loopback ports, started side by side."""
    processes = [ServeProcess() for _ in range(3)]
    with contextlib.ExitStack() as stack:
        for process in processes:
            stack.callback(process.stop)
        with ThreadPoolExecutor(len(processes)) as pool:
            list(pool.map(ServeProcess.start, processes))
        yield processes


@pytest.fixture(scope="module")
def replicas_target(replicas):
    """One gRPC target naming every replica, as a headless Service's DNS name would."""
    return "ipv4:" + ",".join(f"127.0.0.1:{p.port}" for p in replicas)


def test_round_robin_spreads_runs_over_every_replica(replicas, replicas_target):
    """With round_robin=True, Runs of one graph reach all three replicas and every answer is the chapter's."""
    expected = {f"{socket.gethostname()}:{p.pid}" for p in replicas}
    served = []
    with gs.connect(replicas_target, round_robin=True, timeout=30) as client:
        graph = apple_graph()  # registered on one replica; the others get it inline when they miss its id
        # Subchannels become READY one by one: run at least 30 times, then until all three answered (bounded
        # by time, not count: how many calls fit before the last subchannel connects depends on the machine).
        give_up = time.monotonic() + 30
        while len(served) < 30 or (set(served) != expected and time.monotonic() < give_up):
            result = client.run(graph, APPLE_FEEDS)
            assert_apple(result.outputs, result.grads)
            served.append(result.replica)
    assert set(served) == expected


def test_default_client_pins_one_replica_for_sessions(replicas, replicas_target):
    """Without round_robin (pick_first) every call goes to one replica, so Forward/Backward sessions work."""
    with gs.connect(replicas_target, timeout=30) as client:
        graph = apple_graph()
        for _ in range(10):
            session = client.forward(graph, APPLE_FEEDS)
            assert_apple(session.outputs, session.backward())
        served = {client.run(graph, APPLE_FEEDS).replica for _ in range(10)}
    assert len(served) == 1 and served <= {f"{socket.gethostname()}:{p.pid}" for p in replicas}
