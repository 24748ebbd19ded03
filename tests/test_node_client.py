"""The Node.js example (examples/node) gets the same apple numbers from the server as the Python client."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest

import gradserve.client as gs

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "node"
NODE = shutil.which("node")

pytestmark = [
    pytest.mark.skipif(NODE is None, reason="node is not installed (the Node.js example needs node >= 18)"),
    pytest.mark.skipif(not (EXAMPLE / "node_modules" / "@grpc" / "grpc-js").is_dir(),
                       reason="examples/node/node_modules is missing: run `npm ci --prefix examples/node`"),
]


def python_apple(client) -> gs.Result:
    g = gs.Graph(dtype="float64")
    apple, apple_num, tax = g.inputs("apple", "apple_num", "tax", dtype="float64")
    g.output(g.Mul(g.Mul(apple, apple_num, name="apple_price"), tax, name="price"), "price")
    return client.run(g, {"apple": np.float64(200), "apple_num": np.float64(5), "tax": np.float64(1.1)})


def test_node_apple_example_equals_python_client(client, target):
    """node apple.js prints price 1100 and gradients 5.5, 220, 1000: exactly the Python client's numbers."""
    done = subprocess.run([NODE, str(EXAMPLE / "apple.js"), target], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    expected = python_apple(client)
    assert printed["outputs"] == {k: float(v) for k, v in expected.outputs.items()}
    assert printed["grads"] == {k: float(v) for k, v in expected.grads.items()}
    assert printed["outputs"]["price"] == pytest.approx(1100)
    assert [printed["grads"][k] for k in ("apple", "apple_num", "tax")] == pytest.approx([5.5, 220, 1000])


def test_node_session_example_answers_every_step_in_order(target):
    """node session.js: five steps on one stream, each answered in order with the chapter's numbers; the
    backward with no kept pass is answered NOT_FOUND and the run after it still succeeds."""
    done = subprocess.run([NODE, str(EXAMPLE / "session.js"), target], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["step"] for line in lines] == ["SESSION_OPEN", "SESSION_FORWARD", "SESSION_BACKWARD",
                                                "SESSION_BACKWARD", "SESSION_RUN"]
    assert lines[0]["graph_id"] and lines[1]["outputs"]["price"] == pytest.approx(1100)
    assert lines[2]["grads"] == pytest.approx({"apple": 5.5, "tax": 1000})
    assert lines[3]["status"]["code"] == "NOT_FOUND" and "no forward pass" in lines[3]["status"]["message"]
    assert lines[4]["outputs"]["price"] == pytest.approx(1100) and lines[4]["grads"]["apple_num"] == pytest.approx(220)


def test_node_example_reports_an_unreachable_server():
    """Against a port nobody listens on, the example exits non-zero with the gRPC status on stderr."""
    with socket.socket() as probe:  # a port that was free a moment ago, now closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = subprocess.run([NODE, str(EXAMPLE / "apple.js"), f"127.0.0.1:{port}"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1
    assert "UNAVAILABLE" in done.stderr
