"""The KServe v2 protocol through the real tritonclient: server and model checks, metadata, inference, gradients."""

from __future__ import annotations

import re
import subprocess
import sys

import grpc
import numpy as np
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.runtime_version import VersionError

import gradserve.client as gs
from gradserve.proto import kserve_pb2 as kpb
from gradserve.proto import kserve_tensors
from gradserve.proto.dtypes import BY_KSERVE
from gradserve.proto.tensors import TensorError

try:
    import tritonclient.grpc as tc
    from tritonclient.grpc import service_pb2 as triton_pb
    from tritonclient.grpc import service_pb2_grpc as triton_grpc
    from tritonclient.utils import InferenceServerException
except VersionError as exc:  # tritonclient's generated code needs a newer protobuf than our oldest supported one
    pytest.skip(f"tritonclient cannot load on this protobuf runtime: {exc}", allow_module_level=True)

APPLE = "kserve_apple"
NET = "kserve_two_layer_net"
APPLE_FEEDS = {"apple": np.float64(200), "apple_num": np.float64(5), "tax": np.float64(1.1)}


def apple_graph():
    """The seed's apple graph, its inputs declared as float64 scalars so that its metadata is exact."""
    g = gs.Graph(dtype="float64")
    apple, apple_num, tax = (g.input(n, "float64", []) for n in ("apple", "apple_num", "tax"))
    g.output(apple * apple_num * tax, "price")
    return g


def two_layer_net():
    """The book's TwoLayerNet (Affine, Relu, Affine, SoftmaxWithLoss) for 4 features and 3 classes."""
    g = gs.Graph()
    x = g.input("x", "float32", [-1, 4])
    W1, b1 = g.input("W1", "float32", [4, 5]), g.input("b1", "float32", [5])
    W2, b2 = g.input("W2", "float32", [5, 3]), g.input("b2", "float32", [3])
    t = g.input("t", "int64", [-1])
    y = g.Affine(g.Relu(g.Affine(x, W1, b1)), W2, b2)
    g.output(y, "y")
    g.output(g.SoftmaxWithLoss(y, t), "loss")
    return g


def net_feeds(rng, batch=6):
    return {
        "x": rng.standard_normal((batch, 4)).astype(np.float32),
        "W1": rng.standard_normal((4, 5)).astype(np.float32), "b1": rng.standard_normal(5).astype(np.float32),
        "W2": rng.standard_normal((5, 3)).astype(np.float32), "b2": rng.standard_normal(3).astype(np.float32),
        "t": rng.integers(0, 3, batch).astype(np.int64),
    }


@pytest.fixture(scope="module")
def graphs(target):
    """The apple graph and the TwoLayerNet, registered by name on the shared server."""
    with gs.connect(target) as c:
        g_apple, g_net = apple_graph(), two_layer_net()
        c.register(g_apple, name=APPLE)
        c.register(g_net, name=NET, version="3")
    return {APPLE: g_apple, NET: g_net}


@pytest.fixture()
def triton(target, graphs):
    """A real tritonclient gRPC client connected to the shared server."""
    client = tc.InferenceServerClient(target)
    yield client
    client.close()


def infer_inputs(feeds):
    inputs = []
    for name, value in feeds.items():
        array = np.asarray(value)
        item = tc.InferInput(name, list(array.shape), tc.np_to_triton_dtype(array.dtype))
        item.set_data_from_numpy(array)
        inputs.append(item)
    return inputs


def infer(triton, model, feeds, outputs=None, **kwargs):
    """{output name: array} for a tritonclient infer call, in the order the server answered."""
    requested = [tc.InferRequestedOutput(n) for n in outputs] if outputs is not None else None
    result = triton.infer(model, infer_inputs(feeds), outputs=requested, **kwargs)
    return {o.name: result.as_numpy(o.name) for o in result.get_response().outputs}


def raised(call, code):
    with pytest.raises(InferenceServerException) as info:
        call()
    assert info.value.status() == str(code), info.value
    return info.value.message()


