"""Forward passes kept for a later Backward, under a TTL, a count limit and a total-bytes cap."""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from gradserve.server.engine.execute import Pass
from gradserve.server.engine.errors import LimitError, SessionError, SessionExpiredError

_TOMBSTONES = 10_000  # how many dropped ids we remember, to tell "expired" from "never existed"


@dataclass
class _Entry:
    state: Pass
    nbytes: int
    last_used: float


class Hold:
    """State kept outside the store (a Train stream's parameters and optimizer state), counted against its
    limits as one session of ``nbytes``, never evicted or expired; ``release()`` gives the room back."""

    def __init__(self, store: "SessionStore", nbytes: int):
        self.store = store
        self.nbytes = nbytes
        self.released = False

    def release(self) -> None:
        self.store._unhold(self)


class SessionStore:
    """Thread-safe store of live Forward passes; least recently used goes first under the bytes cap.

    Holds (``hold``) count against the same limits but are never evicted: the state they stand for is in use.
    """

    def __init__(self, ttl: float = 300.0, max_sessions: int = 10_000, max_bytes: int = 1 << 30, clock=time.monotonic):
        self.ttl = ttl
        self.max_sessions = max_sessions
        self.max_bytes = max_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._live: OrderedDict[str, _Entry] = OrderedDict()
        self._dropped: OrderedDict[str, str] = OrderedDict()
        self._bytes = 0
        self._holds: set[Hold] = set()
        self._held_bytes = 0

    @property
    def count(self) -> int:
        """Live sessions: Forward passes and holds."""
        return len(self._live) + len(self._holds)

    @property
    def nbytes(self) -> int:
        return self._bytes + self._held_bytes

    @property
    def holds(self) -> int:
        return len(self._holds)

    def hold(self, nbytes: int, what: str) -> Hold:
        """Count ``nbytes`` of ``what`` as one session, evicting least recently used Forward passes for room;
        LimitError, naming the limit, when it cannot fit."""
        with self._lock:
            self._expire(self._clock())
            if self.count >= self.max_sessions:
                raise LimitError(f"{self.count} live sessions reached the max-sessions limit of {self.max_sessions}"
                                 f"; {what} counts as one: close other streams or release sessions")
            if self._held_bytes + nbytes > self.max_bytes:
                raise LimitError(f"{what} needs {nbytes} bytes; with the {self._held_bytes} bytes other streams "
                                 f"hold that is over the max-session-bytes limit of {self.max_bytes}")
            self._make_room(nbytes)
            hold = Hold(self, nbytes)
            self._holds.add(hold)
            self._held_bytes += nbytes
        return hold

    def _unhold(self, hold: Hold) -> None:
        with self._lock:
            if hold in self._holds:
                self._holds.discard(hold)
                self._held_bytes -= hold.nbytes
                hold.released = True

    def _make_room(self, nbytes: int) -> None:
        while self._bytes + self._held_bytes + nbytes > self.max_bytes and self._live:
            self._drop(next(iter(self._live)), f"evicted to stay under the max-session-bytes limit of {self.max_bytes}")

    def put(self, state: Pass) -> str:
        nbytes = state.nbytes()
        if nbytes > self.max_bytes:
            raise LimitError(f"this forward pass keeps {nbytes} bytes, over the max-session-bytes limit "
                             f"of {self.max_bytes}; send a smaller batch or use Run")
        session_id = secrets.token_hex(16)
        with self._lock:
            now = self._clock()
            self._expire(now)
            if self.count >= self.max_sessions:
                raise LimitError(f"{self.count} live sessions reached the max-sessions limit of "
                                 f"{self.max_sessions}; release sessions (ReleaseSession) or use Run")
            if self._held_bytes + nbytes > self.max_bytes:
                raise LimitError(f"this forward pass keeps {nbytes} bytes; with the {self._held_bytes} bytes that "
                                 f"Train streams hold that is over the max-session-bytes limit of {self.max_bytes}")
            self._make_room(nbytes)
            self._live[session_id] = _Entry(state, nbytes, now)
            self._bytes += nbytes
        return session_id

    def get(self, session_id: str) -> Pass:
        with self._lock:
            now = self._clock()
            self._expire(now)
            entry = self._live.get(session_id)
            if entry is None:
                self._raise_missing(session_id)
            entry.last_used = now
            self._live.move_to_end(session_id)
            return entry.state

    def expire(self) -> None:
        """Drop the sessions whose TTL has passed (done on every put and get too)."""
        with self._lock:
            self._expire(self._clock())

    def release(self, session_id: str) -> bool:
        with self._lock:
            if session_id in self._live:
                self._drop(session_id, "released")
                return True
            return False

    def _raise_missing(self, session_id: str):
        reason = self._dropped.get(session_id)
        if reason is not None:
            raise SessionExpiredError(f"session {session_id} is gone: {reason}; run Forward again")
        raise SessionError(f"no session {session_id!r} on this server (sessions live on the replica "
                           "that ran Forward, and do not survive a restart)")

    def _expire(self, now: float) -> None:
        while self._live:
            session_id, entry = next(iter(self._live.items()))
            if now - entry.last_used <= self.ttl:
                break
            self._drop(session_id, f"expired after {self.ttl:g}s unused (the session-ttl limit)")

    def _drop(self, session_id: str, reason: str) -> None:
        entry = self._live.pop(session_id)
        self._bytes -= entry.nbytes
        self._dropped[session_id] = reason
        while len(self._dropped) > _TOMBSTONES:
            self._dropped.popitem(last=False)
