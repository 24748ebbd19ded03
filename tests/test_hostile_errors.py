"""Issue 13, point 9: error messages stay short (lists cut with a count, long names cut) and a caller's
mistake is never INTERNAL."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

import gradserve.client as gs
from gradserve.proto import kserve_pb2 as kpb
from gradserve.proto import kserve_pb2_grpc as kpb_grpc
from serve_process import ServeProcess


@pytest.fixture(scope="module")
def many_models():
    """A server with 1,000 named graphs."""
    with ServeProcess("--log-level", "WARNING") as process, gs.connect(process.target) as client:
        g = gs.Graph()
        g.output(g.Sum(g.input("x")), "out")
        for i in range(1000):
            client.register(g, name=f"model-number-{i:04d}-with-a-longish-name")
        with grpc.insecure_channel(process.target) as channel:
            yield kpb_grpc.GRPCInferenceServiceStub(channel)


def code_and_message(call):
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


def test_a_missing_model_among_a_thousand_is_not_found_in_a_short_message(many_models):
    """ModelMetadata of a missing model with 1,000 registered: NOT_FOUND, under 4 KB, saying how many more."""
    code, message = code_and_message(lambda: many_models.ModelMetadata(kpb.ModelMetadataRequest(name="nope"),
                                                                       timeout=10))
    assert code == grpc.StatusCode.NOT_FOUND and len(message.encode()) < 4096 and "more" in message


def test_a_megabyte_name_is_not_found_in_a_short_message(many_models):
    """A 1 MB model name is NOT_FOUND with a message of a few KB, not a header too big for the client."""
    code, message = code_and_message(lambda: many_models.ModelInfer(
        kpb.ModelInferRequest(model_name="x" * (1 << 20)), timeout=10))
    assert code == grpc.StatusCode.NOT_FOUND and len(message.encode()) < 4096


def test_a_kserve_shape_whose_product_overflows_is_invalid_argument(many_models):
    """An input shape whose element count overflows int64 is INVALID_ARGUMENT, not INTERNAL."""
    request = kpb.ModelInferRequest(model_name="model-number-0000-with-a-longish-name")
    request.inputs.add(name="x", datatype="FP32", shape=[1 << 62, 1 << 62, 4])
    request.raw_input_contents.append(b"")
    code, _ = code_and_message(lambda: many_models.ModelInfer(request, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_a_graph_with_many_inputs_lists_them_cut(client):
    """A missing feed on a graph of 5,000 inputs is named in a short message."""
    g = gs.Graph()
    total = g.input("i0")
    for i in range(1, 5000):
        total = g.Add(total, g.input(f"i{i}"))
    g.output(g.Sum(total), "out")
    with pytest.raises(gs.GradserveError) as info:
        client.run(g, {"i0": np.ones(1)})
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT and len(info.value.message) < 4096
    assert "more" in info.value.message
