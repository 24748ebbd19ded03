"""Sessions that live as long as a Session stream: forward passes kept by number, many steps, no gRPC here."""

from __future__ import annotations

import logging
import threading

from gradserve.server.engine import execute as engine
from gradserve.server.engine.errors import CancelledError, GraphError, SessionError
from gradserve.server.engine.plan import Plan

_LOGGER = logging.getLogger(__name__)

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
        self._sizes: dict[int, int] = {}  # bytes of each kept pass
        self._closed = False

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
                seed: int | None = None, should_stop=None):
        """The outputs of a forward pass, kept as pass ``pass_id`` (replacing the one kept there)."""
        plan = self._plan(plan)
        self._service.limits.check_arrays(feeds.items())
        self._drop(pass_id)
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
        """Drop kept pass ``pass_id``; whether there was one."""
        return self._drop(pass_id)

    def _drop(self, pass_id: int) -> bool:
        if self._passes.pop(pass_id, None) is None:
            return False
        self._sizes.pop(pass_id)
        self._service.sessions.keep(self.session_id, self._kept_bytes())
        return True

    def _kept_bytes(self) -> int:
        return sum(self._sizes.values())

    @property
    def going_away(self) -> bool:
        return self._streams.going_away.is_set()

    def check_serving(self) -> None:
        if self.going_away:
            raise ShuttingDownError("the server is shutting down (SIGTERM): this session stream ends here; "
                                    "open a new one (another replica, or this server once it is back)")

    def close(self) -> None:
        """Free the session (idempotent: the stream's end and gRPC's end-of-call callback may both call it)."""
        with self._streams.lock:
            if self._closed:
                return
            self._closed = True
            self._streams.open_sessions.discard(self)
        self._passes.clear()
        self._sizes.clear()
        self._service.sessions.release(self.session_id)


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
        """From now on every stream ends at its next step with ShuttingDownError."""
        self.going_away.set()
        _LOGGER.info("ending %d session streams: the server is going away", self.count)

