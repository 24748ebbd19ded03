"""Shared fixtures: a real gradserve server on port 0 and a real client talking to it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gradserve.client as gs
from gradserve.server.rpc.server import start_server
from gradserve.server.service.registry import load_registry


@pytest.fixture(scope="session")
def registry():
    """The layer registry as the installed entry points give it."""
    return load_registry()


@pytest.fixture(scope="session")
def server(registry):
    """A real server on a free loopback port, shared by the session's tests."""
    running = start_server("127.0.0.1:0", registry)
    yield running
    running.stop(None)


@pytest.fixture(scope="session")
def target(server):
    return f"127.0.0.1:{server.port}"


@pytest.fixture()
def client(target):
    """A real client connected to the shared server."""
    with gs.connect(target) as c:
        yield c


@pytest.fixture()
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def gradserve_wheel(tmp_path_factory) -> Path:
    """gradserve built as a wheel from this checkout, once per test session."""
    out = tmp_path_factory.mktemp("wheel")
    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(root)], check=True)
    return next(out.glob("gradserve-*.whl"))
