"""Bad input: generated graphs, attributes, tensors and raw garbage bytes sent to every method.

Every call must end with a proper status (the allowed set is given per case; UNKNOWN and INTERNAL never),
within its deadline, without crashing the server, and a well-formed request right after must succeed.
The server is a `gradserve serve` child process of its own, so a crash or a hang shows. Example counts
are modest for CI; GRADSERVE_FUZZ_EXAMPLES raises them for a longer hunt.
"""

from __future__ import annotations

import contextlib
import os
import socket

import grpc
import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from hypothesis import HealthCheck, event, given, settings
from hypothesis.control import currently_in_test_context
from hypothesis import strategies as st

from gradserve.proto import gradserve_pb2 as pb
from gradserve.proto.tensors import dtype_name, from_tensor, to_tensor
from gradserve.server.service.limits import Limits
from gradserve.server.service.registry import load_registry
from serve_process import ServeProcess

FUZZ = settings(max_examples=int(os.environ.get("GRADSERVE_FUZZ_EXAMPLES", "40")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
CALL_TIMEOUT = 30.0  # a call that takes longer is a hang
MAX_GRAPH_NODES = Limits().max_graph_nodes  # the server runs with the default limits

Code = grpc.StatusCode
# A caller's mistake in a graph, an attribute or a tensor, or a limit it hit.
BAD_REQUEST = {Code.INVALID_ARGUMENT, Code.NOT_FOUND, Code.RESOURCE_EXHAUSTED}
# Garbage may also parse into a request that names a session or a graph that does not exist, or into a valid one.
GARBAGE = BAD_REQUEST | {Code.FAILED_PRECONDITION, Code.OK}

GRADSERVE = "/gradserve.v1.GradServe/"
REGISTRY = load_registry()
OPS = sorted(REGISTRY.layers)
DTYPE_CODES = [v for k, v in pb.DType.items() if k != "DTYPE_UNSPECIFIED"]
NUMPY_DTYPES = [dtype_name(code) for code in DTYPE_CODES]
# What a str attribute gets: real dtype names, dtypes no wire can carry (some would allocate gigabytes), junk.
STRINGS = st.sampled_from(NUMPY_DTYPES + ["U999999999", "S999999999", "object", "V8", "float128", "complex64"]) \
    | st.text(max_size=12)


@pytest.fixture(scope="module")
def served():
    """A server process of its own: a crash here must not take the shared test server with it."""
    with ServeProcess("--log-level", "WARNING") as process:
        yield process


@pytest.fixture(scope="module")
def channel(served):
    with grpc.insecure_channel(served.target) as ch:
        yield ch


def call(channel, method: str, request) -> tuple[grpc.StatusCode, str, bytes]:
    """Send ``request`` (a message or raw bytes) to ``method``: (status code, details, response bytes)."""
    data = request if isinstance(request, bytes) else request.SerializeToString()
    try:
        return Code.OK, "", channel.unary_unary(method)(data, timeout=CALL_TIMEOUT)
    except grpc.RpcError as error:
        return error.code(), error.details() or "", b""


def expect(channel, method: str, request, allowed: set) -> tuple[grpc.StatusCode, bytes]:
    code, details, response = call(channel, method, request)
    if currently_in_test_context():  # --hypothesis-show-statistics shows how far the examples got
        event(f"{method.rsplit('/', 1)[-1]}: {code.name}")
    assert code in allowed, f"{method} answered {code.name}: {details}\nrequest: {request!r:.2000}"
    return code, response


def well_formed_request_succeeds(served, channel) -> None:
    """The server is alive and a good Run gives the right loss and gradients."""
    assert served.alive(), f"the server died:\n{served.log()[-3000:]}"
    g = pb.Graph(inputs=[pb.ValueInfo(name="x"), pb.ValueInfo(name="y")],
                 nodes=[pb.Node(name="m", op="Mul", inputs=["x", "y"]), pb.Node(name="s", op="Sum", inputs=["m"])],
                 outputs=[pb.Output(name="loss", value="s")])
    x, y = np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0, 6.0])
    request = pb.RunRequest(graph=pb.GraphRef(graph=g), feeds={"x": to_tensor(x), "y": to_tensor(y)})
    code, details, raw = call(channel, GRADSERVE + "Run", request)
    assert code is Code.OK, f"a well-formed Run after bad input got {code.name}: {details}"
    response = pb.RunResponse.FromString(raw)
    assert from_tensor(response.outputs["loss"]) == 32.0
    np.testing.assert_array_equal(from_tensor(response.grads["x"]), y)
    np.testing.assert_array_equal(from_tensor(response.grads["y"]), x)


