"""Load: 16 concurrent clients send mixed Runs and Forward/Backward pairs to a real `gradserve serve`.

Every call must succeed with the right numbers, and the server's memory must come back near where it
started once the load ends and its sessions are released. The load lasts GRADSERVE_LOAD_SECONDS
(default 20, as the issue asks; ``GRADSERVE_LOAD_SECONDS=3 pytest`` for a quick local run).
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from collections import Counter

import grpc
import numpy as np
import pytest

import gradserve.client as gs
from serve_process import ServeProcess, rss_bytes, thread_count
from two_layer_reference import two_layer_net

LOAD_SECONDS = float(os.environ.get("GRADSERVE_LOAD_SECONDS", "20"))
CLIENTS = 16
POOL_THREADS = 16  # the server's --max-workers
# What "back near its start" allows: allocator arenas that glibc keeps for reuse and gRPC's caches.
# A leak at this load is far larger: every Forward session holds ~0.3 MiB, and leaking them for 5 s
# grows RSS by ~400 MiB.
RSS_SLACK = 32 << 20
BATCH, FEATURES, HIDDEN, CLASSES = 32, 64, 96, 10


def mlp_graph() -> gs.Graph:
    """The book's two-layer net: Affine, Relu, Affine, SoftmaxWithLoss."""
    g = gs.Graph()
    x, t, W1, b1, W2, b2 = (g.input(n) for n in ("x", "t", "W1", "b1", "W2", "b2"))
    h = g.Relu(g.Affine(x, W1, b1))
    g.output(g.SoftmaxWithLoss(g.Affine(h, W2, b2), t), "loss")
    return g


def mlp_feeds(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "x": rng.standard_normal((BATCH, FEATURES)),
        "t": rng.integers(0, CLASSES, BATCH).astype(np.int64),
        "W1": rng.standard_normal((FEATURES, HIDDEN)) * 0.1, "b1": rng.standard_normal(HIDDEN) * 0.1,
        "W2": rng.standard_normal((HIDDEN, CLASSES)) * 0.1, "b2": rng.standard_normal(CLASSES) * 0.1,
    }


def gate_graph() -> gs.Graph:
    """out = sigmoid(x * w + b), with w and b broadcast over the batch (a non-scalar output)."""
    g = gs.Graph()
    x, w, b = g.inputs("x", "w", "b")
    g.output(g.Sigmoid(x * w + b), "out")
    return g


def gate_feeds(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"x": rng.standard_normal((BATCH, 256)), "w": rng.standard_normal(256), "b": rng.standard_normal(1)}


def gate_reference(f, dout) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    out = 1 / (1 + np.exp(-(f["x"] * f["w"] + f["b"])))
    dz = dout * out * (1 - out)
    return out, {"x": dz * f["w"], "w": (dz * f["x"]).sum(0), "b": dz.sum().reshape(1)}


def close(actual, expected) -> None:
    np.testing.assert_allclose(actual, expected, rtol=1e-9, atol=1e-12)


class LoadClient(threading.Thread):
    """One client with its own connection, calling until ``stop_at`` and checking every answer."""

    def __init__(self, target: str, seed: int, stop_at: float):
        super().__init__(name=f"load-client-{seed}", daemon=True)
        # A local subchannel pool gives each client its own TCP connection, as separate processes would have.
        channel = grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        self.client = gs.Client(target, channel=channel, timeout=60)
        self.rng = np.random.default_rng(seed)
        self.stop_at = stop_at
        self.calls: Counter[str] = Counter()
        self.errors: list[str] = []
        self.mlp, self.gate = mlp_graph(), gate_graph()

    def run(self) -> None:
        try:
            while True:
                kind = ("run_call", "pair", "retained_pair")[self.rng.integers(3)]
                getattr(self, kind)()
                self.calls[kind] += 1
                if time.monotonic() >= self.stop_at:
                    break
        except Exception:  # noqa: BLE001 - reported by the test with its traceback
            self.errors.append(traceback.format_exc())
        finally:
            self.client.close()

    def run_call(self) -> None:
        """A Run of the two-layer net: loss and every float input's gradient."""
        feeds = mlp_feeds(self.rng)
        result = self.client.run(self.mlp, feeds)
        loss, _, grads = two_layer_net(feeds, feeds["x"], feeds["t"])
        close(result.outputs["loss"], loss)
        assert sorted(result.grads) == sorted(grads)
        for name, grad in grads.items():
            close(result.grads[name], grad)

    def pair(self) -> None:
        """Forward keeping a session, then Backward (which releases it)."""
        feeds = gate_feeds(self.rng)
        dout = self.rng.standard_normal((BATCH, 256))
        out, grads = gate_reference(feeds, dout)
        session = self.client.forward(self.gate, feeds)
        close(session.outputs["out"], out)
        got = session.backward({"out": dout})
        for name, grad in grads.items():
            close(got[name], grad)

    def retained_pair(self) -> None:
        """Forward, two Backwards with different seeds (retain the session), then ReleaseSession."""
        feeds = gate_feeds(self.rng)
        session = self.client.forward(self.gate, feeds)
        for _ in range(2):
            dout = self.rng.standard_normal((BATCH, 256))
            _, grads = gate_reference(feeds, dout)
            got = session.backward({"out": dout}, wrt=["w", "b"], retain=True)
            assert sorted(got) == ["b", "w"]
            close(got["w"], grads["w"])
            close(got["b"], grads["b"])
        session.release()


