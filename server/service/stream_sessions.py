"""Sessions that live as long as a Session stream: forward passes kept by number, many steps, no gRPC here."""

from __future__ import annotations

import logging
import threading

import numpy as np

from gradserve.server.engine import execute as engine
from gradserve.server.engine.errors import CancelledError, FeedError, GraphError, SessionError
from gradserve.server.engine.plan import Plan

_LOGGER = logging.getLogger(__name__)

#: What a stream ended by SIGTERM tells its client (the Python client raises ServerShuttingDown on it).
GOING_AWAY = ("the server is shutting down (SIGTERM): this session stream ends here; open a new one (another "
              "replica, or this server once it is back)")

#: Forward passes one stream may keep at once (each book-style layer of a client keeps one).
MAX_PASSES = 4096


class ShuttingDownError(Exception):
    """The server is going away (SIGTERM): the caller opens its session again, on another replica."""


class StreamSession:
    """One stream's session: its graph, and the forward passes it keeps (by the number the client gave).

    Counted as one session against max-sessions from the start, and the bytes of its passes against
    max-session-bytes; ``close`` frees it all (the stream ended, or its client vanished).
    """

    def __init__(self, service, streams: "StreamSessions"):
        self._service = service
        self._streams = streams
        self.session_id = service.sessions.hold()
        self.plan: Plan | None = None
        self.training = False
        self.seed: int | None = None
        self._passes: dict[int, engine.Pass] = {}
        self._feeds: dict[int, dict] = {}  # feeds kept for patching, by pass (keep_feeds)
        self._sizes: dict[int, int] = {}  # bytes of each kept pass
        self._closed = False
        self.waiting = False  # waiting for the client's next step (set by the stream's handler)
        self.end_waiting = None  # ends the stream from any thread with a message (set by the handler)

    def open(self, plan: Plan | None, training: bool = False, seed: int | None = None) -> str:
        """Make ``plan`` the session's graph (None: every forward and run names its own); its graph id."""
        self.plan, self.training, self.seed = plan, training, seed
        return plan.graph_id if plan is not None else ""

    def _plan(self, plan: Plan | None) -> Plan:
        plan = plan or self.plan
        if plan is None:
            raise GraphError("the session has no graph: open it with one (graph in the OPEN step), or name one "
                             "in this step")
        return plan

    def forward(self, feeds, pass_id: int = 0, plan: Plan | None = None, training: bool | None = None,
                seed: int | None = None, should_stop=None, keep_feeds: bool = False, patches=None):
        """The outputs of a forward pass, kept as pass ``pass_id`` (replacing the one kept there).

        With ``keep_feeds`` the feeds are kept too: the next forward of ``pass_id`` then gives only the feeds
        that changed, and ``patches`` ((indices by feed, values by feed)) change kept feeds element by element.
        """
        plan = self._plan(plan)
        self._service.limits.check_arrays(feeds.items())
        self._drop(pass_id)
        try:
            feeds = self._with_kept_feeds(pass_id, feeds, keep_feeds, patches)
            return self._forward(plan, feeds, pass_id, training, seed, should_stop)
        except BaseException:
            if self._feeds.pop(pass_id, None) is not None:  # the client forgets them too: it sends all next time
                self._resize()
            raise

    def _with_kept_feeds(self, pass_id: int, feeds: dict, keep: bool, patches) -> dict:
        kept = self._feeds.pop(pass_id, None)
        if patches is not None and kept is None:
            raise SessionError(f"a patch of feeds that pass {pass_id} does not keep: send them whole (keep_feeds)")
        if kept is not None and keep:
            kept.update({name: np.array(array) for name, array in feeds.items()})  # arrays the session owns
            indices, values = patches or ({}, {})
            for name in indices.keys() | values.keys():
                _patch(kept, name, indices.get(name), values.get(name))
            feeds = kept
        elif keep:
            feeds = {name: np.array(array) for name, array in feeds.items()}
        if keep:
            self._feeds[pass_id] = feeds
        return feeds

    def _forward(self, plan, feeds, pass_id, training, seed, should_stop):
        if len(self._passes) >= MAX_PASSES:
            raise SessionError(f"this session keeps {len(self._passes)} forward passes, the most one stream may "
                               "keep; release some (a release step) or backward without retain")
        state = engine.forward(plan, feeds, training=self.training if training is None else training,
                               seed=self.seed if seed is None else seed, should_stop=should_stop,
                               observe=self._service.observe)
        nbytes = state.nbytes()
        self._service.sessions.keep(self.session_id, self._kept_bytes() + nbytes)
        self._passes[pass_id] = state
        self._sizes[pass_id] = nbytes
        return state.outputs()

    def _resize(self) -> None:
        self._service.sessions.keep(self.session_id, self._kept_bytes())

    def backward(self, output_grads=None, wrt=None, retain: bool = False, pass_id: int = 0, should_stop=None):
        """Gradients of kept pass ``pass_id``; without ``retain`` the pass is dropped after (or on cancel)."""
        self._service.limits.check_arrays((output_grads or {}).items())
        state = self._passes.get(pass_id)
        if state is None:
            raise SessionError(f"no forward pass {pass_id} is kept in this session: send a forward step first "
                               "(a backward without retain drops the pass it used)")
        try:
            grads = state.backward(output_grads, wrt, should_stop)
        except CancelledError:
            if not retain:
                self._drop(pass_id)
            raise
        if not retain:
            self._drop(pass_id)
        return grads

    def run(self, feeds, output_grads=None, wrt=None, plan: Plan | None = None, training: bool | None = None,
            seed: int | None = None, should_stop=None):
        """(outputs, grads) of forward and backward at once; nothing is kept."""
        return self._service.run(self._plan(plan), feeds, output_grads, wrt,
                                 self.training if training is None else training,
                                 self.seed if seed is None else seed, should_stop)

    def release(self, pass_id: int = 0) -> bool:
        """Drop kept pass ``pass_id`` and its kept feeds; whether there was a pass."""
        if self._feeds.pop(pass_id, None) is not None:
            self._resize()
        return self._drop(pass_id)

    def _drop(self, pass_id: int) -> bool:
        if self._passes.pop(pass_id, None) is None:
            return False
        self._sizes.pop(pass_id)
        self._resize()
        return True

    def _kept_bytes(self) -> int:
        """Bytes of the kept passes and feeds (a kept feed is also in its pass: counted twice, to be safe)."""
        return sum(self._sizes.values()) + sum(a.nbytes for feeds in self._feeds.values() for a in feeds.values())

    @property
    def going_away(self) -> bool:
        return self._streams.going_away.is_set()

    def check_serving(self) -> None:
        if self.going_away:
            raise ShuttingDownError(GOING_AWAY)

    def close(self) -> None:
        """Free the session (idempotent: the stream's end and gRPC's end-of-call callback may both call it)."""
        with self._streams.lock:
            if self._closed:
                return
            self._closed = True
            self._streams.open_sessions.discard(self)
        self._passes.clear()
        self._sizes.clear()
        self._feeds.clear()
        self._service.sessions.release(self.session_id)


