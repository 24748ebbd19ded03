"""Under --max-memory the process stays alive: over-budget calls get RESOURCE_EXHAUSTED, SIGTERM still drains."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

import gradserve.client as gs
from gradserve.server.engine.errors import LimitError
from gradserve.server.runtime.memory_cap import MemoryBudget
from serve_process import ServeProcess, rss_bytes

TOKEN = "hostile-memory-token"


def relu_graph() -> gs.Graph:
    g = gs.Graph()
    g.output(g.Relu(g.input("x")), "y")
    return g


def outcome(call) -> str:
    """"OK" or the status code's name of a client call."""
    try:
        call()
        return "OK"
    except gs.GradserveError as error:
        return error.code.name
    except grpc.RpcError as error:
        return error.code().name


def canary(target: str, token: str | None = None) -> None:
    with gs.connect(target, token=token, timeout=10) as client:
        y = client.run(relu_graph(), {"x": np.array([-1.0, 3.0], np.float32)}, grad=False).outputs["y"]
    np.testing.assert_array_equal(y, [0.0, 3.0])


class PeakRss:
    """The highest resident memory of a process while the block runs, sampled every 20 ms."""

    def __init__(self, pid: int):
        self.pid, self.peak, self._stop = pid, rss_bytes(pid), threading.Event()

    def __enter__(self):
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.02):
            try:
                self.peak = max(self.peak, rss_bytes(self.pid))
            except (OSError, RuntimeError):
                return

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def test_sessions_filling_the_cap_leave_the_server_alive_and_sigterm_drains():
    """400 kept Forward passes of 8 MB (3 GB in all) under a 1 GiB cap: old ones are evicted, Runs still answer,
    and SIGTERM then exits 0."""
    with ServeProcess("--max-memory", "1G", "--log-level", "WARNING") as server:
        x = np.ones(2 << 20, np.float32)
        with gs.connect(server.target, timeout=60) as client:
            codes = [outcome(lambda: client.forward(relu_graph(), {"x": x})) for _ in range(400)]
            assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}
            for _ in range(3):
                assert client.run(relu_graph(), {"x": x}, grad=False).outputs["y"].sum() == x.size
        assert server.alive()
        assert server.stop() == 0, server.log()


def test_12_concurrent_144mb_runs_under_a_1g_cap_leave_the_server_alive():
    """12 concurrent Runs of 144 MB under a 1 GiB cap: each OK or RESOURCE_EXHAUSTED, the server answers
    afterwards and exits 0 on SIGTERM."""
    with ServeProcess("--max-memory", "1G", "--log-level", "WARNING") as server:
        x = np.ones(36 << 20, np.float32)

        def one(_):
            with gs.connect(server.target, timeout=120) as client:
                return outcome(lambda: client.run(relu_graph(), {"x": x}, grad=False))

        with ThreadPoolExecutor(12) as pool:
            codes = list(pool.map(one, range(12)))
        assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}, codes
        assert "OK" in codes
        assert server.alive(), server.log()
        canary(server.target)
        assert server.stop() == 0, server.log()


def test_a_unary_message_over_the_capped_size_is_refused_before_it_is_read():
    """Under a cap, a unary message bigger than the budget allows per thread is RESOURCE_EXHAUSTED from gRPC,
    and the same data sent by the client (streamed) is served."""
    with ServeProcess("--max-memory", "1G", "--log-level", "WARNING") as server:
        x = np.ones(8 << 20, np.float32)  # 32 MiB
        with grpc.insecure_channel(server.target) as channel:
            raw = channel.unary_unary("/gradserve.v1.GradServe/Forward")
            with pytest.raises(grpc.RpcError) as refused:
                raw(b"\x00" * (32 << 20), timeout=60)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        with gs.connect(server.target, timeout=60) as client:
            assert client.run(relu_graph(), {"x": x}, grad=False).outputs["y"].sum() == x.size
        assert server.stop() == 0


def test_12_concurrent_anonymous_200mib_requests_do_not_reach_memory():
    """A --token --max-memory 2G server refuses 12 concurrent anonymous 200 MiB requests (unary and streamed)
    before reading them: UNAUTHENTICATED, resident memory under 100 MB above idle, and it goes on."""
    with ServeProcess("--max-memory", "2G", "--token", TOKEN, "--log-level", "WARNING") as server:
        payload = b"\x00" * (200 << 20)
        x = np.ones(50 << 20, np.float32)
        idle = rss_bytes(server.pid)

        def unary(_):
            with grpc.insecure_channel(server.target, options=[("grpc.max_send_message_length", 256 << 20)]) as ch:
                return outcome(lambda: ch.unary_unary("/gradserve.v1.GradServe/Run")(payload, timeout=60))

        def streamed(_):
            with gs.connect(server.target, timeout=60) as client:
                return outcome(lambda: client.run(relu_graph(), {"x": x}, grad=False))

        with PeakRss(server.pid) as rss, ThreadPoolExecutor(12) as pool:
            codes = list(pool.map(unary, range(12))) + list(pool.map(streamed, range(12)))
        assert set(codes) == {"UNAUTHENTICATED"}
        assert rss.peak - idle < 100 << 20, (idle, rss.peak)
        canary(server.target, TOKEN)
        assert server.stop() == 0


def test_the_budget_refuses_what_does_not_fit_and_takes_back_what_is_released():
    """MemoryBudget: reservations past the total are LimitError naming --max-memory; released bytes count again;
    what ``held`` reports (sessions) counts too; small calls reserve nothing."""
    held = [0]
    budget = MemoryBudget(100 << 20, held=lambda: held[0])
    first = budget.reserve(60 << 20)
    with pytest.raises(LimitError, match="--max-memory"):
        budget.reserve(60 << 20)
    budget.release(first)
    held[0] = 50 << 20
    with pytest.raises(LimitError):
        budget.reserve(60 << 20)
    assert budget.reserve(1000) == 0
    assert budget.reserved == 0


def test_the_trimmer_trims_once_a_burst_is_over_and_never_during_one():
    """Trimmer: no trim while a large call is in flight; one trim once none has been for quiet_seconds."""
    from gradserve.server.runtime.malloc import Trimmer

    trimmer = Trimmer(quiet_seconds=0.2)
    try:
        trimmer.started()
        trimmer.started()
        trimmer.ended()
        threading.Event().wait(0.5)
        assert trimmer.trims == 0
        trimmer.ended()
        for _ in range(100):
            if trimmer.trims:
                break
            threading.Event().wait(0.05)
        assert trimmer.trims == 1
    finally:
        trimmer.stop()


def test_memory_comes_back_after_a_burst_of_large_calls():
    """After 16 clients sent 160 Runs of 4 and 12 MB, resident memory comes back to within 100 MB of idle
    (a burst left 394 MB of a 57 MB idle server resident before)."""
    with ServeProcess("--log-level", "WARNING") as server:
        idle = rss_bytes(server.pid)
        small, large = np.ones(1 << 20, np.float32), np.ones(3 << 20, np.float32)

        def client_burst(i):
            with gs.connect(server.target, timeout=120) as client:
                for k in range(10):
                    outcome(lambda: client.run(relu_graph(), {"x": large if (i + k) % 4 == 0 else small}))

        with PeakRss(server.pid) as rss, ThreadPoolExecutor(16) as pool:
            list(pool.map(client_burst, range(16)))
        for _ in range(200):  # the trim comes a second after the last large call
            if rss_bytes(server.pid) - idle < 100 << 20:
                break
            threading.Event().wait(0.1)
        assert rss_bytes(server.pid) - idle < 100 << 20, (idle, rss.peak, rss_bytes(server.pid))
