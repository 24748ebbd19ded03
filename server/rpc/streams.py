"""Bounds on the threads peers can hold by being slow or silent: StreamGuard caps open streams and times every read.

gRPC Python's synchronous server runs each call on one thread of its pool for the call's whole life, and a
handler waiting for the client's next message blocks that thread with no timeout of its own. Nothing but the
client's deadline (which a hostile client does not set) ends the wait, so 16 silent streams used to freeze
the server. StreamGuard is one interceptor, applied to every method of every service on the server (ours,
KServe, health, reflection), so no handler has anything to call:

- a call waiting on its client holds one of ``max-streams`` places: a stream (requests or responses) for its
  whole life, a unary call until its message has come. At most half the places go to one peer address (gRPC
  names the peer, so that much is possible), and the rest of the pool always serves work. A stream over the
  caps is refused at once with RESOURCE_EXHAUSTED naming the limit; a unary call needs a place only once it
  has waited UNARY_SLOW for its message (a client's message comes with its call), and is ended the same way
  when none is left;
- every wait for a client's message, the single message of a unary call included, ends after
  ``stream-idle-seconds`` with DEADLINE_EXCEEDED naming the limit;
- every stream ends after ``stream-max-seconds`` with DEADLINE_EXCEEDED naming the limit.

One watchdog thread enforces both times: it cancels an overdue call with the status the client then sees
(cygrpc's cancel-with-status, the only way gRPC Python offers to end a call from outside its thread), which
also wakes the handler's blocked read, so the thread goes back to the pool. Reading on a helper thread per
stream instead would cost a thread handoff per message and a thread per stream; the watchdog costs one
clock read per message.

A stream handler (RunStream, Session, Train) just iterates its request iterator: it is already guarded. A
handler that needs to read outside that iterator can call ``guarded(request_iterator, context)`` itself; it
returns an already guarded iterator unchanged. Before a stream handler allocates what a message announces,
it calls ``guard.admit(context, nbytes, what)``: under --max-memory that reserves the bytes until the call
ends (LimitError, RESOURCE_EXHAUSTED, when they do not fit), and a large call has memory trimmed after it.
Unary calls are admitted by the guard itself, with their message's size.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import Iterator

import grpc

from gradserve.server.rpc.interceptors import KINDS, HandlerCache
from gradserve.server.engine.errors import DeadlineError, LimitError
from gradserve.server.runtime.malloc import TRIM_FROM, Trimmer
from gradserve.server.runtime.memory_cap import RESERVE_FACTOR, MemoryBudget
from gradserve.server.service.limits import Limits

_LOGGER = logging.getLogger(__name__)

#: How often the watchdog looks at the watched calls, as a share of the shortest time bound.
_TICKS_PER_BOUND = 8
_MIN_TICK, _MAX_TICK = 0.02, 1.0
#: Seconds a unary call may wait for its message before it needs a max-streams place: a client's message
#: comes with its call, so only a silent one waits that long (on a loaded machine a served call's wait reached
#: 0.1 s, so the bound is well above that); with no place left it is ended then.
UNARY_SLOW = 0.5


def peer_address(peer: str) -> str:
    """The address part of a gRPC peer string: "ipv4:10.0.0.1:5000" -> "ipv4:10.0.0.1"."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        return f"{kind}:{rest.rpartition(':')[0]}"
    return peer  # unix sockets and the like: no port to strip


class _Watch:
    """One watched call: when it started, since when it has been waiting for its client (None: it is not)."""

    __slots__ = ("context", "started", "waiting_since", "peer", "streaming", "fired", "released", "counted")

    def __init__(self, context: grpc.ServicerContext, peer: str, streaming: bool):
        self.counted = False  # holds one of the max-streams places
        self.context = context
        self.started = time.monotonic()
        self.waiting_since: float | None = None
        self.peer = peer
        self.streaming = streaming
        self.fired: Exception | None = None
        self.released = False


class GuardedIterator:
    """A request iterator whose every wait the watchdog times (gRPC's RpcError when the call ended meanwhile)."""

    def __init__(self, guard: "StreamGuard", watch: _Watch, requests):
        self._guard = guard
        self._watch = watch
        self._requests = requests

    def __iter__(self) -> "GuardedIterator":
        return self

    def __next__(self):
        watch = self._watch
        watch.waiting_since = time.monotonic()
        try:
            # An RpcError out of here means the call ended while we waited (the watchdog ended it, or the
            # client left): the very instance gRPC raised must go on up, since gRPC ends a call quietly only
            # for its own RpcError and logs any other exception as the handler's failure.
            return next(self._requests)
        finally:
            watch.waiting_since = None


