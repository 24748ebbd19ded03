"""The graph store under concurrent writers, colliding names and --workers: what is served is what is stored."""

from __future__ import annotations

import sys
import tempfile
import threading
from pathlib import Path

import grpc

import gradserve.client as gs
from bench.hostile import Figure
from gradserve.proto import kserve_pb2 as kpb
from gradserve.proto import kserve_pb2_grpc as kpb_grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from serve_process import ServeProcess, reserved_port  # noqa: E402
from test_hostile_store import scaled, served_factor  # noqa: E402


def _race(store: str, writers: int) -> bool:
    """``writers`` concurrent registrations of one name; whether a restart serves what was served before."""
    with ServeProcess("--graph-store", store, "--log-level", "WARNING") as process, \
            gs.connect(process.target) as client:
        threads = [threading.Thread(target=client.register, args=(scaled(float(i)),), kwargs={"name": "m"})
                   for i in range(writers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        before = served_factor(client, "m")
    with ServeProcess("--graph-store", store, "--log-level", "WARNING") as process, \
            gs.connect(process.target) as client:
        return served_factor(client, "m") == before


def figures(quick: bool) -> list[Figure]:
    out = []
    trials = 3 if quick else 20
    same = 0
    for _ in range(trials):
        with tempfile.TemporaryDirectory() as store:
            same += _race(store, 50)
    out.append(Figure(f"50 concurrent registrations of one name, then a restart ({trials} trials)",
                      f"served the same graph after the restart in {same} of {trials}", same == trials))

    with tempfile.TemporaryDirectory() as store:
        names = {"a/b": 2.0, "a_b": 3.0, "a:b": 5.0, "a" * 200: 7.0}
        with ServeProcess("--graph-store", store, "--log-level", "WARNING") as process, \
                gs.connect(process.target) as client:
            for name, factor in names.items():
                client.register(scaled(factor), name=name)
        with ServeProcess("--graph-store", store, "--log-level", "WARNING") as process, \
                gs.connect(process.target) as client:
            kept = sum(served_factor(client, n) == f for n, f in names.items())
        out.append(Figure("names a/b, a_b, a:b and a 200-character one, then a restart",
                          f"{kept} of {len(names)} served their own graph", kept == len(names)))

    rounds = 5 if quick else 40
    with tempfile.TemporaryDirectory() as store, reserved_port() as port, \
            ServeProcess("--workers", "2", "--graph-store", store, "--log-level", "WARNING", port=port) as process:
        ready = 0
        for i in range(rounds):
            with gs.connect(process.target) as client:
                client.register(scaled(float(i)), name=f"shared{i}")
            with grpc.insecure_channel(process.target, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
                ready += kpb_grpc.GRPCInferenceServiceStub(channel).ModelReady(
                    kpb.ModelReadyRequest(name=f"shared{i}"), timeout=10).ready
        out.append(Figure(f"--workers 2: a name registered, then ModelReady on a fresh connection ({rounds} times)",
                          f"ready on {ready} of {rounds}", ready == rounds))
    return out
