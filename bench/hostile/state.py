"""Amplifying requests and memory held in sessions: what the server allocates for what a client sends."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import gradserve.client as gs
from bench.hostile import Figure

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from serve_process import ServeProcess, rss_bytes  # noqa: E402
from test_hostile_accounting import chain  # noqa: E402
from test_hostile_sizes import AMPLIFIERS, peak_rss  # noqa: E402

MiB = 1 << 20


def figures(quick: bool) -> list[Figure]:
    out = []
    with ServeProcess("--log-level", "WARNING") as process, gs.connect(process.target) as client:
        for attack, (graph, feeds) in AMPLIFIERS.items():
            before = peak_rss(process.pid)
            try:
                client.run(graph, feeds, grad=True)
                outcome = "OK"
            except gs.GradserveError as exc:
                outcome = exc.code.name
            grown = (peak_rss(process.pid) - before) / MiB
            out.append(Figure(attack, f"{outcome}, peak RSS +{grown:.0f} MiB",
                              outcome == "RESOURCE_EXHAUSTED" and grown < 100))
    sessions = 60 if quick else 300
    with ServeProcess("--max-session-bytes", "64M", "--log-level", "WARNING") as process, \
            gs.connect(process.target) as client:
        graph = chain(10_000)
        client.run(graph, {"x": np.ones(4, np.float32)})
        idle = rss_bytes(process.pid)
        kept = [client.forward(graph, {"x": np.ones(4, np.float32)}) for _ in range(sessions)]
        grown = (rss_bytes(process.pid) - idle) / MiB
        out.append(Figure(f"{len(kept)} sessions of a 10k-node chain, --max-session-bytes 64M",
                          f"RSS +{grown:.0f} MiB (goal < 96)", grown < 96))
    return out
