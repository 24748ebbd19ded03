"""Session stream cases: a round trip and 16 streams' throughput against the unary echo, and the book's ch05
gradient check through the remote book layers against the same layers over unary calls."""

from __future__ import annotations

import itertools
import threading
import time

import numpy as np

from gradserve.client import book
from gradserve.proto import gradserve_pb2 as pb
from gradserve.proto import session_wire

from bench import remote_book, timing, workloads
from bench.echo import StreamEcho
from bench.report import Row
from bench.servers import Echo, ServerProcess, gradserve_client
from bench.sizes import Sizes


def step_bytes(feeds) -> bytes:
    """The bytes of the run step the client sends on the stream: what the echo carries as its baseline."""
    first, _ = session_wire.messages(pb.SessionRequest(step=pb.SESSION_RUN), {"feeds": feeds, "output_grads": {}})
    return first.data


def round_trip(client, echo: Echo, sizes: Sizes) -> Row:
    graph, feeds = workloads.apple()
    payload = step_bytes(feeds)
    stream_echo = StreamEcho(echo.channel)
    try:
        with client.open_session(graph) as session:
            t = timing.medians({"session": lambda: session.run(feeds), "echo": lambda: echo(payload),
                                "stream echo": lambda: stream_echo(payload)}, sizes.rounds, sizes.tiny_calls)
    finally:
        stream_echo.close()
    return Row("session stream: apple graph, one run step (forward+backward) p50 / unary echo p50", "µs",
               t["session"] * 1e6, t["echo"] * 1e6, "<= 1.0",
               f"echo of the {len(payload)}-byte step; the same bytes echoed on an open stream: "
               f"{t['stream echo'] * 1e6:.0f} µs ({t['stream echo'] / t['echo']:.2f} of the unary echo)")


def throughput(client, echo: Echo, sizes: Sizes) -> Row:
    graph, feeds = workloads.apple()
    payload = step_bytes(feeds)
    streams = [client.open_session(graph) for _ in range(sizes.threads)]
    turn = itertools.count()
    local = threading.local()

    def session_pass():
        stream = getattr(local, "stream", None)
        if stream is None:  # timing.rate starts new threads each round: each takes a stream of its own
            stream = local.stream = streams[next(turn) % len(streams)]
        return stream.run(feeds)

    try:
        r = timing.rates({"session": session_pass, "echo": lambda: echo(payload)}, sizes.threads,
                         sizes.throughput_seconds, sizes.throughput_rounds)
    finally:
        for stream in streams:
            stream.close()
    return Row(f"session streams: {sizes.threads} threads each on its own stream, tiny graph, passes/s / unary "
               "echo calls/s", "/s", r["session"], r["echo"], ">= 1.0",
               f"the echo's threads share one channel, as the streams do; both servers with "
               f"--max-workers {2 * sizes.threads + 8} (and --max-streams {2 * sizes.threads}: one peer may open half)")


def gradient_check(client, echo: Echo, sizes: Sizes) -> Row:
    """The chapter's gradient_check (TwoLayerNet 784-50-10, 3 samples, float64) over its first elements of each
    parameter: the remote book layers (one Session stream) against the same classes over unary calls."""
    elements = max(2, sizes.tiny_calls // 10)
    rng = np.random.default_rng(0)
    x, t = rng.random((3, 784)), np.array([3, 1, 4])
    book.set_client(client)
    try:
        nets = {"stream": remote_book.TwoLayerNet(book, 784, 50, 10),
                "unary": remote_book.TwoLayerNet(remote_book.unary_layers(client), 784, 50, 10)}
        seconds = {name: [] for name in nets}
        for name, net in nets.items():  # warm up: graphs registered, streams open
            remote_book.gradient_check(net, x, t, 1)
        for _ in range(max(1, sizes.rounds // 2)):
            for name, net in nets.items():
                start = time.perf_counter()
                diffs = remote_book.gradient_check(net, x, t, elements)
                seconds[name].append(time.perf_counter() - start)
                assert max(diffs.values()) < 1e-6, diffs  # the chapter's check, passed
    finally:
        book.set_client(None)
    evaluations = remote_book.loss_evaluations(nets["stream"], elements)
    full = remote_book.loss_evaluations(nets["stream"])
    stream, unary = min(seconds["stream"]), min(seconds["unary"])
    return Row(f"book ch05 gradient check through the remote book layers: Session stream / unary calls", "s",
               stream, unary, "<= 0.33",
               f"first {elements} elements of each parameter ({evaluations} losses); the whole check "
               f"({full} losses) at this rate: {stream / evaluations * full:.0f} s vs {unary / evaluations * full:.0f} s")


CASES = {"session": round_trip, "session_throughput": throughput, "session_gradcheck": gradient_check}
NAMES = tuple(CASES)


def all_cases(sizes: Sizes, only) -> list[Row]:
    wanted = [name for name in CASES if only is None or name in only]
    rows: list[Row] = []
    if not wanted:
        return rows
    # 16 streams from one peer: the stream guard lets one peer open half of --max-streams, and --max-streams
    # leaves one worker thread for unary calls; the echo server gets the same thread pool.
    streams = 2 * sizes.threads
    with ServerProcess("gradserve", max_workers=streams + 8, max_streams=streams) as gs_server, \
            ServerProcess("echo", max_workers=streams + 8) as echo_server:
        client, echo = gradserve_client(gs_server.target), Echo(echo_server.target)
        try:
            for name in wanted:
                rows.append(CASES[name](client, echo, sizes))
        finally:
            client.close()
            echo.close()
    return rows