# -- strategies --

DIMS = st.integers(-3, 4) | st.sampled_from([2**31, 2**40, 2**62, 2**63 - 1, -(2**63)])
ARRAYS = hnp.arrays(dtype=st.sampled_from(NUMPY_DTYPES),
                    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3))


@st.composite
def wire_tensors(draw) -> pb.Tensor:
    """Tensors as a careless or hostile client sends them: any dtype code, any shape, any bytes; or real arrays."""
    if draw(st.booleans()):
        return to_tensor(draw(ARRAYS))  # well-formed, with NaN, inf and empty arrays among them
    dtype = draw(st.sampled_from(DTYPE_CODES) | st.integers(-5, 40))
    shape = draw(st.lists(DIMS, max_size=4) | st.lists(st.just(1), min_size=60, max_size=80))
    data = draw(st.binary(max_size=64))
    if draw(st.booleans()) and all(0 <= d <= 64 for d in shape) and dtype in DTYPE_CODES:
        size = int(np.prod(shape, dtype=object)) * np.dtype(dtype_name(dtype)).itemsize  # bytes that fit
        data = (data * (size // max(len(data), 1) + 1))[:size] if size else b""
    return pb.Tensor(dtype=dtype, shape=shape, data=data)


def attr_values(kind: str | None = None):
    """AttrValues of one schema type with odd contents, or of any type when ``kind`` is None."""
    by_kind = {
        "int": st.builds(lambda v: pb.AttrValue(i=v), st.integers(-4, 4) | st.integers(-(2**63), 2**63 - 1)),
        "float": st.builds(lambda v: pb.AttrValue(f=v), st.floats()),  # NaN and infinities included
        "bool": st.builds(lambda v: pb.AttrValue(b=v), st.booleans()),
        "str": st.builds(lambda v: pb.AttrValue(s=v), STRINGS),
        "ints": st.builds(lambda v: pb.AttrValue(ints=pb.Ints(values=v)), st.lists(DIMS, max_size=5)),
        "floats": st.builds(lambda v: pb.AttrValue(floats=pb.Floats(values=v)), st.lists(st.floats(), max_size=8)),
    }
    anything = st.one_of(*by_kind.values(), st.just(pb.AttrValue()))
    return anything if kind is None else st.one_of(by_kind[kind], by_kind[kind], by_kind[kind], anything)


NAMES = st.sampled_from(["x", "y", "w", "t", "n0", "n1", "n2", "n1:out", "out", ""])
VALUE_INFOS = st.builds(
    lambda name, dtype, dims: pb.ValueInfo(name=name, dtype=dtype, shape=None if dims is None else pb.Shape(dims=dims)),
    NAMES, st.sampled_from(DTYPE_CODES) | st.integers(-3, 30), st.none() | st.lists(DIMS, max_size=4),
)
NODES = st.builds(
    lambda name, op, inputs, outputs, attrs: pb.Node(name=name, op=op, inputs=inputs, outputs=outputs, attrs=attrs),
    NAMES, st.sampled_from(OPS + ["", "Nope", "os.system", "__import__"]), st.lists(NAMES, max_size=5),
    st.lists(NAMES, max_size=3),
    st.dictionaries(st.sampled_from(sorted({a for e in REGISTRY.layers.values() for a in e.cls.attributes}) + ["junk"]),
                    attr_values(), max_size=3),
)
LOOSE_GRAPHS = st.builds(
    lambda inputs, nodes, outputs: pb.Graph(inputs=inputs, nodes=nodes, outputs=outputs),
    st.lists(VALUE_INFOS, max_size=4), st.lists(NODES, max_size=8),
    st.lists(st.builds(lambda n, v: pb.Output(name=n, value=v), NAMES, NAMES), max_size=3),
)


@st.composite
def wired_graphs(draw) -> tuple[pb.Graph, dict[str, pb.Tensor]]:
    """Graphs whose names all connect and whose nodes have the right arity, with odd attributes and feeds.

    These pass the structural checks and reach the layers, so the layers meet NaN, empty, mismatched and
    wrongly typed arrays and attribute values at the edge of their types.
    """
    values = [f"in{i}" for i in range(draw(st.integers(1, 3)))]
    graph = pb.Graph(inputs=[pb.ValueInfo(name=v) for v in values])
    for index in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(OPS))
        cls = REGISTRY.layers[op].cls
        node = graph.nodes.add(name=f"n{index}", op=op, inputs=[draw(st.sampled_from(values)) for _ in cls.inputs])
        for attr_name, attr in cls.attributes.items():
            if attr.required or draw(st.booleans()):
                node.attrs[attr_name].CopyFrom(draw(attr_values(attr.type)))
        values += [node.name] if len(cls.outputs) == 1 else [f"{node.name}:{o}" for o in cls.outputs]
    for name in draw(st.lists(st.sampled_from(values), min_size=1, max_size=3, unique=True)):
        graph.outputs.add(name=name, value=name)
    # Mostly floats of one shape, so that many graphs get past the feed checks and into the layers.
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3))
    floats = hnp.arrays(dtype=st.sampled_from(["float32", "float64"]),
                        shape=st.just(shape) | hnp.array_shapes(max_dims=3))
    feed = st.one_of(floats.map(to_tensor), floats.map(to_tensor), wire_tensors())
    feeds = {inp.name: draw(feed) for inp in graph.inputs}
    return graph, feeds


