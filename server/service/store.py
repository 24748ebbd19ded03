"""The graph store: named graphs in a directory, one file per name, shared by every worker and replica.

- A file's name is a hash of the graph's name (``<sha256 hex>.json``): collision-free and of fixed length
  whatever the name (``a/b``, ``a_b`` and ``a:b`` each get their own); the file holds the name itself.
- A write goes to ``.tmp-*.partial`` and is renamed over the target once synced: a reader sees the old
  graph or the new one. Temporary files never match what is loaded, and are removed at start.
- Writers take an flock on ``.lock`` in the directory, so writes from threads and from other processes
  (``--workers``, replicas on a shared volume) are serialised; the Service holds it while it updates memory.
- Other processes' writes are found by ``changed()``: a stat of the directory, then of its files when the
  directory changed (or changed within the last second, finer than some file systems' timestamps).
- The files' total bytes are bounded (max-store-bytes).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from gradserve.server.engine.errors import LimitError

_LOGGER = logging.getLogger(__name__)

_TMP_PREFIX = ".tmp-"
_LOCK_FILE = ".lock"
#: A directory whose mtime is this recent is rescanned on every look, whatever its mtime says.
_RECENT_SECONDS = 1.0


class StoreError(RuntimeError):
    """The store could not be written (the message names no server path)."""


@dataclass(frozen=True)
class Record:
    """One stored named graph."""

    name: str
    version: str
    graph: bytes  # GraphSpec.canonical()


def file_name(name: str) -> str:
    """The file that holds graph ``name``: a hash, so every name has its own and none is too long."""
    return hashlib.sha256(name.encode()).hexdigest() + ".json"


class GraphStore:
    """Named graphs on disk (see the module docstring)."""

    def __init__(self, directory: str | Path, max_bytes: int):
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self._seen: dict[str, tuple[int, int, int]] = {}  # file -> (inode, mtime_ns, size) when last read
        self._dir_mtime: int | None = None
        self._scan_lock = threading.Lock()
        self._thread_lock = threading.Lock()  # flock is per open file: threads of one process queue here first

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store's write lock (threads of this process and other processes alike)."""
        with self._thread_lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            with open(self.directory / _LOCK_FILE, "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)

    def save(self, record: Record) -> None:
        """Write ``record`` atomically; call it holding ``locked()``. Raise LimitError past max-store-bytes."""
        data = json.dumps({"name": record.name, "version": record.version, "graph": record.graph.decode()}).encode()
        target = self.directory / file_name(record.name)
        others = self._total_bytes(exclude=target.name)
        if others + len(data) > self.max_bytes:
            raise LimitError(f"the graph store would hold {others + len(data)} bytes, over the max-store-bytes "
                             f"limit of {self.max_bytes}; this graph's file is {len(data)} bytes")
        try:
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=_TMP_PREFIX, suffix=".partial")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, target)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            _LOGGER.error("graph store: writing %s failed: %s", target, exc)
            raise StoreError(f"the graph store could not be written ({exc.strerror or type(exc).__name__}); "
                             "the server logged where") from None
        self._remember(target)

    def load_all(self) -> list[Record]:
        """Every stored graph (at start): temporary files left by a killed writer are removed, never read."""
        if not self.directory.is_dir():
            return []
        with self.locked():  # a writer in another process holds it while its temporary file is live
            for path in self.directory.glob(_TMP_PREFIX + "*"):
                _LOGGER.warning("graph store: removing %s, a write that never completed", path.name)
                with contextlib.suppress(OSError):
                    path.unlink()
        self._dir_mtime = None
        return self.changed(force=True)

    def changed(self, force: bool = False) -> list[Record]:
        """The records written (by anyone) since the last look; cheap (one stat) when nothing changed."""
        try:
            mtime = self.directory.stat().st_mtime_ns
        except FileNotFoundError:
            return []
        recent = time.time_ns() - mtime < _RECENT_SECONDS * 1e9
        if not force and mtime == self._dir_mtime and not recent:
            return []
        if not self._scan_lock.acquire(blocking=force):
            return []  # another thread is scanning right now
        try:
            self._dir_mtime = mtime
            return self._scan()
        finally:
            self._scan_lock.release()

    # -- helpers --

    def _scan(self) -> list[Record]:
        records: dict[str, tuple[int, Record]] = {}  # name -> (mtime, record): the newest file of a name wins
        for entry in os.scandir(self.directory):
            if not entry.name.endswith(".json") or entry.name.startswith("."):
                continue
            try:
                stat = entry.stat()
            except FileNotFoundError:
                continue
            key = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
            if self._seen.get(entry.name) == key:
                continue
            self._seen[entry.name] = key
            try:
                doc = json.loads(Path(entry.path).read_bytes())
                record = Record(str(doc["name"]), str(doc["version"]), doc["graph"].encode())
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                _LOGGER.error("graph store: skipping %s: %s", entry.name, exc)
                continue
            if record.name not in records or records[record.name][0] < stat.st_mtime_ns:
                records[record.name] = (stat.st_mtime_ns, record)
        return [record for _, record in sorted(records.values(), key=lambda pair: pair[0])]

    def _remember(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            stat = path.stat()
            self._seen[path.name] = (stat.st_ino, stat.st_mtime_ns, stat.st_size)

    def _total_bytes(self, exclude: str) -> int:
        total = 0
        for entry in os.scandir(self.directory):
            if entry.name.endswith(".json") and entry.name != exclude:
                with contextlib.suppress(FileNotFoundError):
                    total += entry.stat().st_size
        return total
