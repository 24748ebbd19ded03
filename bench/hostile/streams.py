"""Slow and silent peers: streams that say nothing, and what a small Run meanwhile gets (server/rpc/streams.py)."""

from __future__ import annotations

import threading
import time

import grpc

from bench.hostile import Figure
from bench.hostile._process import Served, canary_seconds
from gradserve.proto import gradserve_pb2 as pb
from gradserve.server.rpc.streams import UNARY_SLOW

TOKEN = "hostile-bench-token"
RUN_STREAM = "/gradserve.v1.GradServe/RunStream"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"


def _first_run_chunk() -> bytes:
    request = pb.RunRequest()
    request.graph.graph_id = "0" * 64
    request.feeds["x"].dtype = pb.FLOAT32
    request.feeds["x"].shape[:] = [1024]
    return pb.RunChunk(request=request).SerializeToString()


class _Silent:
    """``count`` calls of ``method`` that send ``first`` (if any), then nothing until closed; their end codes."""

    def __init__(self, target: str, method: str, first: bytes | None, count: int, metadata=()):
        self.channel = grpc.insecure_channel(target)
        self.release = threading.Event()
        self.codes: list[grpc.StatusCode] = []
        self._lock = threading.Lock()
        call = self.channel.stream_stream(method)
        self.calls = [call(self._silent(first), metadata=metadata, timeout=600) for _ in range(count)]
        for c in self.calls:
            threading.Thread(target=self._wait, args=(c,), daemon=True).start()

    def _silent(self, first):
        if first is not None:
            yield first
        self.release.wait()

    def _wait(self, call) -> None:
        try:
            for _ in call:
                pass
            code = grpc.StatusCode.OK
        except grpc.RpcError as error:
            code = error.code()
        with self._lock:
            self.codes.append(code)

    def count(self, code: grpc.StatusCode) -> int:
        with self._lock:
            return self.codes.count(code)

    def close(self) -> None:
        self.release.set()
        for c in self.calls:
            c.cancel()
        self.channel.close()


def _silent_streams(count: int, token: str | None) -> Figure:
    args = ("--token", token) if token else ()
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    with Served(*args) as served:
        silent = _Silent(served.target, RUN_STREAM, _first_run_chunk(), count, metadata)
        try:
            time.sleep(1.0)  # let every stream reach the server
            seconds = canary_seconds(served.target, token)
            refused = silent.count(grpc.StatusCode.RESOURCE_EXHAUSTED)
        finally:
            silent.close()
    who = "token-holding " if token else ""
    answered = "no answer within 2 s" if seconds is None else f"answered in {seconds * 1000:.0f} ms"
    return Figure(f"{count} silent {who}RunStreams, then a small Run",
                  f"the Run {answered}; {refused} streams refused at once (RESOURCE_EXHAUSTED, max-streams), "
                  f"the others held until stream-idle-seconds", seconds is not None)


def _reflection_and_watch(count: int) -> Figure:
    with Served("--token", TOKEN) as served:
        metadata = (("authorization", f"Bearer {TOKEN}"),)
        silent = _Silent(served.target, REFLECTION, None, count, metadata)
        channel = grpc.insecure_channel(served.target)
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        watches = [health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=600)
                   for _ in range(count)]
        try:
            time.sleep(1.0)
            seconds = canary_seconds(served.target, TOKEN)
        finally:
            silent.close()
            for watch in watches:
                watch.cancel()
            channel.close()
    answered = "no answer within 2 s" if seconds is None else f"answered in {seconds * 1000:.0f} ms"
    return Figure(f"{count} silent reflection streams and {count} health Watch subscriptions, then a small Run",
                  f"the Run {answered}", seconds is not None)


def _silent_unary(count: int, idle: float) -> Figure:
    with Served("--stream-idle-seconds", str(idle)) as served:
        start = time.perf_counter()
        silent = _Silent(served.target, "/gradserve.v1.GradServe/ListLayers", None, count)
        try:
            time.sleep(0.5)
            seconds = canary_seconds(served.target, timeout=10.0)
            deadline = time.monotonic() + idle + 10
            while len(silent.codes) < count and time.monotonic() < deadline:
                time.sleep(0.05)
            timed_out = silent.count(grpc.StatusCode.DEADLINE_EXCEEDED)
            refused = silent.count(grpc.StatusCode.RESOURCE_EXHAUSTED)
            all_ended = time.perf_counter() - start
        finally:
            silent.close()
    answered = "no answer within 10 s" if seconds is None else f"answered in {seconds * 1000:.0f} ms"
    return Figure(f"{count} unary calls that never send their message (--stream-idle-seconds {idle:g}), "
                  "then a small Run",
                  f"the Run {answered}; {refused} silent calls ended once they had waited {UNARY_SLOW:g} s "
                  "(RESOURCE_EXHAUSTED, "
                  f"over max-streams), {timed_out} at stream-idle-seconds (DEADLINE_EXCEEDED), all within "
                  f"{all_ended:.1f} s", timed_out + refused == count and seconds is not None and seconds < 5)


def figures(quick: bool) -> list[Figure]:
    count = 64 if quick else 256
    return [_silent_streams(count, None), _silent_streams(count, TOKEN), _reflection_and_watch(count // 2),
            _silent_unary(count, 2.0 if quick else 10.0)]
