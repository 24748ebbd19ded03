"""Issue 13, points 4 and 6: what sessions and compiled graphs keep is counted as it really is, so the byte
caps bound the server's memory (not just the arrays in it)."""

from __future__ import annotations

import numpy as np

import gradserve.client as gs
from serve_process import ServeProcess, rss_bytes

MiB = 1 << 20


def chain(nodes: int, salt: float = 1.0) -> gs.Graph:
    """A chain of ``nodes`` Relu nodes over a tiny input, ending in a scalar loss (salt makes graphs differ)."""
    g = gs.Graph()
    value = g.input("x")
    for _ in range(nodes - 3):  # with the Sum, the constant and the product: `nodes` in all
        value = g.Relu(value)
    g.output(g.Sum(value) * salt, "loss")
    return g


def test_sessions_of_a_long_chain_stay_within_the_session_cap():
    """With --max-session-bytes 64M, 80 sessions of a 10k-node chain (5x the cap, counted) grow RSS by under
    1.5 x 64 MiB."""
    with ServeProcess("--max-session-bytes", "64M", "--log-level", "WARNING") as process, \
            gs.connect(process.target) as client:
        graph = chain(10_000)
        client.run(graph, {"x": np.ones(4, np.float32)})  # compile and warm up before measuring
        idle = rss_bytes(process.pid)
        sessions = [client.forward(graph, {"x": np.ones(4, np.float32)}) for _ in range(80)]
        grown = rss_bytes(process.pid) - idle
        assert sessions and grown < 1.5 * 64 * MiB, f"RSS grew {grown / MiB:.0f} MiB"


def test_compiled_graphs_stay_within_the_plan_cache_cap():
    """With --max-cached-plan-bytes 64M, 12 different 10k-node graphs (3x the cap, counted) grow RSS by under
    1.5 x 64 MiB."""
    with ServeProcess("--max-cached-plan-bytes", "64M", "--log-level", "WARNING") as process, \
            gs.connect(process.target) as client:
        client.register(chain(10_000, 0.5))
        idle = rss_bytes(process.pid)
        for i in range(12):
            client.register(chain(10_000, float(i)))
        grown = rss_bytes(process.pid) - idle
        assert grown < 1.5 * 64 * MiB, f"RSS grew {grown / MiB:.0f} MiB"