class StreamGuard(grpc.ServerInterceptor):
    """Cap open streams (in all and per peer address) and bound every wait for a client; see the module doc."""

    def __init__(self, limits: Limits, max_workers: int, budget: MemoryBudget | None = None,
                 trimmer: Trimmer | None = None):
        self.budget = budget  # with a memory cap: each call reserves its request's bytes before it runs (admit)
        self.trimmer = trimmer  # told when large calls start and end, to give memory back after a burst
        self.idle_seconds = limits.stream_idle_seconds
        self.max_seconds = limits.stream_max_seconds
        # Streams may never hold the whole pool: at least one thread is left for unary work, whatever is set.
        self.max_streams = max(1, min(limits.max_streams, max_workers - 1))
        if self.max_streams < limits.max_streams:
            _LOGGER.warning("--max-streams %d lowered to %d: streams must leave --max-workers %d threads room for "
                            "unary calls", limits.max_streams, self.max_streams, max_workers)
        self.max_streams_per_peer = max(1, self.max_streams // 2)
        self._lock = threading.Lock()
        self._watches: set[_Watch] = set()
        self._held = 0  # streams open, and unary calls waiting for their message
        self._per_peer: Counter[str] = Counter()
        self._stopped = threading.Event()
        self._tick = min(_MAX_TICK, max(_MIN_TICK, min(self.idle_seconds, self.max_seconds) / _TICKS_PER_BOUND))
        self._handlers = HandlerCache(lambda method, handler: self._wrap(handler))
        # Started now, with the server, before a memory cap could leave no room for a thread's stack.
        self._thread = threading.Thread(target=self._watch_loop, name="gradserve-streams", daemon=True)
        self._thread.start()

    # -- what the handlers see --

    def open(self, context: grpc.ServicerContext, streaming: bool) -> _Watch:
        """Watch a call; release() it when done. A stream takes one of the max-streams places for its whole life
        (LimitError when none is left, in all or for its peer). A unary call takes one only once it has waited
        UNARY_SLOW for its message (the watchdog sees to it), and is ended if none is left then."""
        peer = peer_address(context.peer())
        watch = _Watch(context, peer, streaming)
        with self._lock:
            if streaming:
                full = self._full(peer)
                if full is not None:
                    raise LimitError(full + ": try again later")
                self._take_place(watch)
            self._watches.add(watch)
        # Released when the call ends, however it ends (the handler may never finish iterating).
        if not context.add_callback(lambda: self.release(watch)):
            self.release(watch)
        return watch

    def _full(self, peer: str) -> str | None:
        """Why no place is left for a call from ``peer`` (None: one is); called under the lock."""
        if self._held >= self.max_streams:
            return f"{self._held} calls are open waiting on their clients, the max-streams limit"
        if self._per_peer[peer] >= self.max_streams_per_peer:
            return (f"this peer has {self._per_peer[peer]} calls open waiting on it, as many as one peer may "
                    f"(half the max-streams limit of {self.max_streams})")
        return None

    def _take_place(self, watch: _Watch) -> None:
        watch.counted = True
        self._held += 1
        self._per_peer[watch.peer] += 1

    def release(self, watch: _Watch) -> None:
        with self._lock:
            if watch.released:
                return
            watch.released = True
            self._watches.discard(watch)
            if watch.counted:
                self._held -= 1
                self._per_peer[watch.peer] -= 1
                if not self._per_peer[watch.peer]:
                    del self._per_peer[watch.peer]

    def open_streams(self) -> int:
        """Calls holding a max-streams place: open streams, and unary calls waiting for their message."""
        with self._lock:
            return self._held

    def stop(self) -> None:
        """End the watchdog (and the trimmer) and wait for them: a stopped server leaves no thread behind."""
        self._stopped.set()
        self._thread.join()
        if self.trimmer is not None:
            self.trimmer.stop()

    # -- the interceptor --

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        return None if handler is None else self._handlers.get(handler_call_details.method, handler)

    def _wrap(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        kwargs = {"request_deserializer": handler.request_deserializer,
                  "response_serializer": handler.response_serializer}
        if not handler.request_streaming and not handler.response_streaming:
            # Read the one message ourselves (a stream-unary handler), so its wait is timed too.
            behavior = handler.unary_unary
            deserialize = handler.request_deserializer or (lambda data: data)
            kwargs["request_deserializer"] = lambda data: (len(data), deserialize(data))

            def unary(requests, context):
                watch = self._open_or_abort(context, streaming=False)
                try:
                    sized = next(GuardedIterator(self, watch, requests), None)
                except grpc.RpcError:
                    # The watchdog already gave the client its status, or the call is over (the client left,
                    # or gRPC refused the message as too large): abort ends the handler quietly either way.
                    context.abort(grpc.StatusCode.CANCELLED, "the call ended before its message came")
                finally:
                    self.release(watch)
                if sized is None:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a unary call needs exactly one request message")
                size, request = sized
                try:
                    self.admit(context, size, f"a request of {size} bytes")
                except LimitError as exc:
                    context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
                return behavior(request, context)

            return grpc.stream_unary_rpc_method_handler(unary, **kwargs)
        if handler.request_streaming:
            behavior = handler.stream_stream or handler.stream_unary
            factory = KINDS[True, handler.response_streaming].factory

            def streaming(requests, context):
                watch = self._open_or_abort(context, streaming=True)
                return behavior(GuardedIterator(self, watch, requests), context)

            return factory(streaming, **kwargs)
        behavior = handler.unary_stream

        def server_streaming(request, context):
            self._open_or_abort(context, streaming=True)
            return behavior(request, context)

        return grpc.unary_stream_rpc_method_handler(server_streaming, **kwargs)

    def admit(self, context: grpc.ServicerContext, nbytes: int, what: str = "the call") -> None:
        """A call is about to hold ``nbytes`` of request tensors until it ends: reserve RESERVE_FACTOR times as
        much of the memory budget (LimitError when that does not fit), and have memory trimmed after it when
        it is large. Unary calls are admitted here with their message's size; a stream handler calls it once
        it knows what the stream will hold, before it allocates (RunStream: from its first message)."""
        if self.budget is not None:
            reserved = self.budget.reserve(nbytes * RESERVE_FACTOR, what)
            if reserved and not context.add_callback(lambda: self.budget.release(reserved)):
                self.budget.release(reserved)
        if self.trimmer is not None and nbytes >= TRIM_FROM:
            self.trimmer.started()
            if not context.add_callback(self.trimmer.ended):
                self.trimmer.ended()

    def _open_or_abort(self, context, streaming: bool) -> _Watch:
        try:
            return self.open(context, streaming)
        except LimitError as exc:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))

    # -- the watchdog --

    def _watch_loop(self) -> None:
        # A fixed tick, never woken by a call: waking this thread per call made every tiny call wait for the
        # GIL it took (a Run's p50 went from 0.9 to 4.8 ms).
        tick = min(self._tick, UNARY_SLOW)
        while not self._stopped.wait(tick):
            now = time.monotonic()
            with self._lock:
                watches = list(self._watches)
                refused = []
                for watch in watches:
                    waiting_since = watch.waiting_since
                    if (not watch.counted and not watch.released and watch.fired is None
                            and waiting_since is not None and now - waiting_since > UNARY_SLOW):
                        full = self._full(watch.peer)
                        if full is None:
                            self._take_place(watch)
                        else:
                            refused.append((watch, full))
            for watch, full in refused:
                self._fire(watch, LimitError(f"no message from the client within {UNARY_SLOW:g}s, and {full}"),
                           grpc.StatusCode.RESOURCE_EXHAUSTED)
            for watch in watches:
                if watch.fired is not None:
                    continue
                waiting_since = watch.waiting_since
                if waiting_since is not None and now - waiting_since > self.idle_seconds:
                    self._fire(watch, DeadlineError(f"no message from the client for {self.idle_seconds:g}s, the "
                                                    "stream-idle-seconds limit"))
                elif watch.streaming and now - watch.started > self.max_seconds:
                    self._fire(watch, DeadlineError(f"the stream was open {self.max_seconds:g}s, the "
                                                    "stream-max-seconds limit"))

    def _fire(self, watch: _Watch, error: Exception,
              code: grpc.StatusCode = grpc.StatusCode.DEADLINE_EXCEEDED) -> None:
        if watch.fired is not None:
            return
        watch.fired = error
        _LOGGER.info("ending a call from %s: %s", watch.peer, error)
        end_call(watch.context, code, str(error))


def end_call(context: grpc.ServicerContext, code: grpc.StatusCode, details: str) -> None:
    """End a call from any thread with ``code`` and ``details`` for its client; its blocked read returns."""
    call = getattr(getattr(context, "_rpc_event", None), "call", None)
    try:
        call.cancel(code.value[0], details)  # grpc_call_cancel_with_status
    except Exception:  # noqa: BLE001 - a gRPC without that private path: end the call all the same
        _LOGGER.debug("cancel with status unavailable; cancelling plainly", exc_info=True)
        context.cancel()


def guarded(requests, context: grpc.ServicerContext, guard: StreamGuard | None = None) -> Iterator:
    """``requests`` as a GuardedIterator: unchanged when the interceptor already guards it (it always does on a
    server from start_server); otherwise watched by ``guard`` until the call ends."""
    if isinstance(requests, GuardedIterator) or guard is None:
        return requests
    return GuardedIterator(guard, guard.open(context, streaming=True), requests)
