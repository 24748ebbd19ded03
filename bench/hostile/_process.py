"""`gradserve serve` in a child process for the attack modules: start it on a free port, read its memory, stop it."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import numpy as np

import gradserve.client as gs

_SERVING = re.compile(r"serving on \S+:(\d+)")


class Served:
    """``gradserve serve --port 0 *args``; ``exit_code`` is set by stop() (SIGTERM, then wait)."""

    def __init__(self, *args: str):
        self._log = tempfile.NamedTemporaryFile(prefix="gradserve-hostile-", suffix=".log", delete=False)
        script = Path(sys.executable).with_name("gradserve")
        command = [str(script)] if script.exists() else [sys.executable, "-m", "gradserve.server.cli"]
        self.proc = subprocess.Popen([*command, "serve", "--host", "127.0.0.1", "--port", "0",
                                      "--log-level", "WARNING", *args],
                                     stdout=subprocess.DEVNULL, stderr=self._log, start_new_session=True,
                                     env={**os.environ, "GRPC_VERBOSITY": "NONE"})
        self.exit_code: int | None = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            match = _SERVING.search(self.log())
            if match:
                self.target = f"127.0.0.1:{match.group(1)}"
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"gradserve serve did not start:\n{self.log()}")

    def log(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.exit_code = self.proc.returncode
        self._log.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._log.name)
        return self.exit_code

    def __enter__(self) -> "Served":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class PeakRss:
    """The highest resident memory of ``served`` while the block runs (sampled every 20 ms)."""

    def __init__(self, served: Served):
        self.served, self.peak, self._stop = served, served.rss(), threading.Event()

    def __enter__(self) -> "PeakRss":
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            with contextlib.suppress(OSError):
                self.peak = max(self.peak, self.served.rss())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def outcome(call) -> str:
    """"OK" or the status code's name of a client call."""
    try:
        call()
        return "OK"
    except gs.GradserveError as error:
        return error.code.name
    except grpc.RpcError as error:
        return error.code().name


def relu_graph() -> gs.Graph:
    g = gs.Graph()
    g.output(g.Relu(g.input("x")), "y")
    return g


def canary_seconds(target: str, token: str | None = None, timeout: float = 2.0) -> float | None:
    """Seconds a small Run took, or None when it did not answer within ``timeout``."""
    start = time.perf_counter()
    try:
        with gs.connect(target, token=token, timeout=timeout) as client:
            client.run(relu_graph(), {"x": np.array([-1.0, 2.0], np.float32)}, grad=False)
    except gs.GradserveError:
        return None
    return time.perf_counter() - start


def mib(nbytes: int) -> str:
    return f"{nbytes / (1 << 20):.0f} MiB"
