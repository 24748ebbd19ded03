"""Error messages under long lists and long names: bounded, with the right status."""

from __future__ import annotations

import sys
from pathlib import Path

import grpc

import gradserve.client as gs
from bench.hostile import Figure
from gradserve.proto import kserve_pb2 as kpb
from gradserve.proto import kserve_pb2_grpc as kpb_grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from serve_process import ServeProcess  # noqa: E402


def _status(call) -> tuple[str, int]:
    try:
        call()
    except grpc.RpcError as error:
        return error.code().name, len((error.details() or "").encode())
    return "OK", 0


def figures(quick: bool) -> list[Figure]:
    models = 200 if quick else 1000
    out = []
    with ServeProcess("--log-level", "WARNING") as process, gs.connect(process.target) as client, \
            grpc.insecure_channel(process.target) as channel:
        g = gs.Graph()
        g.output(g.Sum(g.input("x")), "out")
        for i in range(models):
            client.register(g, name=f"model-number-{i:04d}-with-a-longish-name")
        stub = kpb_grpc.GRPCInferenceServiceStub(channel)
        code, size = _status(lambda: stub.ModelMetadata(kpb.ModelMetadataRequest(name="nope"), timeout=10))
        out.append(Figure(f"ModelMetadata of a missing model, {models} registered",
                          f"{code}, {size}-byte message", code == "NOT_FOUND" and size < 4096))
        code, size = _status(lambda: stub.ModelInfer(kpb.ModelInferRequest(model_name="x" * (1 << 20)), timeout=10))
        out.append(Figure("ModelInfer naming a 1 MB model", f"{code}, {size}-byte message",
                          code == "NOT_FOUND" and size < 4096))
        request = kpb.ModelInferRequest(model_name="model-number-0000-with-a-longish-name")
        request.inputs.add(name="x", datatype="FP32", shape=[1 << 62, 1 << 62, 4])
        request.raw_input_contents.append(b"")
        code, size = _status(lambda: stub.ModelInfer(request, timeout=10))
        out.append(Figure("a KServe shape whose product overflows int64", code, code == "INVALID_ARGUMENT"))
    return out
