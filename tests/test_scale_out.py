"""Scale-out: a round_robin client spreads stateless Runs over three `gradserve serve` replicas."""

from __future__ import annotations

import contextlib
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
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


def test_max_connection_age_makes_a_long_lived_client_reconnect_without_failing_a_call():
    """With --max-connection-age the server asks each client to reconnect (GOAWAY) once its connection is that
    old: the channel leaves READY and connects again (resolving its target again, which is how a round_robin
    client finds replicas added since), and no call fails on the way."""
    with ServeProcess("--max-connection-age", "0.5", "--grace", "5") as server:
        channel = grpc.insecure_channel(server.target)
        states: list[grpc.ChannelConnectivity] = []
        channel.subscribe(states.append)
        try:
            with gs.Client(server.target, channel=channel, timeout=30) as client:
                graph = apple_graph()
                give_up = time.monotonic() + 20
                while states.count(grpc.ChannelConnectivity.READY) < 3 and time.monotonic() < give_up:
                    result = client.run(graph, APPLE_FEEDS)
                    assert_apple(result.outputs, result.grads)
                    time.sleep(0.05)
        finally:
            channel.unsubscribe(states.append)
    assert states.count(grpc.ChannelConnectivity.READY) >= 3, states  # connected, then reconnected twice


def test_connection_age_is_off_by_default():
    """No --max-connection-age: the server sets none of gRPC's connection-age options (connections live on)."""
    from gradserve.server.rpc.server import ServerOptions, connection_age_options
    from gradserve.server.cli import parse_args, server_options_from_args

    default = server_options_from_args(parse_args(["serve"]))
    assert default.max_connection_age is None and connection_age_options(default) == []
    aged = server_options_from_args(parse_args(["serve", "--max-connection-age", "300", "--grace", "20"]))
    assert dict(connection_age_options(aged)) == {"grpc.max_connection_age_ms": 300_000,
                                                  "grpc.max_connection_age_grace_ms": 20_000}
    assert connection_age_options(ServerOptions()) == []