def drive(target: str, seconds: float, first_seed: int) -> list[LoadClient]:
    """Run CLIENTS clients concurrently for ``seconds``; return them with their counts and errors."""
    stop_at = time.monotonic() + seconds
    clients = [LoadClient(target, first_seed + i, stop_at) for i in range(CLIENTS)]
    for c in clients:
        c.start()
    for c in clients:
        c.join(seconds + 120)
        assert not c.is_alive(), f"{c.name} did not finish: the server stopped answering"
    return clients


@pytest.fixture(scope="module")
def load():
    """The server's memory and threads before and after LOAD_SECONDS of load, and what the clients saw."""
    with ServeProcess("--max-workers", str(POOL_THREADS)) as served:
        idle_threads = thread_count(served.pid)
        warmup = drive(served.target, 1.0, first_seed=1000)  # grows the thread pool, compiles the plans
        assert not [e for c in warmup for e in c.errors], warmup[0].errors
        rss_before = rss_bytes(served.pid)
        clients = drive(served.target, LOAD_SECONDS, first_seed=0)
        rss_after = settle(lambda: rss_bytes(served.pid), rss_before + RSS_SLACK)
        threads_after = settle(lambda: thread_count(served.pid), idle_threads + POOL_THREADS)
        yield {"clients": clients, "rss_before": rss_before, "rss_after": rss_after, "idle_threads": idle_threads,
               "threads_after": threads_after, "alive": served.alive(), "log": served.log()}


def settle(measure, bound: int, patience: float = 10.0) -> int:
    """``measure()`` once it is at most ``bound``, or after ``patience`` seconds (memory and threads free lazily)."""
    give_up = time.monotonic() + patience
    value = measure()
    while value > bound and time.monotonic() < give_up:
        time.sleep(0.2)
        value = measure()
    return value


def test_every_call_under_load_succeeds_with_correct_results(load):
    """16 concurrent clients of mixed Runs and Forward/Backward pairs get no error and only right answers."""
    errors = [e for c in load["clients"] for e in c.errors]
    assert not errors, f"{len(errors)} clients failed; the first:\n{errors[0]}"
    assert load["alive"], load["log"][-3000:]


def test_load_mixes_every_kind_of_call(load):
    """Each client ran Runs, Forward/Backward pairs and retained sessions (the load is really mixed)."""
    totals = sum((c.calls for c in load["clients"]), Counter())
    assert all(c.calls.total() >= 3 for c in load["clients"]), [dict(c.calls) for c in load["clients"]]
    assert set(totals) == {"run_call", "pair", "retained_pair"}, totals


def test_memory_returns_near_start_after_load(load):
    """Once the load ends and its sessions are released, server RSS is within RSS_SLACK of its start."""
    growth = load["rss_after"] - load["rss_before"]
    assert growth <= RSS_SLACK, (f"RSS grew by {growth / 2**20:.1f} MiB "
                                 f"({load['rss_before'] / 2**20:.1f} -> {load['rss_after'] / 2**20:.1f} MiB)")


def test_load_leaves_no_threads_beyond_the_pool(load):
    """After the load the server has no more threads than at start plus its --max-workers pool."""
    assert load["threads_after"] <= load["idle_threads"] + POOL_THREADS, (load["idle_threads"], load["threads_after"])
