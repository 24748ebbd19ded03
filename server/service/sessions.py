"""Forward passes kept for a later Backward, under a TTL, a count limit and a total-bytes cap.

A Session stream's session is held here too (``hold``): it counts against max-sessions and its pass's bytes
against max-session-bytes, but it lives as long as its stream, so the TTL and the eviction pass it by.
"""

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
    state: Pass | None
    nbytes: int
    last_used: float


class SessionStore:
    """Thread-safe store of live Forward passes; least recently used goes first under the bytes cap."""

    def __init__(self, ttl: float = 300.0, max_sessions: int = 10_000, max_bytes: int = 1 << 30, clock=time.monotonic):
        self.ttl = ttl
        self.max_sessions = max_sessions
        self.max_bytes = max_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._live: OrderedDict[str, _Entry] = OrderedDict()
        self._dropped: OrderedDict[str, str] = OrderedDict()
        self._held: dict[str, _Entry] = {}  # Session streams' sessions: no TTL, never evicted
        self._bytes = 0

    @property
    def count(self) -> int:
        return len(self._live) + len(self._held)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def put(self, state: Pass) -> str:
        nbytes = state.nbytes()
        if nbytes > self.max_bytes:
            raise LimitError(f"this forward pass keeps {nbytes} bytes, over the max-session-bytes limit "
                             f"of {self.max_bytes}; send a smaller batch or use Run")
        session_id = secrets.token_hex(16)
        with self._lock:
            now = self._clock()
            self._expire(now)
            self._check_count()
            self._make_room(nbytes)
            self._live[session_id] = _Entry(state, nbytes, now)
            self._bytes += nbytes
        return session_id

    def hold(self) -> str:
        """A session for a Session stream, holding no pass yet; raise LimitError at max-sessions."""
        session_id = secrets.token_hex(16)
        with self._lock:
            self._expire(self._clock())
            self._check_count()
            self._held[session_id] = _Entry(None, 0, self._clock())
        return session_id

    def keep(self, session_id: str, nbytes: int) -> None:
        """Count ``nbytes`` as what held session ``session_id`` keeps now, within max-session-bytes.

        Unary sessions are evicted for it, least recently used first; when the held ones alone leave no
        room, raise LimitError (the held session then counts what it kept before).
        """
        with self._lock:
            entry = self._held[session_id]
            if nbytes > self.max_bytes:
                raise LimitError(f"this session stream would keep {nbytes} bytes, over the max-session-bytes "
                                 f"limit of {self.max_bytes}; release passes, send smaller batches or use run steps")
            self._bytes -= entry.nbytes
            try:
                self._make_room(nbytes)
            except LimitError:
                self._bytes += entry.nbytes
                raise
            entry.nbytes, entry.last_used = nbytes, self._clock()
            self._bytes += nbytes

    def _check_count(self) -> None:
        count = len(self._live) + len(self._held)
        if count >= self.max_sessions:
            raise LimitError(f"{count} live sessions reached the max-sessions limit of {self.max_sessions} "
                             f"({len(self._held)} of them Session streams); release sessions or use Run")

    def _make_room(self, nbytes: int) -> None:
        """Evict unary sessions, least recently used first, until ``nbytes`` more fit under max-session-bytes."""
        while self._bytes + nbytes > self.max_bytes and self._live:
            self._drop(next(iter(self._live)),
                       f"evicted to stay under the max-session-bytes limit of {self.max_bytes}")
        if self._bytes + nbytes > self.max_bytes:
            raise LimitError(f"Session streams keep {self._bytes} bytes; {nbytes} more would pass the "
                             f"max-session-bytes limit of {self.max_bytes}; release passes or close streams")

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
            held = self._held.pop(session_id, None)
            if held is not None:
                self._bytes -= held.nbytes
                return True
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