def _patch(feeds: dict, name: str, indices, values) -> None:
    """Set the elements ``indices`` (flat, in C order) of kept feed ``name`` to ``values``, in place."""
    array = feeds.get(name)
    if array is None:
        raise FeedError(f"a patch of feed {name!r}, which this pass does not keep; send it whole")
    if indices is None or values is None:
        raise FeedError(f"feed {name!r}: a patch needs both patch_indices and patch_values")
    if indices.dtype.kind not in "iu" or indices.ndim != 1 or values.shape != indices.shape:
        raise FeedError(f"feed {name!r}: patch_indices must be a vector of integers and patch_values a vector "
                        f"as long (got {indices.dtype} {list(indices.shape)} and {list(values.shape)})")
    if indices.size and (indices.min() < 0 or indices.max() >= array.size):
        raise FeedError(f"feed {name!r}: patch indices must lie in [0, {array.size})")
    if values.dtype != array.dtype:
        raise FeedError(f"feed {name!r}: patch values are {values.dtype}, the feed is {array.dtype}")
    array.reshape(-1)[indices] = values


class StreamSessions:
    """The server's open Session streams, and whether it is going away."""

    def __init__(self, service):
        self._service = service
        self.lock = threading.Lock()
        self.open_sessions: set[StreamSession] = set()
        self.going_away = threading.Event()

    @property
    def count(self) -> int:
        return len(self.open_sessions)

    def open(self) -> StreamSession:
        """A new stream's session; raise LimitError at max-sessions, ShuttingDownError once going away."""
        if self.going_away.is_set():
            raise ShuttingDownError("the server is shutting down (SIGTERM) and opens no new sessions; "
                                    "try another replica")
        session = StreamSession(self._service, self)
        with self.lock:
            self.open_sessions.add(session)
        return session

    def shut_down(self) -> None:
        """End every stream: one waiting for its client's next step now, one in a step once it is answered."""
        self.going_away.set()
        with self.lock:
            sessions = list(self.open_sessions)
        _LOGGER.info("ending %d session streams: the server is going away", len(sessions))
        for session in sessions:
            if session.waiting and session.end_waiting is not None:
                session.end_waiting(GOING_AWAY)

