"""`gradserve serve` as a child process for tests: start it, find its port, read its memory and threads."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

_SERVING_LINE = re.compile(r"serving on \S+:(\d+)")


def gradserve_command() -> list[str]:
    """The installed `gradserve` console script next to this interpreter (the one CI and users run)."""
    script = Path(sys.executable).with_name("gradserve")
    return [str(script)] if script.exists() else [sys.executable, "-m", "gradserve.server.cli"]


@contextlib.contextmanager
def reserved_port():
    """A free port held by an SO_REUSEPORT socket until the block ends, for servers started with --workers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def health_status(target: str, timeout: float = 2.0) -> int | None:
    """The overall health status of the server at ``target``, or None when it does not answer."""
    with grpc.insecure_channel(target) as channel:
        try:
            return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout).status
        except grpc.RpcError:
            return None


class ServeProcess:
    """``gradserve serve --host 127.0.0.1 --port PORT *args`` in a child process, its stderr in a temp file.

    With ``port=0`` the port is read from the "serving on HOST:PORT" line; with a given port (``--workers``)
    the server is ready when health answers SERVING.
    """

    def __init__(self, *args: str, port: int = 0, env: dict | None = None, startup_timeout: float = 60.0,
                 command: list[str] | None = None):
        # command: another installation's `gradserve` (a throwaway venv's), instead of this interpreter's.
        self.args = [*(command or gradserve_command()), "serve", "--host", "127.0.0.1", "--port", str(port), *args]
        self.port = port
        self.env = {**os.environ, **(env or {})}
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="gradserve-", suffix=".log", delete=False)
        self._final_log: str | None = None

    # -- lifecycle --

    def __enter__(self) -> "ServeProcess":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=self._log, env=self.env,
                                     start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gradserve serve exited with {self.proc.returncode}:\n{self.log()}")
            if self.port == 0:
                match = _SERVING_LINE.search(self.log())
                if match:
                    self.port = int(match.group(1))
            if self.port and health_status(self.target, timeout=1.0) == health_pb2.HealthCheckResponse.SERVING:
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"gradserve serve did not become healthy in {self.startup_timeout}s:\n{self.log()}")

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL for the whole process group if it does not exit in ``timeout``; the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        with contextlib.suppress(ProcessLookupError):  # workers a killed parent left behind
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._log.close()
        if self._final_log is None:
            self._final_log = self.log()
            os.unlink(self._log.name)
        return self.proc.returncode

    # -- inspection --

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        """Everything the server wrote to stderr so far."""
        if self._final_log is not None:
            return self._final_log
        return Path(self._log.name).read_text(errors="replace")

    def children(self) -> list[int]:
        """Pids of the server's child processes (its workers, with --workers)."""
        pids = []
        for task in os.listdir(f"/proc/{self.pid}/task"):
            with contextlib.suppress(FileNotFoundError):
                pids += [int(p) for p in Path(f"/proc/{self.pid}/task/{task}/children").read_text().split()]
        return pids


def rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid`` (VmRSS from /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def thread_count(pid: int) -> int:
    """Threads of process ``pid`` (entries of /proc/PID/task)."""
    return len(os.listdir(f"/proc/{pid}/task"))
