"""Scale-out: behind a round_robin client, every Session stream stays on one replica while Runs spread."""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import gradserve.client as gs
from test_scale_out import APPLE_FEEDS as FEEDS, APPLE_GRADS as GRADS, apple_graph, replicas  # noqa: F401 - fixture


def test_session_streams_stay_on_one_replica_while_runs_spread(replicas):
    """Streams opened through round_robin each keep their passes on the replica that opened them (a backward
    finds its forward 20 times over), every answer is the chapter's, and unary Runs between them reach all
    three replicas."""
    target = "ipv4:" + ",".join(f"127.0.0.1:{p.port}" for p in replicas)
    expected = {f"{socket.gethostname()}:{p.pid}" for p in replicas}
    graph = apple_graph()
    with gs.connect(target, round_robin=True, timeout=30) as client:
        runs = []
        give_up = time.monotonic() + 30  # subchannels become READY one by one: until all three answered
        while len(runs) < 30 or (set(runs) != expected and time.monotonic() < give_up):
            runs.append(client.run(graph, FEEDS).replica)
        assert set(runs) == expected

        def one_stream(index: int) -> str:
            with client.open_session(graph) as session:
                for step in range(20):
                    outputs = session.forward(FEEDS, pass_id=step % 3)
                    assert outputs["price"] == pytest.approx(1100)
                    grads = session.backward(pass_id=step % 3)
                    assert {k: float(v) for k, v in grads.items()} == pytest.approx(GRADS)
                    runs.append(client.run(graph, FEEDS).replica)  # a unary Run between the stream's steps
                return session.replica

        with ThreadPoolExecutor(6) as pool:
            homes = list(pool.map(one_stream, range(6)))
    assert set(homes) <= expected
    assert set(runs[-120:]) == expected  # the Runs made beside the streams still spread over every replica