# -- garbage bytes --

def unary_methods(target: str) -> list[str]:
    """Every unary-unary method of every service the server lists through reflection (health included)."""
    with grpc.insecure_channel(target) as ch:
        database = ProtoReflectionDescriptorDatabase(ch)
        pool = descriptor_pool.DescriptorPool(database)
        methods = []
        for service in database.get_services():
            for method in pool.FindServiceByName(service).methods:
                if not method.client_streaming and not method.server_streaming:
                    methods.append(f"/{service}/{method.name}")
    return sorted(methods)


_METHODS: dict[str, list[str]] = {}


def unary_methods_cached(target: str) -> list[str]:
    if target not in _METHODS:
        _METHODS[target] = unary_methods(target)
    return _METHODS[target]


def valid_requests() -> list[tuple[str, object]]:
    """One good request per GradServe method, for mutation."""
    g = pb.Graph(inputs=[pb.ValueInfo(name="x", dtype=pb.FLOAT64, shape=pb.Shape(dims=[-1, 2]))],
                 nodes=[pb.Node(name="s", op="Sum", inputs=["x"],
                                attrs={"axis": pb.AttrValue(ints=pb.Ints(values=[1]))})],
                 outputs=[pb.Output(name="s", value="s")])
    feeds = {"x": to_tensor(np.ones((2, 2)))}
    ref = pb.GraphRef(graph=g)
    return [
        ("ListLayers", pb.ListLayersRequest()),
        ("RegisterGraph", pb.RegisterGraphRequest(graph=g, name="fuzz", version="1")),
        ("Forward", pb.ForwardRequest(graph=ref, feeds=feeds, keep_for_backward=True)),
        ("Backward", pb.BackwardRequest(session_id="0" * 32, output_grads={"s": to_tensor(np.ones(2))})),
        ("ReleaseSession", pb.ReleaseSessionRequest(session_id="0" * 32)),
        ("Run", pb.RunRequest(graph=ref, feeds=feeds, output_grads={"s": to_tensor(np.ones(2))}, wrt=["x"])),
        ("CheckGradients", pb.CheckGradientsRequest(graph=ref, feeds=feeds, output_grads={"s": to_tensor(np.ones(2))})),
    ]


def test_every_gradserve_method_and_health_is_fuzzed(served):
    """Reflection lists every GradServe method and health Check, so the garbage test reaches them all."""
    methods = unary_methods(served.target)
    expected = {GRADSERVE + m.name for m in pb.DESCRIPTOR.services_by_name["GradServe"].methods
                if not m.client_streaming}  # RunStream: tests/test_streaming.py
    assert expected | {"/grpc.health.v1.Health/Check"} <= set(methods), methods