def test_proto_matches_the_published_protocol():
    """Every message and RPC of our kserve.proto has tritonclient's package, names, field numbers and types."""
    theirs = triton_pb.DESCRIPTOR

    def fields(message: descriptor_pb2.DescriptorProto):
        return {f.name: (f.number, f.label, f.type, f.type_name, f.oneof_index) for f in message.field}

    def same(ours: descriptor_pb2.DescriptorProto, their: descriptor_pb2.DescriptorProto, path: str):
        assert fields(ours) == fields(their), path
        their_nested = {n.name: n for n in their.nested_type}
        for nested in ours.nested_type:
            same(nested, their_nested[nested.name], f"{path}.{nested.name}")

    assert kpb.DESCRIPTOR.package == theirs.package == "inference"
    for message in kpb.DESCRIPTOR.message_types_by_name.values():
        ours, their = descriptor_pb2.DescriptorProto(), descriptor_pb2.DescriptorProto()
        message.CopyToProto(ours)
        theirs.message_types_by_name[message.name].CopyToProto(their)
        same(ours, their, message.full_name)
    service, their_service = kpb.DESCRIPTOR.services_by_name["GRPCInferenceService"], theirs.services_by_name[
        "GRPCInferenceService"]
    for method in service.methods:
        their_method = their_service.methods_by_name[method.name]
        assert (method.input_type.full_name, method.output_type.full_name) == (
            their_method.input_type.full_name, their_method.output_type.full_name)


def test_kserve_messages_stay_out_of_the_default_pool():
    """Our `inference` package lives in a private descriptor pool; the process-wide one holds tritonclient's."""
    assert kpb.DESCRIPTOR.pool is not descriptor_pool.Default()
    assert descriptor_pool.Default().FindFileContainingSymbol("inference.ModelInferRequest").name == \
        triton_pb.DESCRIPTOR.name


@pytest.mark.parametrize("first,second", [("gradserve.server.rpc.server", "tritonclient.grpc"),
                                          ("tritonclient.grpc", "gradserve.server.rpc.server")])
