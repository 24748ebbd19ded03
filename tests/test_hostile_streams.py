"""Slow and silent peers: streams are capped and timed, and never take the threads unary work needs."""

from __future__ import annotations

import contextlib
import queue
import threading

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

import gradserve.client as gs
from gradserve.proto import gradserve_pb2 as pb
from gradserve.server.rpc.server import ServerOptions, start_server
from gradserve.server.rpc.streams import peer_address
from gradserve.server.service.limits import Limits

TOKEN = "hostile-streams-token"
RUN_STREAM = "/gradserve.v1.GradServe/RunStream"


@contextlib.contextmanager
def serving(registry, tokens=(), **limits):
    running = start_server("127.0.0.1:0", registry, ServerOptions(limits=Limits(**limits), tokens=tokens))
    try:
        yield running
    finally:
        running.stop(None)


class SilentPeers:
    """Streams that each send ``first`` (if any) and then say nothing until released."""

    def __init__(self, target: str, method: str, first: bytes | None, count: int, metadata=(), timeout=60.0):
        self.channel = grpc.insecure_channel(target)
        self.release = threading.Event()
        call = self.channel.stream_stream(method)
        self.calls = [call(self._silent(first), metadata=metadata, timeout=timeout) for _ in range(count)]

    def _silent(self, first):
        if first is not None:
            yield first
        self.release.wait()

    def outcomes(self, timeout: float = 30.0) -> list[grpc.StatusCode]:
        """Each stream's status, waiting up to ``timeout`` for each."""
        codes = queue.Queue()

        def wait(call):
            try:
                for _ in call:
                    pass
                codes.put(grpc.StatusCode.OK)
            except grpc.RpcError as error:
                codes.put(error.code())

        for call in self.calls:
            threading.Thread(target=wait, args=(call,), daemon=True).start()
        return [codes.get(timeout=timeout) for _ in self.calls]

    def close(self):
        self.release.set()
        for call in self.calls:
            call.cancel()
        self.channel.close()


def first_run_chunk() -> bytes:
    """A valid first RunStream message that announces a tensor whose bytes never come."""
    request = pb.RunRequest()
    request.graph.graph_id = "0" * 64
    request.feeds["x"].dtype = pb.FLOAT32
    request.feeds["x"].shape[:] = [1024]
    return pb.RunChunk(request=request).SerializeToString()


def canary(target: str, token: str | None = None, timeout: float = 2.0) -> np.ndarray:
    """One small Run that must answer within ``timeout`` (its deadline; 2 s unless told)."""
    g = gs.Graph()
    x = g.input("x")
    g.output(g.Relu(x), "y")
    with gs.connect(target, token=token, timeout=timeout) as client:
        return client.run(g, {"x": np.array([-1.0, 2.0], np.float32)}, grad=False).outputs["y"]


def test_64_silent_run_streams_leave_a_canary_run_answering(registry):
    """64 RunStreams that send one message and then nothing leave a small Run answering within its 2 s deadline."""
    with serving(registry) as running:
        peers = SilentPeers(f"127.0.0.1:{running.port}", RUN_STREAM, first_run_chunk(), 64)
        try:
            np.testing.assert_array_equal(canary(f"127.0.0.1:{running.port}"), [0.0, 2.0])
            assert running.streams.open_streams() <= running.streams.max_streams
        finally:
            peers.close()


def test_64_silent_streams_with_a_valid_token_leave_a_canary_run_answering(registry):
    """A token holder's 64 silent RunStreams do not freeze the server either."""
    with serving(registry, tokens=(TOKEN,)) as running:
        target = f"127.0.0.1:{running.port}"
        peers = SilentPeers(target, RUN_STREAM, first_run_chunk(), 64,
                            metadata=(("authorization", f"Bearer {TOKEN}"),))
        try:
            np.testing.assert_array_equal(canary(target, TOKEN), [0.0, 2.0])
        finally:
            peers.close()


def test_streams_over_the_cap_are_resource_exhausted_naming_the_limit(registry):
    """Streams beyond max-streams (half of it per peer) are refused at once with RESOURCE_EXHAUSTED naming it."""
    with serving(registry, max_streams=4) as running:
        peers = SilentPeers(f"127.0.0.1:{running.port}", RUN_STREAM, first_run_chunk(), 8)
        refused = queue.Queue()

        def wait(call):
            try:
                next(call)
            except grpc.RpcError as error:
                refused.put((error.code(), error.details()))

        try:
            for call in peers.calls:
                threading.Thread(target=wait, args=(call,), daemon=True).start()
            codes = [refused.get(timeout=30) for _ in range(6)]  # one peer may hold 2 of the 4: 6 refused
            assert {code for code, _ in codes} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
            assert all("max-streams" in details for _, details in codes)
            assert running.streams.open_streams() == 2
        finally:
            peers.close()


