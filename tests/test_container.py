"""The container's files: the Dockerfile passes hadolint, .dockerignore keeps the wheel's sources, and the
`gradserve health` command its HEALTHCHECK runs tells SERVING from anything else."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from gradserve.server.rpc.server import start_server
from gradserve.server.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_dockerfile_passes_hadolint():
    """hadolint reports nothing on the Dockerfile."""
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    completed = subprocess.run([hadolint, "Dockerfile"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_dockerignore_lets_in_what_the_wheel_is_built_from():
    """Every package folder pyproject maps, pyproject.toml, README.md and the wheelhouse are in the build context."""
    package_dirs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    allowed = {line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.startswith("!")}
    needed = {folder.split("/")[0] for folder in package_dirs.values()} | {"pyproject.toml", "README.md", "wheelhouse"}
    assert needed <= allowed


def test_healthcheck_runs_gradserve_health():
    """The image's HEALTHCHECK is `gradserve health` (its port follows GRADSERVE_PORT, as serve's does)."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r'^HEALTHCHECK .*CMD \["gradserve", "health"\]$', dockerfile, re.M)


def test_health_command_exits_0_for_a_serving_server(target, capsys):
    """`gradserve health --target` exits 0 and prints SERVING when the server is serving."""
    assert main(["health", "--target", target]) == 0
    assert "SERVING" in capsys.readouterr().out


def test_health_command_exits_1_for_a_draining_server(registry, capsys):
    """A server whose health says NOT_SERVING (draining on SIGTERM) fails the health command."""
    running = start_server("127.0.0.1:0", registry)
    try:
        running.health.enter_graceful_shutdown()
        assert main(["health", "--port", str(running.port)]) == 1
        assert "NOT_SERVING" in capsys.readouterr().out
    finally:
        running.stop(None)


def test_health_command_exits_1_when_nothing_answers(capsys):
    """No server on the port: exit 1 with the gRPC status, within the timeout."""
    running = start_server("127.0.0.1:0")
    port = running.port
    running.stop(None)  # a port that was just free and now has no server
    assert main(["health", "--port", str(port), "--timeout", "2"]) == 1
    assert "UNAVAILABLE" in capsys.readouterr().err


def test_health_port_follows_the_servers_variable(monkeypatch, target):
    """GRADSERVE_PORT moves the health command's default port with the server's (one variable in the image)."""
    monkeypatch.setenv("GRADSERVE_PORT", target.rsplit(":", 1)[1])
    assert main(["health"]) == 0