def test_server_and_tritonclient_import_in_either_order(first, second):
    """One process can hold gradserve's server and tritonclient, whichever is imported first."""
    done = subprocess.run([sys.executable, "-c", f"import {first}; import {second}"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_server_live_ready_and_metadata(triton):
    """ServerLive, ServerReady and ServerMetadata answer as the protocol says."""
    assert triton.is_server_live() and triton.is_server_ready()
    metadata = triton.get_server_metadata()
    assert metadata.name == "gradserve" and metadata.version
    assert "gradients" in metadata.extensions


def test_model_ready(triton):
    """A named graph and its gradient model are ready; unknown names and versions are not."""
    assert triton.is_model_ready(APPLE) and triton.is_model_ready(APPLE + ":grad")
    assert triton.is_model_ready(NET, "3") and not triton.is_model_ready(NET, "2")
    assert not triton.is_model_ready("no_such_model")


def test_repository_index_lists_the_models(triton):
    """RepositoryIndex lists every named graph and its gradient model, READY."""
    index = {(m.name, m.version, m.state) for m in triton.get_model_repository_index().models}
    assert {(APPLE, "1", "READY"), (APPLE + ":grad", "1", "READY"), (NET, "3", "READY"),
            (NET + ":grad", "3", "READY")} <= index


def signature(metadata):
    return ([(t.name, t.datatype, list(t.shape)) for t in metadata.inputs],
            [(t.name, t.datatype, list(t.shape)) for t in metadata.outputs])


def test_model_metadata_lists_declared_inputs_and_inferred_outputs(triton):
    """Metadata gives each input's declared datatype and shape, and each output's as a probe run infers them."""
    metadata = triton.get_model_metadata(NET, "3")
    assert (metadata.name, list(metadata.versions), metadata.platform) == (NET, ["3"], "gradserve")
    assert signature(metadata) == (
        [("x", "FP32", [-1, 4]), ("W1", "FP32", [4, 5]), ("b1", "FP32", [5]), ("W2", "FP32", [5, 3]),
         ("b2", "FP32", [3]), ("t", "INT64", [-1])],
        [("y", "FP32", [-1, 3]), ("loss", "FP32", [])],
    )


def test_gradient_model_metadata_follows_the_convention(triton):
    """`<name>:grad` adds `<output>:grad` inputs and gives `<input>:grad` for every float input."""
    inputs, outputs = signature(triton.get_model_metadata(NET + ":grad"))
    assert inputs[6:] == [("y:grad", "FP32", [-1, 3]), ("loss:grad", "FP32", [])]
    assert outputs == [("y", "FP32", [-1, 3]), ("loss", "FP32", []), ("x:grad", "FP32", [-1, 4]),
                       ("W1:grad", "FP32", [4, 5]), ("b1:grad", "FP32", [5]), ("W2:grad", "FP32", [5, 3]),
                       ("b2:grad", "FP32", [3])]


def test_metadata_of_an_undeclared_graph_uses_the_defaults(triton, client):
    """Inputs and outputs the graph does not declare are reported as FP32 of shape [-1]."""
    g = gs.Graph()
    x, w = g.inputs("x", "w")
    g.output(x * w, "y")
    client.register(g, name="kserve_undeclared")
    assert signature(triton.get_model_metadata("kserve_undeclared")) == (
        [("x", "FP32", [-1]), ("w", "FP32", [-1])], [("y", "FP32", [-1])])


def test_apple_through_tritonclient_equals_the_python_client(triton, client, graphs):
    """tritonclient gets the seed's 1100 and gradients 5.5, 220, 1000: exactly what the Python client gets."""
    expected = client.run(graphs[APPLE], APPLE_FEEDS)
    assert infer(triton, APPLE, APPLE_FEEDS) == {"price": expected.outputs["price"]}
    got = infer(triton, APPLE + ":grad", APPLE_FEEDS)
    assert list(got) == ["price", "apple:grad", "apple_num:grad", "tax:grad"]
    assert got["price"] == expected.outputs["price"] == pytest.approx(1100)
    for name, seed_value in (("apple", 5.5), ("apple_num", 220), ("tax", 1000)):
        assert got[f"{name}:grad"] == expected.grads[name] == pytest.approx(seed_value)
        assert got[f"{name}:grad"].dtype == np.float64


def test_two_layer_net_gradients_equal_the_python_client(triton, client, graphs, rng):
    """The TwoLayerNet's loss and every parameter gradient through tritonclient equal client.run's."""
    feeds = net_feeds(rng)
    expected = client.run(graphs[NET], feeds)
    got = infer(triton, NET + ":grad", feeds)
    np.testing.assert_array_equal(got["loss"], expected.outputs["loss"])
    np.testing.assert_array_equal(got["y"], expected.outputs["y"])
    for name in ("x", "W1", "b1", "W2", "b2"):
        np.testing.assert_array_equal(got[f"{name}:grad"], expected.grads[name])
    assert "t:grad" not in got  # integer labels take no gradient


def test_requested_outputs_are_honoured(triton, graphs, rng):
    """Only the requested outputs come back, in the requested order; a forward only request skips backward."""
    feeds = net_feeds(rng)
    got = infer(triton, NET + ":grad", feeds, outputs=["W2:grad", "loss"])
    assert list(got) == ["W2:grad", "loss"]
    assert list(infer(triton, NET + ":grad", feeds, outputs=["y"])) == ["y"]
    assert list(infer(triton, NET, feeds, outputs=["loss"])) == ["loss"]
    assert list(infer(triton, NET, feeds)) == ["y", "loss"]


def test_output_gradients_go_in_as_grad_inputs(triton, client, graphs, rng):
    """An `<output>:grad` input seeds backward from that output, as seed_grads does in client.run."""
    feeds = net_feeds(rng)
    dy = rng.standard_normal((6, 3)).astype(np.float32)
    expected = client.run(graphs[NET], feeds, seed_grads={"y": dy})
    got = infer(triton, NET + ":grad", {**feeds, "y:grad": dy}, outputs=["W1:grad", "x:grad"])
    np.testing.assert_array_equal(got["W1:grad"], expected.grads["W1"])
    np.testing.assert_array_equal(got["x:grad"], expected.grads["x"])


def test_typed_contents_are_accepted(target, graphs):
    """Inputs sent as typed contents (fp64_contents) give the same result as raw bytes."""
    request = triton_pb.ModelInferRequest(model_name=APPLE + ":grad")
    for name, value in APPLE_FEEDS.items():
        tensor = request.inputs.add(name=name, datatype="FP64", shape=[])
        tensor.contents.fp64_contents.append(float(value))
    request.outputs.add(name="tax:grad")
    with grpc.insecure_channel(target) as channel:
        response = triton_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [("tax:grad", "FP64", [])]
    assert np.frombuffer(response.raw_output_contents[0], "<f8")[0] == np.float64(200) * np.float64(5)


def test_request_parameters_training_and_seed(triton, rng):
    """The training and seed parameters reach the run; any other parameter is refused with a reason."""
    feeds = net_feeds(rng)
    plain = infer(triton, NET, feeds)
    assert infer(triton, NET, feeds, parameters={"training": True, "seed": 7})["loss"] == plain["loss"]
    message = raised(lambda: infer(triton, NET, feeds, parameters={"trainnig": True}),
                     grpc.StatusCode.INVALID_ARGUMENT)
    assert "trainnig" in message and "training" in message


@pytest.mark.parametrize("call,code,pattern", [
    (lambda t: t.get_model_metadata("no_such_model"), grpc.StatusCode.NOT_FOUND, "no model 'no_such_model'"),
    (lambda t: t.get_model_metadata(APPLE, "9"), grpc.StatusCode.NOT_FOUND, "has version '1'"),
    (lambda t: infer(t, APPLE, {**APPLE_FEEDS, "tax": np.float32(1.1)}), grpc.StatusCode.INVALID_ARGUMENT,
     "expects dtype float64"),
    (lambda t: infer(t, APPLE, {"apple": np.float64(1)}), grpc.StatusCode.INVALID_ARGUMENT, "missing feed"),
    (lambda t: infer(t, APPLE, APPLE_FEEDS, outputs=["apple:grad"]), grpc.StatusCode.INVALID_ARGUMENT,
     "gradients come from model 'kserve_apple:grad'"),
    (lambda t: infer(t, APPLE + ":grad", {**APPLE_FEEDS, "cost:grad": np.float64(1)}),
     grpc.StatusCode.INVALID_ARGUMENT, "names no output"),
    (lambda t: infer(t, NET + ":grad", {"x": np.zeros((2, 4), np.float32)}, outputs=["t:grad"]),
     grpc.StatusCode.INVALID_ARGUMENT, "no output 't:grad'"),
    (lambda t: t.get_model_config(APPLE), grpc.StatusCode.UNIMPLEMENTED, ""),
])
def test_errors_map_to_status_codes(triton, call, code, pattern):
    """Each bad request gets its proper status code and a message that says what to fix; the server goes on."""
    assert pattern in raised(lambda: call(triton), code)
    assert triton.is_server_live()


@pytest.mark.parametrize("raw,pattern", [
    ([b"\0" * 7, b"\0" * 8, b"\0" * 8], "7 raw bytes do not match shape [] of FP64"),
    ([b"\0" * 8] * 2, "2 entries for 3 inputs"),
])
def test_malformed_raw_contents_are_invalid_argument(target, graphs, raw, pattern):
    """Raw contents that do not match the inputs are refused with INVALID_ARGUMENT naming the mismatch."""
    request = triton_pb.ModelInferRequest(model_name=APPLE, raw_input_contents=raw)
    for name in APPLE_FEEDS:
        request.inputs.add(name=name, datatype="FP64", shape=[])
    with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError) as info:
        triton_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and pattern in info.value.details()


def test_unsupported_datatype_is_invalid_argument(target, graphs):
    """A datatype gradserve has no dtype for (BYTES) is refused, naming the ones it takes."""
    request = triton_pb.ModelInferRequest(model_name=APPLE)
    request.inputs.add(name="apple", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"200")
    with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError) as info:
        triton_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "FP32" in info.value.details()


