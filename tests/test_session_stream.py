"""The Session stream: many steps on one stream, each answered in order, errors per step, limits, faults."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import gradserve.client as gs
from gradserve.client import book
from gradserve.client.errors import ServerShuttingDown
from gradserve.client.session_stream import layer_stream
from gradserve.proto import gradserve_pb2 as pb
from gradserve.proto import session_wire
from gradserve.server.rpc.server import ServerOptions, start_server
from gradserve.server.service.limits import Limits
from serve_process import ServeProcess

APPLE_FEEDS = {"apple": np.float64(100), "apple_num": np.float64(2), "tax": np.float64(1.1)}


def apple_graph() -> gs.Graph:
    g = gs.Graph("float64")
    apple, apple_num, tax = g.inputs("apple", "apple_num", "tax")
    g.output(g.Mul(g.Mul(apple, apple_num), tax), "price")
    return g


def apple_reference(apple, apple_num, tax, dprice=1.0):
    """The chapter's numbers by hand: price and the gradient of each input (central differences agree)."""
    return apple * apple_num * tax, {"apple": dprice * apple_num * tax, "apple_num": dprice * apple * tax,
                                     "tax": dprice * apple * apple_num}


def wait_for(predicate, seconds: float = 20.0) -> bool:
    give_up = time.monotonic() + seconds
    while time.monotonic() < give_up:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.fixture()
def own_server(registry):
    """A server of this test's own (its session counts are this test's alone), with tight session limits."""
    running = start_server("127.0.0.1:0", registry, ServerOptions(limits=Limits(max_sessions=3,
                                                                               max_session_bytes=1 << 20)))
    yield running
    running.stop(None)


def test_one_stream_answers_a_thousand_passes_in_order(client):
    """1,000 passes on one stream (forward then backward, and run), each with its own feeds, all right."""
    rng = np.random.default_rng(0)
    with client.open_session(apple_graph()) as session:
        for i in range(1000):
            apple, num, tax, dprice = rng.uniform(0.5, 3.0, 4)
            feeds = {"apple": np.float64(apple), "apple_num": np.float64(num), "tax": np.float64(tax)}
            price, grads = apple_reference(apple, num, tax, dprice)
            if i % 2:
                result = session.run(feeds, seed_grads={"price": np.float64(dprice)})
                outputs, got = result.outputs, result.grads
            else:
                outputs = session.forward(feeds)
                got = session.backward({"price": np.float64(dprice)})
            assert outputs["price"] == pytest.approx(price)
            assert {k: float(v) for k, v in got.items()} == pytest.approx(grads)


def test_an_error_answers_its_step_alone_and_the_stream_goes_on(client):
    """A bad step raises its typed error (code, node, reason); the next steps on the same stream succeed."""
    with client.open_session(apple_graph()) as session:
        with pytest.raises(gs.NotFound, match="no forward pass 0"):
            session.backward()
        with pytest.raises(gs.InvalidArgument) as bad_feed:
            session.forward({"apple": np.ones(3), "apple_num": np.ones(2), "tax": np.float64(1)})
        assert bad_feed.value.node
        with pytest.raises(gs.InvalidArgument, match="feed"):
            session.forward({"apple": np.float64(1)})
        outputs = session.forward(APPLE_FEEDS)
        assert session.backward(retain=True)["tax"] == pytest.approx(200.0)
        assert session.backward()["apple"] == pytest.approx(2.2)  # retained once: a second backward works
        with pytest.raises(gs.NotFound):
            session.backward()
        assert outputs["price"] == pytest.approx(220.0)
        assert session.run(APPLE_FEEDS).grads["apple_num"] == pytest.approx(110.0)


def test_open_by_name_and_inline_and_per_step_graphs(client):
    """The session's graph by name or inline; a step may name another graph; an unknown name is NOT_FOUND."""
    client.register(apple_graph(), name="apple-session")
    with client.open_session("apple-session") as session:
        assert session.run(APPLE_FEEDS).outputs["price"] == pytest.approx(220.0)
        relu = gs.Graph("float64")
        relu.output(relu.Relu(relu.input("x")), "y")
        x = np.array([-1.0, 2.0])
        assert session.forward({"x": x}, graph=relu, pass_id=7)["y"].tolist() == [0.0, 2.0]
        assert session.forward(APPLE_FEEDS)["price"] == pytest.approx(220.0)  # pass 0, the session's graph
        assert session.backward({"y": np.ones(2)}, pass_id=7)["x"].tolist() == [0.0, 1.0]
        assert session.release() is True and session.release() is False
    with pytest.raises(gs.NotFound, match="no-such-graph"):
        client.open_session("no-such-graph")


