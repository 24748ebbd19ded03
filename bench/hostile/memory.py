"""Memory under --max-memory: calls that do not fit are refused, the process lives, SIGTERM drains; bursts give back."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np

import gradserve.client as gs
from bench.hostile import Figure
from bench.hostile._process import PeakRss, Served, canary_seconds, mib, outcome, relu_graph

TOKEN = "hostile-bench-token"


def _tally(codes: list[str]) -> str:
    return ", ".join(f"{codes.count(code)} {code}" for code in sorted(set(codes)))


def _concurrent_runs(count: int, nbytes: int, cap: str) -> Figure:
    with Served("--max-memory", cap) as served:
        x = np.ones(nbytes // 4, np.float32)

        def one(_):
            with gs.connect(served.target, timeout=300) as client:
                return outcome(lambda: client.run(relu_graph(), {"x": x}, grad=False))

        with PeakRss(served) as rss, ThreadPoolExecutor(count) as pool:
            codes = list(pool.map(one, range(count)))
        alive = served.alive()
        canary = canary_seconds(served.target, timeout=10) if alive else None
        code = served.stop()
    return Figure(f"{count} concurrent Runs of {nbytes / 1e6:.0f} MB under --max-memory {cap}",
                  f"{_tally(codes)}; peak RSS {mib(rss.peak)}; alive {alive}, a small Run then "
                  f"{'answered' if canary is not None else 'failed'}; SIGTERM exit code {code}",
                  alive and canary is not None and code == 0 and set(codes) <= {"OK", "RESOURCE_EXHAUSTED"})


def _sessions(count: int, nbytes: int, cap: str) -> Figure:
    with Served("--max-memory", cap) as served:
        x = np.ones(nbytes // 4, np.float32)
        with PeakRss(served) as rss, gs.connect(served.target, timeout=120) as client:
            codes = [outcome(lambda: client.forward(relu_graph(), {"x": x})) for _ in range(count)]
        alive = served.alive()
        canary = canary_seconds(served.target, timeout=10) if alive else None
        code = served.stop()
    return Figure(f"{count} kept Forward passes of {nbytes / 1e6:.0f} MB ({count * nbytes / 1e9:.1f} GB) under "
                  f"--max-memory {cap}",
                  f"{_tally(codes)} (the oldest evicted); peak RSS {mib(rss.peak)}; alive {alive}, a small Run "
                  f"then {'answered' if canary is not None else 'failed'}; SIGTERM exit code {code}",
                  alive and canary is not None and code == 0)


def _anonymous(count: int, nbytes: int) -> Figure:
    with Served("--max-memory", "2G", "--token", TOKEN) as served:
        payload = b"\x00" * nbytes
        x = np.ones(nbytes // 4, np.float32)
        idle = served.rss()

        def unary(_):
            with grpc.insecure_channel(served.target, options=[("grpc.max_send_message_length", -1)]) as channel:
                return outcome(lambda: channel.unary_unary("/gradserve.v1.GradServe/Run")(payload, timeout=120))

        def streamed(_):
            with gs.connect(served.target, timeout=120) as client:
                return outcome(lambda: client.run(relu_graph(), {"x": x}, grad=False))

        with PeakRss(served) as rss, ThreadPoolExecutor(count) as pool:
            codes = list(pool.map(unary, range(count))) + list(pool.map(streamed, range(count)))
        alive = served.alive()
        code = served.stop()
    grew = rss.peak - idle
    return Figure(f"{count} unary and {count} streamed anonymous requests of {mib(nbytes)} at once, "
                  "--token --max-memory 2G",
                  f"{_tally(codes)}; RSS {mib(idle)} idle, {mib(rss.peak)} peak (+{mib(grew)}); alive {alive}; "
                  f"SIGTERM exit code {code}",
                  alive and code == 0 and set(codes) == {"UNAUTHENTICATED"} and grew < 100 << 20)


def _burst(clients: int, calls: int) -> Figure:
    with Served() as served:
        idle = served.rss()
        small, large = np.ones(1 << 20, np.float32), np.ones(3 << 20, np.float32)

        def burst(i):
            with gs.connect(served.target, timeout=300) as client:
                for k in range(calls):
                    outcome(lambda: client.run(relu_graph(), {"x": large if (i + k) % 4 == 0 else small}))

        with PeakRss(served) as rss, ThreadPoolExecutor(clients) as pool:
            list(pool.map(burst, range(clients)))
        right_after = served.rss()
        time.sleep(3.0)
        later = served.rss()
    return Figure(f"{clients} clients x {calls} Runs of 4 and 12 MB (with gradients), then 3 s idle",
                  f"RSS {mib(idle)} idle, {mib(rss.peak)} peak, {mib(right_after)} right after, {mib(later)} "
                  "3 s later", later - idle < 100 << 20)


def figures(quick: bool) -> list[Figure]:
    return [
        _concurrent_runs(12, 144_000_000, "1G"),
        _sessions(400 if quick else 1000, 8_000_000, "1G"),
        _anonymous(12, 200 << 20),
        _burst(16, 10 if quick else 40),
    ]
