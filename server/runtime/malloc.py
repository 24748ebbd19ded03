"""glibc's heap in the server process: keep freed memory for the next call, give it back after a burst."""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import threading
import time

_LOGGER = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers, from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

#: Blocks up to this size come from the heap and are reused (glibc's maximum on 64-bit systems).
MMAP_THRESHOLD = 32 << 20
#: Free memory the heap keeps before giving it back to the system.
TRIM_THRESHOLD = 256 << 20
ENVIRONMENT = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def keep_freed_memory(environ=os.environ) -> bool:
    """Set glibc's mmap and trim thresholds as MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_ would; True when set.

    With glibc's defaults every request's tensors (protobuf arenas, serialized bytes,
    numpy temporaries of a few hundred KiB and up) are mapped fresh and unmapped
    again, and touching fresh pages costs more than the copies themselves (the bench's
    malloc rows measure it). Nothing changes when either variable is already set (the
    operator chose) or when the C library is not glibc.
    """
    if any(name in environ for name in ENVIRONMENT) or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    done = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if "MALLOC_ARENA_MAX" not in environ:
        # Each arena keeps up to TRIM_THRESHOLD of freed memory, and glibc makes up to 8 per CPU (16 here for
        # 16 threads): a burst of 16 clients left 394 MB resident with them, 250 MB with one arena per CPU.
        # Threads contend for an arena only when they run at once, which no more of them than CPUs do.
        mallopt(_M_ARENA_MAX, arena_max())
    if done:
        _LOGGER.debug("malloc keeps freed blocks up to %d bytes, trims past %d bytes", MMAP_THRESHOLD, TRIM_THRESHOLD)
    return done


def arena_max() -> int:
    """glibc arenas for this process: one per CPU it may run on, two at least."""
    return max(2, len(os.sched_getaffinity(0)))


#: Calls with at least this many request bytes are "large": once the last of a burst of them is over, the
#: memory they freed goes back to the system.
TRIM_FROM = 4 << 20
#: How long the server must have been free of large calls before it trims: trimming in the middle of a burst
#: would only make the next call fault its pages in again.
QUIET_SECONDS = 1.0


class Trimmer:
    """Give the heap's free memory back to the system (glibc's malloc_trim) once a burst of large calls is over.

    keep_freed_memory() makes the heap keep up to TRIM_THRESHOLD per arena and reuse it, which is what makes
    repeated large calls fast; but after a burst every thread's arena keeps its share, and resident memory
    stays high while the server idles (the issue measured 641 MB left of a 1.5 GB peak after 30 s). One
    daemon thread waits until no large call has been in flight for QUIET_SECONDS, then trims once. Without
    glibc it does nothing.
    """

    def __init__(self, quiet_seconds: float = QUIET_SECONDS):
        self.quiet_seconds = quiet_seconds
        self.trims = 0
        self._in_flight = 0
        self._pending = False
        self._last_end = 0.0
        self._wake = threading.Condition()
        self._stopped = False
        self._trim = _malloc_trim()
        self._thread = threading.Thread(target=self._loop, name="gradserve-trim", daemon=True)
        if self._trim is not None:
            self._thread.start()

    def started(self) -> None:
        """A large call began."""
        with self._wake:
            self._in_flight += 1

    def ended(self) -> None:
        """A large call ended: trim once the server has been quiet long enough."""
        with self._wake:
            self._in_flight -= 1
            self._pending = True
            self._last_end = time.monotonic()
            self._wake.notify()

    def stop(self) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        with self._wake:
            while not self._stopped:
                if not self._pending:
                    self._wake.wait()
                    continue
                quiet_for = time.monotonic() - self._last_end
                if self._in_flight or quiet_for < self.quiet_seconds:
                    self._wake.wait(self.quiet_seconds - quiet_for if not self._in_flight else self.quiet_seconds)
                    continue
                self._pending = False
                self._wake.release()
                try:
                    self._trim(0)
                    self.trims += 1
                finally:
                    self._wake.acquire()


def _malloc_trim():
    """glibc's malloc_trim, or None elsewhere."""
    if platform.libc_ver()[0] != "glibc":
        return None
    trim = ctypes.CDLL(None).malloc_trim
    trim.argtypes = (ctypes.c_size_t,)
    return trim