def test_large_tensors_travel_in_chunks_both_ways(client):
    """Feeds and gradients past session_wire.STREAM_BYTES are chunked and come back equal to a unary Run's."""
    g = gs.Graph("float32")
    g.output(g.Relu(g.input("x")) * g.input("w"), "y")
    x = np.random.default_rng(1).standard_normal(session_wire.STREAM_BYTES // 4 + 1000).astype(np.float32)
    feeds = {"x": x, "w": np.float32(3.0)}
    dy = np.full_like(x, 0.5)
    expected = client.run(g, feeds, seed_grads={"y": dy})
    with client.open_session(g) as session:
        outputs = session.forward(feeds)
        grads = session.backward({"y": dy})
        ran = session.run(feeds, seed_grads={"y": dy})
    assert np.array_equal(outputs["y"], expected.outputs["y"]) and np.array_equal(ran.outputs["y"], outputs["y"])
    for name in ("x", "w"):
        assert np.array_equal(grads[name], expected.grads[name]) and np.array_equal(ran.grads[name], grads[name])


def test_streams_count_against_max_sessions_and_free_it_on_close(own_server):
    """Each open stream is a session under max-sessions (the refusal names the limit); closing one frees it."""
    with gs.connect(f"127.0.0.1:{own_server.port}") as client:
        streams = [client.open_session(apple_graph()) for _ in range(3)]
        assert own_server.service.sessions.count == 3
        with pytest.raises(gs.ResourceExhausted, match="max-sessions"):
            client.open_session(apple_graph())
        streams.pop().close()
        assert own_server.service.sessions.count == 2
        with client.open_session(apple_graph()) as again:
            assert again.run(APPLE_FEEDS).outputs["price"] == pytest.approx(220.0)
        for stream in streams:
            stream.close()
    assert own_server.service.sessions.count == 0


def test_kept_passes_count_against_max_session_bytes(own_server):
    """A forward whose pass would pass max-session-bytes is refused by name; the stream goes on, and the bytes
    its kept passes hold are counted while kept and given back when released."""
    g = gs.Graph("float64")
    g.output(g.Relu(g.input("x")), "y")
    big = {"x": np.ones(1 << 17)}  # 1 MiB as input, and as much again as the output: past the 1 MiB cap
    with gs.connect(f"127.0.0.1:{own_server.port}") as client, client.open_session(g) as session:
        with pytest.raises(gs.ResourceExhausted, match="max-session-bytes"):
            session.forward(big)
        session.forward({"x": np.ones(1000)}, pass_id=1)
        session.forward({"x": np.ones(1000)}, pass_id=2)
        held = own_server.service.sessions.nbytes
        assert held >= 2 * 2 * 8000
        assert session.release(1)
        assert own_server.service.sessions.nbytes == held // 2
        assert session.run(big, grad=False).outputs["y"].shape == (1 << 17,)  # a run keeps nothing: no limit
    assert own_server.service.sessions.nbytes == 0


def test_a_vanished_client_frees_its_session(own_server):
    """A client process killed mid-session (SIGKILL) leaves nothing behind: the server's session count drops."""
    script = textwrap.dedent(f"""
        import sys, time, numpy as np
        import gradserve.client as gs
        client = gs.connect("127.0.0.1:{own_server.port}")
        g = gs.Graph("float64")
        g.output(g.Relu(g.input("x")), "y")
        session = client.open_session(g)
        session.forward({{"x": np.ones(1000)}})
        print("ready", flush=True)
        time.sleep(120)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        assert own_server.service.sessions.count == 1 and own_server.service.sessions.nbytes > 0
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        assert wait_for(lambda: own_server.service.sessions.count == 0)
        assert own_server.service.sessions.nbytes == 0 and own_server.service.streams.count == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_book_layers_ride_one_stream_and_collected_layers_release_their_pass(own_server):
    """The book's layers of one thread share one stream (one session on the server); a layer collected after
    its forward has its pass released with the stream's next step."""
    with gs.connect(f"127.0.0.1:{own_server.port}") as client:
        book.set_client(client)
        try:
            mul, add = book.MulLayer(), book.AddLayer()
            price = mul.forward(100, 2)
            total = add.forward(price, 50)
            assert (total, add.backward(1), mul.backward(1)) == (250, (1, 1), (2, 100))
            assert own_server.service.sessions.count == 1
            layers = [book.Relu() for _ in range(5)]
            for layer in layers:
                layer.forward(np.array([-1.0, 1.0]))
            (session,) = own_server.service.streams.open_sessions
            assert len(session._passes) == 5
            del layers, layer
            gc.collect()
            assert mul.forward(3, 4) == 12
            assert len(session._passes) == 1
        finally:
            book.set_client(None)
    assert wait_for(lambda: own_server.service.sessions.count == 0)


def test_sigterm_ends_streams_with_a_typed_error():
    """SIGTERM: the stream's next step gets UNAVAILABLE saying the server is going away (ServerShuttingDown)."""
    with ServeProcess("--grace", "20") as server:
        with gs.connect(server.target) as client:
            session = client.open_session(apple_graph())
            session.forward(APPLE_FEEDS)
            server.proc.send_signal(signal.SIGTERM)
            give_up = time.monotonic() + 15
            with pytest.raises(ServerShuttingDown, match="shutting down") as ended:
                while time.monotonic() < give_up:  # until the server has taken the signal in
                    session.run(APPLE_FEEDS)
                    time.sleep(0.02)
            assert ended.value.code.name == "UNAVAILABLE"
            with pytest.raises(ServerShuttingDown):
                session.run(APPLE_FEEDS)  # the stream is over: every later step says so
            session.close()
        assert server.proc.wait(20) == 0


def test_send_changes_sends_only_what_changed_and_gives_the_same_numbers(client):
    """A forward with send_changes after a few elements of a parameter changed (a numerical gradient's step)
    gives what a forward of the whole arrays gives; so does one where most changed, or nothing did."""
    rng = np.random.default_rng(3)
    g = gs.Graph("float64")
    g.output(g.Affine(g.input("x"), g.input("W"), g.input("b")), "out")
    x, W, b = rng.random((3, 64)), rng.random((64, 32)), np.zeros(32)
    with client.open_session(g) as session:
        for change in ("none", "one", "few", "most", "shape"):
            if change == "one":
                W[5, 7] += 1e-4
            elif change == "few":
                W[:3] -= 0.5
            elif change == "most":
                W = rng.random((64, 32))
            elif change == "shape":
                x = rng.random((5, 64))
            changed = session.forward({"x": x, "W": W, "b": b}, pass_id=1, send_changes=True)["out"]
            whole = session.forward({"x": x, "W": W, "b": b}, pass_id=2)["out"]
            assert np.array_equal(changed, whole) and np.allclose(whole, x @ W + b), change
            grads = session.backward({"out": np.ones_like(whole)}, pass_id=1)
            assert np.allclose(grads["W"], x.T @ np.ones_like(whole)), change


def test_a_bad_patch_is_answered_and_the_next_forward_sends_everything(client):
    """A patch the server cannot apply (an index past the feed) is INVALID_ARGUMENT naming the feed; both
    sides then forget the kept feeds, so the next forward sends them whole and is right."""
    g = gs.Graph("float64")
    g.output(g.Relu(g.input("x")), "y")
    x = np.arange(-2000.0, 2000.0)
    with client.open_session(g) as session:
        session.forward({"x": x}, send_changes=True)
        bad = pb.SessionRequest(step=pb.SESSION_FORWARD, keep_feeds=True)
        with pytest.raises(gs.InvalidArgument, match="'x'.*patch indices"):
            session._exchange(bad, {"feeds": {}, "patch_indices": {"x": np.array([10 ** 6])},
                                    "patch_values": {"x": np.array([1.0])}})
        session._sent.clear()  # what forward does when its own step fails
        x[0] = 5.0
        assert session.forward({"x": x}, send_changes=True)["y"][0] == 5.0


def test_sigterm_ends_a_waiting_stream_at_once_so_the_drain_does_not_wait_for_it():
    """A stream waiting for its client's next step is ended by SIGTERM itself (the server exits long before
    its 60 s grace), and the client's next step raises ServerShuttingDown with the server's reason."""
    with ServeProcess("--grace", "60") as server:
        with gs.connect(server.target) as client:
            session = client.open_session(apple_graph())
            session.forward(APPLE_FEEDS)
            server.proc.send_signal(signal.SIGTERM)
            assert server.proc.wait(30) == 0
            with pytest.raises(ServerShuttingDown, match="shutting down"):
                session.backward()
            session.close()


def test_book_layers_open_a_new_stream_when_the_server_ended_an_idle_one(registry):
    """The stream guard ends a stream idle past stream-idle-seconds (its next step would get DEADLINE_EXCEEDED
    naming the limit); the book layers notice the ended stream and carry on over a new one."""
    running = start_server("127.0.0.1:0", registry, ServerOptions(limits=Limits(stream_idle_seconds=0.3)))
    try:
        with gs.connect(f"127.0.0.1:{running.port}") as client:
            with client.open_session(apple_graph()) as session:
                assert wait_for(lambda: session.ended)
                with pytest.raises(gs.DeadlineExceeded, match="stream-idle-seconds"):
                    session.run(APPLE_FEEDS)
            book.set_client(client)
            try:
                mul = book.MulLayer()
                assert mul.forward(3, 4) == 12 and mul.backward(1) == (4, 3)
                first = layer_stream(client)
                assert wait_for(lambda: first.ended)
                assert mul.forward(5, 6) == 30 and mul.backward(2) == (12, 10)
                assert layer_stream(client) is not first
            finally:
                book.set_client(None)
    finally:
        running.stop(None)


def test_open_streams_are_capped_by_max_streams(registry):
    """Session streams count against the stream guard's max-streams (one peer may hold half): one more is
    refused by name, and closing one makes room."""
    running = start_server("127.0.0.1:0", registry, ServerOptions(limits=Limits(max_streams=4)))
    try:
        with gs.connect(f"127.0.0.1:{running.port}") as client:
            streams = [client.open_session(apple_graph()) for _ in range(2)]
            with pytest.raises(gs.ResourceExhausted, match="max-streams"):
                client.open_session(apple_graph())
            streams.pop().close()
            with client.open_session(apple_graph()) as again:
                assert again.run(APPLE_FEEDS).outputs["price"] == pytest.approx(220.0)
            for stream in streams:
                stream.close()
    finally:
        running.stop(None)