def test_a_silent_stream_ends_after_stream_idle_seconds(registry):
    """A stream whose client says nothing ends with DEADLINE_EXCEEDED naming stream-idle-seconds."""
    with serving(registry, stream_idle_seconds=0.5) as running:
        peers = SilentPeers(f"127.0.0.1:{running.port}", RUN_STREAM, first_run_chunk(), 1)
        try:
            with pytest.raises(grpc.RpcError) as error:
                next(peers.calls[0])
            assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "stream-idle-seconds" in error.value.details()
        finally:
            peers.close()
        assert _eventually(lambda: running.streams.open_streams() == 0)


def test_a_silent_unary_call_ends_after_stream_idle_seconds(registry):
    """A unary method opened as a stream that never sends its message frees its thread after the idle bound."""
    with serving(registry, stream_idle_seconds=0.5) as running:
        peers = SilentPeers(f"127.0.0.1:{running.port}", "/gradserve.v1.GradServe/ListLayers", None, 1)
        try:
            with pytest.raises(grpc.RpcError) as error:
                next(peers.calls[0])
            assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "stream-idle-seconds" in error.value.details()
        finally:
            peers.close()


def test_64_silent_unary_calls_leave_a_canary_run_answering(registry):
    """Unary calls that never send their message keep a thread only while max-streams places are free; the
    others are ended once they waited UNARY_SLOW, with RESOURCE_EXHAUSTED, and a small Run answers meanwhile."""
    with serving(registry, stream_idle_seconds=1.0) as running:
        target = f"127.0.0.1:{running.port}"
        peers = SilentPeers(target, "/gradserve.v1.GradServe/ListLayers", None, 64)
        try:
            np.testing.assert_array_equal(canary(target, timeout=10.0), [0.0, 2.0])
            codes = peers.outcomes()
            assert set(codes) == {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}
        finally:
            peers.close()


def test_a_stream_ends_after_stream_max_seconds(registry):
    """A stream that keeps talking is still ended at stream-max-seconds, with DEADLINE_EXCEEDED naming it."""
    with serving(registry, stream_max_seconds=0.5) as running:
        channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
        stop = threading.Event()

        def chatty():
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            while not stop.is_set():
                yield request
                stop.wait(0.05)

        call = channel.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                                     request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                                     response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
        try:
            with pytest.raises(grpc.RpcError) as error:
                for _ in call(chatty(), timeout=30):
                    pass
            assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "stream-max-seconds" in error.value.details()
        finally:
            stop.set()
            channel.close()


def test_silent_reflection_and_health_watch_streams_leave_a_canary_run_answering(registry):
    """Reflection streams and health Watch subscriptions (open to anyone) count as streams too."""
    with serving(registry, tokens=(TOKEN,)) as running:
        target = f"127.0.0.1:{running.port}"
        reflection = SilentPeers(target, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", None, 32,
                                 metadata=(("authorization", f"Bearer {TOKEN}"),))
        channel = grpc.insecure_channel(target)
        watches = [health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=60)
                   for _ in range(32)]
        try:
            np.testing.assert_array_equal(canary(target, TOKEN), [0.0, 2.0])
        finally:
            reflection.close()
            for watch in watches:
                watch.cancel()
            channel.close()


def test_anonymous_silent_streams_are_refused_without_holding_a_thread(registry):
    """Without a token, any call is refused at once, before its message is read: 64 of them hold nothing."""
    with serving(registry, tokens=(TOKEN,)) as running:
        target = f"127.0.0.1:{running.port}"
        peers = SilentPeers(target, "/gradserve.v1.GradServe/Run", None, 64)
        try:
            assert set(peers.outcomes()) == {grpc.StatusCode.UNAUTHENTICATED}
            np.testing.assert_array_equal(canary(target, TOKEN), [0.0, 2.0])
        finally:
            peers.close()


def test_streams_that_end_give_their_slot_back(registry):
    """After many complete RunStreams, no stream is counted open and the next one is served."""
    with serving(registry, max_streams=2) as running:
        g = gs.Graph()
        x = g.input("x")
        g.output(g.Relu(x), "y")
        with gs.connect(f"127.0.0.1:{running.port}") as client:
            big = np.ones(3 << 20, np.float32)  # 12 MiB: the client streams it (RunStream)
            for _ in range(5):
                assert client.run(g, {"x": big}, grad=False).outputs["y"].sum() == big.size
        assert _eventually(lambda: running.streams.open_streams() == 0)


def test_peer_address_drops_the_port():
    """The per-peer cap counts addresses, not connections: the port is not part of a peer."""
    assert peer_address("ipv4:10.1.2.3:5555") == "ipv4:10.1.2.3"
    assert peer_address("ipv6:[::1]:5555") == "ipv6:[::1]"
    assert peer_address("unix:/tmp/s") == "unix:/tmp/s"


def _eventually(check, timeout: float = 10.0) -> bool:
    event = threading.Event()
    for _ in range(int(timeout / 0.05)):
        if check():
            return True
        event.wait(0.05)
    return check()
