"""Server processes for the bench (gradserve and the bare echo), their clients and their memory use."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grpc

import gradserve.client as gs
from gradserve.client.connection import DEFAULT_MESSAGE_BYTES
from gradserve.proto import message_size_options

from bench.echo import echo_callable

ROOT = Path(__file__).resolve().parent.parent

#: What the gradserve client sets on its channel; the echo client uses the same.
CLIENT_OPTIONS = message_size_options(DEFAULT_MESSAGE_BYTES)


class ServerProcess:
    """``python -m bench.serve KIND`` in a child process on a free loopback port; a context manager."""

    def __init__(self, kind: str, *, env: dict[str, str] | None = None, max_session_bytes: int | None = None,
                 glibc_malloc: bool = False, blas_threads: int | None = None, max_workers: int | None = None,
                 max_streams: int | None = None):
        self.kind = kind
        args = [sys.executable, "-m", "bench.serve", kind] + (["--glibc-malloc"] if glibc_malloc else [])
        if blas_threads is not None:
            args += ["--blas-threads", str(blas_threads)]
        if max_workers is not None:
            args += ["--max-workers", str(max_workers)]
        if max_streams is not None:
            args += ["--max-streams", str(max_streams)]
        if max_session_bytes is not None:
            args += ["--max-session-bytes", str(max_session_bytes)]
        environ = dict(os.environ if env is None else env)
        environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), environ.get("PYTHONPATH")]))
        self.process = subprocess.Popen(args, cwd=ROOT, env=environ, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True)
        line = self.process.stdout.readline()
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError(f"the {kind} server did not start (exit code {self.process.returncode})")
        self.target = f"127.0.0.1:{int(line)}"

    def rss(self) -> int:
        """Resident set size of the server process in bytes (Linux /proc)."""
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS in /proc status")

    def cpu_seconds(self) -> float:
        """User and system CPU time the server process has used so far, all its threads (Linux /proc)."""
        with open(f"/proc/{self.process.pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class Echo:
    """A client of the echo server: ``echo(payload)`` sends bytes and returns the same bytes."""

    def __init__(self, target: str):
        self.channel = grpc.insecure_channel(target, options=CLIENT_OPTIONS)
        self.call = echo_callable(self.channel)

    def __call__(self, payload: bytes) -> bytes:
        return self.call(payload)

    def close(self) -> None:
        self.channel.close()


def gradserve_client(target: str) -> gs.Client:
    return gs.connect(target, max_message_bytes=DEFAULT_MESSAGE_BYTES)
