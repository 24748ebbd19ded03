"""Issue 13, points 7 and 8: the graph store keeps every name apart, serialises writes, never loads a torn
write, bounds names and bytes, and every worker of --workers sees every name."""

from __future__ import annotations

import threading

import grpc
import numpy as np
import pytest

import gradserve.client as gs
from gradserve.proto import kserve_pb2 as kpb
from gradserve.proto import kserve_pb2_grpc as kpb_grpc
from serve_process import ServeProcess, reserved_port


def scaled(factor: float) -> gs.Graph:
    """A graph whose output tells which one it is: sum(x) * factor."""
    g = gs.Graph()
    g.output(g.Sum(g.input("x")) * factor, "out")
    return g


def served_factor(client, name: str) -> float:
    return float(client.run(name, {"x": np.ones(1)}).outputs["out"])


def test_names_that_sanitise_alike_each_survive_a_restart(tmp_path):
    """`a/b`, `a_b` and `a:b` each keep their own graph across a restart."""
    names = {"a/b": 2.0, "a_b": 3.0, "a:b": 5.0}
    with ServeProcess("--graph-store", str(tmp_path), "--log-level", "WARNING") as process, \
            gs.connect(process.target) as client:
        for name, factor in names.items():
            client.register(scaled(factor), name=name)
    with ServeProcess("--graph-store", str(tmp_path), "--log-level", "WARNING") as process, \
            gs.connect(process.target) as client:
        assert {n: served_factor(client, n) for n in names} == names


def test_concurrent_registrations_of_one_name_serve_what_a_restart_loads(tmp_path):
    """50 concurrent registrations of one name: the graph served before a restart is the one served after."""
    with ServeProcess("--graph-store", str(tmp_path), "--log-level", "WARNING") as process, \
            gs.connect(process.target) as client:
        threads = [threading.Thread(target=client.register, args=(scaled(float(i)),), kwargs={"name": "m"})
                   for i in range(50)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        before = served_factor(client, "m")
    with ServeProcess("--graph-store", str(tmp_path), "--log-level", "WARNING") as process, \
            gs.connect(process.target) as client:
        assert served_factor(client, "m") == before


def test_a_torn_write_is_removed_and_never_loaded(tmp_path):
    """A temporary file a killed writer left behind is neither served nor kept."""
    (tmp_path / ".tmp-abc123.partial").write_text('{"name": "ghost", "version": "1", "graph": "{}"}')
    (tmp_path / ".tmp-old.json").write_text('{"name": "ghost", "version": "1", "graph": "{}"}')
    with ServeProcess("--graph-store", str(tmp_path), "--log-level", "WARNING") as process, \
            gs.connect(process.target) as client:
        with pytest.raises(gs.GradserveError) as info:
            client.run("ghost", {"x": np.ones(1)})
    assert info.value.code == grpc.StatusCode.NOT_FOUND
    assert not list(tmp_path.glob(".tmp-*"))


def test_a_long_name_is_invalid_argument_without_server_paths(tmp_path):
    """A name over max-graph-name-length is INVALID_ARGUMENT, its message short and free of the store's path."""
    with ServeProcess("--graph-store", str(tmp_path), "--log-level", "WARNING") as process, \
            gs.connect(process.target) as client:
        with pytest.raises(gs.GradserveError) as info:
            client.register(scaled(1.0), name="n" * 250)
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT and "max-graph-name-length" in info.value.message
        assert str(tmp_path) not in info.value.message and len(info.value.message) < 1000
        client.register(scaled(1.0), name="n" * 200)  # at the limit: a file name of fixed length
        assert served_factor(client, "n" * 200) == 1.0


def test_the_store_is_bounded_in_bytes(tmp_path):
    """Past max-store-bytes a registration is RESOURCE_EXHAUSTED, and what is stored stays served."""
    with ServeProcess("--graph-store", str(tmp_path), "--max-store-bytes", "2K", "--log-level", "WARNING") as process, \
            gs.connect(process.target) as client:
        registered = []
        with pytest.raises(gs.GradserveError) as info:
            for i in range(100):
                client.register(scaled(float(i)), name=f"g{i}")
                registered.append(i)
        assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "max-store-bytes" in info.value.message
        assert registered and sum(p.stat().st_size for p in tmp_path.glob("*.json")) <= 2048
        assert served_factor(client, f"g{registered[-1]}") == registered[-1]


def test_every_worker_sees_a_name_registered_through_another(tmp_path):
    """With --workers 2 and a shared store, a fresh connection to any worker serves a just-registered name."""
    with reserved_port() as port, ServeProcess("--workers", "2", "--graph-store", str(tmp_path), "--log-level",
                                               "WARNING", port=port) as process:
        for round_ in range(5):
            with gs.connect(process.target) as client:
                client.register(scaled(float(round_)), name=f"shared{round_}")
            for _ in range(8):  # fresh connections land on either worker (SO_REUSEPORT)
                with grpc.insecure_channel(process.target, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
                    ready = kpb_grpc.GRPCInferenceServiceStub(ch).ModelReady(
                        kpb.ModelReadyRequest(name=f"shared{round_}"), timeout=10)
                    assert ready.ready
