"""`gradserve serve --workers N`: N server processes sharing one port, forked before any gRPC object exists."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
from dataclasses import dataclass
from typing import Callable

_LOGGER = logging.getLogger(__name__)

_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_PR_SET_PDEATHSIG = 1

#: ``serve(index, ready)`` runs one worker until it is told to stop and returns its exit code;
#: it installs its SIGTERM/SIGINT handlers, then unblocks those signals, and calls ``ready()`` once it listens.
ServeOne = Callable[[int, Callable[[], None]], int]


@dataclass
class _Worker:
    index: int
    pid: int
    ready_fd: int  # read end of a pipe the worker writes one byte to once it serves


def supervise(count: int, serve: ServeOne) -> int:
    """Fork ``count`` workers and wait for them; the parent itself never touches gRPC.

    gRPC's core cannot survive a fork once it has started threads, so each worker builds its own
    server after the fork, binding the shared port with SO_REUSEPORT (the kernel spreads connections
    over them). SIGTERM or SIGINT is passed on to every worker, each drains its calls, and the parent
    exits 0 once all have exited 0. A worker that dies after it was serving is replaced; one that dies
    before it ever served (a port in use, a bad certificate) stops them all with exit code 1.
    """
    workers: dict[int, _Worker] = {}
    stopping = False

    def stop_all(signum=signal.SIGTERM, frame=None) -> None:
        nonlocal stopping
        if not stopping:
            _LOGGER.info("stopping %d workers", len(workers))
        stopping = True
        for pid in list(workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def spawn(index: int) -> None:
        # Signals wait until the new worker is in `workers`, so none is left out of stop_all.
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            read_fd, write_fd = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(read_fd)
                for other in workers.values():
                    os.close(other.ready_fd)
                _run_worker(index, serve, write_fd)  # never returns
            os.close(write_fd)
            workers[pid] = _Worker(index, pid, read_fd)
            _LOGGER.info("worker %d started (pid %d)", index, pid)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)

    for signum in _SIGNALS:
        signal.signal(signum, stop_all)
    for index in range(count):
        spawn(index)

    exit_code = 0
    while workers:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        worker = workers.pop(pid, None)
        if worker is None:
            continue
        code = os.waitstatus_to_exitcode(status)
        was_ready = os.read(worker.ready_fd, 1) == b"1"
        os.close(worker.ready_fd)
        if stopping:
            if code != 0:
                _LOGGER.error("worker %d (pid %d) exited with %d", worker.index, pid, code)
                exit_code = 1
        elif not was_ready:
            _LOGGER.error("worker %d (pid %d) exited with %d before serving; stopping", worker.index, pid, code)
            exit_code = 1
            stop_all()
        else:
            _LOGGER.warning("worker %d (pid %d) died (%s); starting another", worker.index, pid, _exit_reason(code))
            spawn(worker.index)
    _LOGGER.info("all workers stopped")
    return exit_code


def _run_worker(index: int, serve: ServeOne, ready_fd: int) -> None:
    """The child's side of the fork: serve, then leave without running the parent's cleanup.

    SIGTERM and SIGINT stay blocked (as spawn() left them) until ``serve`` has installed its own
    handlers and unblocks them, so a signal that comes early still drains the worker.
    """
    parent = os.getppid()
    for signum in _SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    _die_with_parent()
    code = 1
    try:
        if os.getppid() != parent:  # the parent died before prctl took effect
            return

        def ready() -> None:
            os.write(ready_fd, b"1")
            os.close(ready_fd)

        code = serve(index, ready)
    except BaseException:  # noqa: BLE001 - report, then exit non-zero: the parent decides what follows
        _LOGGER.exception("worker %d failed", index)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this worker when the supervisor dies, so no orphan keeps the port."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _exit_reason(code: int) -> str:
    return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