def test_health_and_reflection_know_the_kserve_service(target):
    """Health answers SERVING for inference.GRPCInferenceService and reflection describes it."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        check = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService"))
        assert check.status == health_pb2.HealthCheckResponse.SERVING
        requests = [reflection_pb2.ServerReflectionRequest(list_services=""),
                    reflection_pb2.ServerReflectionRequest(file_containing_symbol="inference.GRPCInferenceService"),
                    reflection_pb2.ServerReflectionRequest(file_containing_symbol="gradserve.v1.GradServe")]
        responses = list(reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(iter(requests)))
    assert {"inference.GRPCInferenceService", "gradserve.v1.GradServe"} <= {
        s.name for s in responses[0].list_services_response.service}
    for response, package in zip(responses[1:], ("inference", "gradserve.v1"), strict=True):
        (serialized,) = response.file_descriptor_response.file_descriptor_proto
        assert descriptor_pb2.FileDescriptorProto.FromString(serialized).package == package


@pytest.mark.parametrize("kind", sorted(BY_KSERVE))
def test_every_datatype_travels_raw_and_typed(kind):
    """Each supported datatype reads back the same array from raw bytes and (but FP16) typed contents."""
    dtype = BY_KSERVE[kind].numpy
    array = (np.arange(6) % 2 == 1) if kind == "BOOL" else np.arange(-2, 4).astype(dtype)
    array = array.reshape(2, 3)
    raw = kpb.ModelInferRequest(raw_input_contents=[array.tobytes()])
    raw.inputs.add(name="a", datatype=kind, shape=[2, 3])
    np.testing.assert_array_equal(kserve_tensors.request_inputs(raw)["a"], array)
    response = kpb.ModelInferResponse()
    kserve_tensors.add_output(response, "a", array)
    assert (response.outputs[0].datatype, response.raw_output_contents[0]) == (kind, array.tobytes())
    typed = kpb.ModelInferRequest()
    tensor = typed.inputs.add(name="a", datatype=kind, shape=[2, 3])
    if kind == "FP16":
        with pytest.raises(TensorError, match="only as raw_input_contents"):
            kserve_tensors.request_inputs(typed)
        return
    field = {"BOOL": "bool_contents", "UINT8": "uint_contents", "INT64": "int64_contents",
             "FP32": "fp32_contents", "FP64": "fp64_contents"}.get(kind, "int_contents")
    getattr(tensor.contents, field).extend(array.reshape(-1).tolist())
    got = kserve_tensors.request_inputs(typed)["a"]
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, array)


@pytest.mark.parametrize("fill,pattern", [
    (lambda c: c.int_contents.extend([1, 300]), "out of range for INT8"),
    (lambda c: c.fp32_contents.extend([1, 2]), "INT8 values go in contents.int_contents, not contents.fp32"),
    (lambda c: c.int_contents.extend([1]), "1 values for shape [2]"),
])
def test_bad_typed_contents_name_the_problem(fill, pattern):
    """Typed contents out of range, in the wrong field or of the wrong count are refused, saying which."""
    request = kpb.ModelInferRequest()
    fill(request.inputs.add(name="a", datatype="INT8", shape=[2]).contents)
    with pytest.raises(TensorError, match=re.escape(pattern)):
        kserve_tensors.request_inputs(request)