@FUZZ
@given(data=st.data(), garbage=st.binary(max_size=300))
def test_garbage_bytes_get_a_proper_status(served, channel, data, garbage):
    """Raw bytes sent to any unary method get OK or a caller's-fault status, never INTERNAL or UNKNOWN."""
    method = data.draw(st.sampled_from(unary_methods_cached(served.target)), label="method")
    expect(channel, method, garbage, GARBAGE)
    well_formed_request_succeeds(served, channel)


@FUZZ
@given(request=st.sampled_from(valid_requests()), data=st.data())
def test_mutated_requests_get_a_proper_status(served, channel, request, data):
    """A valid request with bytes flipped, cut or appended gets OK or a caller's-fault status."""
    method, message = request
    raw = bytearray(message.SerializeToString())
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        where = data.draw(st.integers(0, max(len(raw) - 1, 0)), label="at")
        action = data.draw(st.sampled_from(["flip", "cut", "append"]), label="action")
        if action == "flip" and raw:
            raw[where] = data.draw(st.integers(0, 255), label="byte")
        elif action == "cut":
            del raw[where:]
        else:
            raw[where:where] = data.draw(st.binary(min_size=1, max_size=16), label="bytes")
    expect(channel, GRADSERVE + method, bytes(raw), GARBAGE)
    well_formed_request_succeeds(served, channel)


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@FUZZ
@given(payload=st.one_of(
    st.binary(max_size=2000),
    st.binary(max_size=500).map(lambda b: H2_PREFACE + b),  # a valid HTTP/2 start, then junk frames
    st.just(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
    # An empty SETTINGS frame, then DATA on a stream never opened, carrying a gRPC prefix that promises 1 GiB.
    st.just(H2_PREFACE + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
            + b"\x00\x00\x05\x00\x00\x00\x00\x00\x01\x00\x40\x00\x00\x00"),
))
def test_raw_tcp_garbage_does_not_hurt_the_server(served, channel, payload):
    """Bytes that are not HTTP/2 (or stop half-way) on the server's port leave it serving."""
    with socket.create_connection(("127.0.0.1", served.port), timeout=5) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        with contextlib.suppress(OSError):
            while sock.recv(65536):  # read until the server closes the connection or the timeout
                pass
    well_formed_request_succeeds(served, channel)


# -- graphs, attributes, tensors --

@FUZZ
@given(graph=LOOSE_GRAPHS)
def test_generated_graphs_get_a_proper_status(served, channel, graph):
    """Any graph (unknown ops and dtypes, dangling and duplicate names, bad attributes) registers or is refused."""
    register = pb.RegisterGraphRequest(graph=graph)
    code, _ = expect(channel, GRADSERVE + "RegisterGraph", register, BAD_REQUEST | {Code.OK})
    run = pb.RunRequest(graph=pb.GraphRef(graph=graph))
    expect(channel, GRADSERVE + "Run", run, BAD_REQUEST | ({Code.OK} if code is Code.OK else set()))
    well_formed_request_succeeds(served, channel)


@FUZZ
@given(case=wired_graphs(),
       grads=st.dictionaries(st.sampled_from(["n0", "n1", "n2", "nope"]), wire_tensors(), max_size=2),
       no_grad=st.booleans(), training=st.booleans(), seed=st.none() | st.integers(0, 2**64 - 1))
def test_layers_meet_odd_attributes_and_tensors(served, channel, case, grads, no_grad, training, seed):
    """Connected graphs with odd attributes and feeds run or are refused, by Run and by Forward then Backward."""
    graph, feeds = case
    ref = pb.GraphRef(graph=graph)
    run = pb.RunRequest(graph=ref, feeds=feeds, output_grads=grads, no_grad=no_grad, training=training, seed=seed)
    expect(channel, GRADSERVE + "Run", run, BAD_REQUEST | {Code.OK})
    forward = pb.ForwardRequest(graph=ref, feeds=feeds, keep_for_backward=True)
    code, raw = expect(channel, GRADSERVE + "Forward", forward, BAD_REQUEST | {Code.OK})
    if code is Code.OK:
        session_id = pb.ForwardResponse.FromString(raw).session_id
        backward = pb.BackwardRequest(session_id=session_id, output_grads=grads, retain=True)
        expect(channel, GRADSERVE + "Backward", backward, BAD_REQUEST | {Code.OK})
        release = pb.ReleaseSessionRequest(session_id=session_id)
        _, raw = expect(channel, GRADSERVE + "ReleaseSession", release, {Code.OK})
        assert pb.ReleaseSessionResponse.FromString(raw).released
    well_formed_request_succeeds(served, channel)


@FUZZ
@given(x=wire_tensors(), seed=wire_tensors(), eps=st.floats())
def test_bad_tensors_get_a_proper_status(served, channel, x, seed, eps):
    """Wrong sizes, negative and huge dims, unknown dtypes and NaN in feeds and gradient seeds are refused or run."""
    g = pb.Graph(inputs=[pb.ValueInfo(name="x"), pb.ValueInfo(name="w", dtype=pb.FLOAT64, shape=pb.Shape(dims=[-1]))],
                 nodes=[pb.Node(name="h", op="Mul", inputs=["x", "w"]), pb.Node(name="y", op="Tanh", inputs=["h"])],
                 outputs=[pb.Output(name="y", value="y")])
    ref = pb.GraphRef(graph=g)
    feeds = {"x": x, "w": to_tensor(np.array([0.5, -1.0]))}
    ok = BAD_REQUEST | {Code.OK}
    expect(channel, GRADSERVE + "Run", pb.RunRequest(graph=ref, feeds=feeds, output_grads={"y": seed}), ok)
    expect(channel, GRADSERVE + "CheckGradients",
           pb.CheckGradientsRequest(graph=ref, feeds=feeds, output_grads={"y": seed}, eps=eps), ok)
    forward = pb.ForwardRequest(graph=ref, feeds=feeds, keep_for_backward=True)
    code, raw = expect(channel, GRADSERVE + "Forward", forward, ok)
    if code is Code.OK:
        session_id = pb.ForwardResponse.FromString(raw).session_id
        expect(channel, GRADSERVE + "Backward", pb.BackwardRequest(session_id=session_id, output_grads={"y": seed}), ok)
        call(channel, GRADSERVE + "ReleaseSession", pb.ReleaseSessionRequest(session_id=session_id))
    well_formed_request_succeeds(served, channel)


@FUZZ
@given(session_id=st.text(max_size=40) | st.just("0" * 32), graph_id=st.text(max_size=40))
def test_unknown_sessions_and_graph_ids_get_a_proper_status(served, channel, session_id, graph_id):
    """Backward on a session that does not exist, or a Run of an unknown graph id or name, is refused cleanly."""
    expect(channel, GRADSERVE + "Backward", pb.BackwardRequest(session_id=session_id),
           {Code.NOT_FOUND, Code.FAILED_PRECONDITION, Code.INVALID_ARGUMENT})
    expect(channel, GRADSERVE + "Run", pb.RunRequest(graph=pb.GraphRef(graph_id=graph_id)),
           {Code.NOT_FOUND, Code.INVALID_ARGUMENT})
    expect(channel, GRADSERVE + "Run", pb.RunRequest(graph=pb.GraphRef(name=graph_id)),
           {Code.NOT_FOUND, Code.INVALID_ARGUMENT})
    well_formed_request_succeeds(served, channel)


# -- deep and wide graphs --

def chain(n: int, op: str = "Tanh") -> pb.Graph:
    g = pb.Graph(inputs=[pb.ValueInfo(name="x")])
    previous = "x"
    for i in range(n):
        g.nodes.add(name=f"n{i}", op=op, inputs=[previous])
        previous = f"n{i}"
    g.nodes.add(name="loss", op="Sum", inputs=[previous])
    g.outputs.add(name="loss", value="loss")
    return g


def test_deepest_allowed_graph_runs_with_the_right_gradient(served, channel):
    """A chain as long as max-graph-nodes allows runs forward and backward with the chain rule's gradient."""
    n = MAX_GRAPH_NODES - 1  # the Sum makes it MAX_GRAPH_NODES nodes
    x = np.array([0.3, -0.2, 0.1])
    run = pb.RunRequest(graph=pb.GraphRef(graph=chain(n)), feeds={"x": to_tensor(x)})
    _, raw = expect(channel, GRADSERVE + "Run", run, {Code.OK})
    value, grad = x.copy(), np.ones_like(x)
    for _ in range(n):
        value = np.tanh(value)
        grad = grad * (1 - value**2)
    response = pb.RunResponse.FromString(raw)
    np.testing.assert_allclose(from_tensor(response.outputs["loss"]), value.sum(), rtol=1e-12)
    np.testing.assert_allclose(from_tensor(response.grads["x"]), grad, rtol=1e-9)
    well_formed_request_succeeds(served, channel)


def test_graph_over_the_node_limit_is_refused(served, channel):
    """One node more than max-graph-nodes gets RESOURCE_EXHAUSTED naming the limit."""
    code, details, _ = call(channel, GRADSERVE + "RegisterGraph", pb.RegisterGraphRequest(graph=chain(MAX_GRAPH_NODES)))
    assert code is Code.RESOURCE_EXHAUSTED, (code, details)
    assert "max-graph-nodes" in details
    well_formed_request_succeeds(served, channel)


def test_wide_graph_sums_every_fan_out_gradient(served, channel):
    """x feeding 2000 nodes gets the sum of all 2000 gradients (and the server stays up)."""
    width = 2000
    g = pb.Graph(inputs=[pb.ValueInfo(name="x")])
    for i in range(width):
        g.nodes.add(name=f"sq{i}", op="Mul", inputs=["x", "x"])
        g.outputs.add(name=f"sq{i}", value=f"sq{i}")
    x = np.array([1.5, -2.0])
    seeds = {f"sq{i}": to_tensor(np.full(2, float(i))) for i in range(width)}
    _, raw = expect(channel, GRADSERVE + "Run",
                    pb.RunRequest(graph=pb.GraphRef(graph=g), feeds={"x": to_tensor(x)}, output_grads=seeds), {Code.OK})
    response = pb.RunResponse.FromString(raw)
    assert len(response.outputs) == width
    np.testing.assert_allclose(from_tensor(response.grads["x"]), 2 * x * sum(range(width)))
    well_formed_request_succeeds(served, channel)


def test_health_answers_garbage_service_names(served, channel):
    """Health Check for a service that does not exist is NOT_FOUND, and the server is still SERVING after."""
    code, _, _ = call(channel, "/grpc.health.v1.Health/Check", health_pb2.HealthCheckRequest(service="\u2603" * 100))
    assert code is Code.NOT_FOUND
    _, raw = expect(channel, "/grpc.health.v1.Health/Check", health_pb2.HealthCheckRequest(), {Code.OK})
    assert health_pb2.HealthCheckResponse.FromString(raw).status == health_pb2.HealthCheckResponse.SERVING


def test_server_logged_no_unexpected_errors(served, channel):
    """After all the bad input above, the server's log has no traceback and no internal error."""
    well_formed_request_succeeds(served, channel)
    log = served.log()
    assert "Traceback" not in log and "internal error" not in log, log[-5000:]


def test_output_too_big_to_allocate_is_resource_exhausted(served, channel):
    """Zero-byte feeds whose product would need 256 TiB get RESOURCE_EXHAUSTED naming the node, not INTERNAL."""
    g = pb.Graph(inputs=[pb.ValueInfo(name="x"), pb.ValueInfo(name="y")],
                 nodes=[pb.Node(name="outer", op="MatMul", inputs=["x", "y"])],
                 outputs=[pb.Output(name="z", value="outer")])
    # More than the 128 TiB of user address space: no overcommit setting lets this allocation succeed.
    x, y = pb.Tensor(dtype=pb.FLOAT32, shape=[2**23, 0]), pb.Tensor(dtype=pb.FLOAT32, shape=[0, 2**23])
    run = pb.RunRequest(graph=pb.GraphRef(graph=g), feeds={"x": x, "y": y})
    code, details, _ = call(channel, GRADSERVE + "Run", run)
    assert code is Code.RESOURCE_EXHAUSTED, (code, details)
    assert "outer" in details
    well_formed_request_succeeds(served, channel)
