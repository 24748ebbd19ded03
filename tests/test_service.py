"""The gRPC service through the real client: the seed remotely, sessions, errors, concurrency."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

import gradserve.client as gs
from gradserve.proto import gradserve_pb2 as pb
from gradserve.proto import gradserve_pb2_grpc as pb_grpc
from gradserve.server.rpc.server import ServerOptions, start_server
from gradserve.server.service.limits import Limits


def apple_graph(dtype="float64"):
    g = gs.Graph(dtype=dtype)
    apple, apple_num, tax = g.inputs("apple", "apple_num", "tax")
    g.output(apple * apple_num * tax, "price")
    return g


APPLE_FEEDS = {"apple": np.float64(200), "apple_num": np.float64(5), "tax": np.float64(1.1)}


def test_seed_apple_through_graph_builder(client):
    """The seed's apple example through the builder: 1100 with gradients 5.5, 220, 1000, as numpy computes."""
    result = client.run(apple_graph(), APPLE_FEEDS)
    assert result.outputs["price"] == np.float64(200) * np.float64(5) * np.float64(1.1)
    assert (result.grads["apple"], result.grads["apple_num"], result.grads["tax"]) == (
        np.float64(1.1) * 5, np.float64(1.1) * 200, np.float64(200) * 5)


def test_seed_code_runs_unchanged_with_book_layers(client):
    """The seed's MulLayer code, with only the import changed, prints the seed's numbers."""
    from gradserve.client import book

    book.set_client(client)
    try:
        from gradserve.client.book import MulLayer

        apple = 200
        apple_num = 5
        tax = 1.1
        mul_apple_layer = MulLayer()
        mul_tax_layer = MulLayer()
        apple_price = mul_apple_layer.forward(apple, apple_num)
        price = mul_tax_layer.forward(apple_price, tax)
        dprice = 1
        dapple_price, dtax = mul_tax_layer.backward(dprice)
        dapple, dapple_num = mul_apple_layer.backward(dapple_price)
    finally:
        book.set_client(None)
    assert price == 200 * 5 * 1.1
    assert (dapple, dapple_num, dtax) == (1.1 * 5, 1.1 * 200, 1000)


def test_book_apple_orange_with_add_layer(client):
    """The book's apple-orange code with remote MulLayer and AddLayer gives 715 and its five gradients."""
    from gradserve.client import book

    book.set_client(client)
    try:
        from gradserve.client.book import AddLayer, MulLayer

        apple, apple_num, orange, orange_num, tax = 100, 2, 150, 3, 1.1
        mul_apple_layer, mul_orange_layer = MulLayer(), MulLayer()
        add_apple_orange_layer, mul_tax_layer = AddLayer(), MulLayer()
        apple_price = mul_apple_layer.forward(apple, apple_num)
        orange_price = mul_orange_layer.forward(orange, orange_num)
        all_price = add_apple_orange_layer.forward(apple_price, orange_price)
        price = mul_tax_layer.forward(all_price, tax)
        dall_price, dtax = mul_tax_layer.backward(1)
        dapple_price, dorange_price = add_apple_orange_layer.backward(dall_price)
        dorange, dorange_num = mul_orange_layer.backward(dorange_price)
        dapple, dapple_num = mul_apple_layer.backward(dapple_price)
    finally:
        book.set_client(None)
    assert price == pytest.approx(715)
    assert [dapple_num, dapple, dorange, dorange_num, dtax] == pytest.approx([110, 2.2, 3.3, 165, 650])


def test_book_network_layers_match_numpy(client, rng):
    """Remote Affine, Relu, Sigmoid and SoftmaxWithLoss give the book's values and gradients."""
    from gradserve.client import book

    book.set_client(client)
    try:
        W, b = rng.standard_normal((4, 3)), rng.standard_normal(3)
        x, t = rng.standard_normal((5, 4)), np.array([0, 1, 2, 1, 0])
        affine, relu, sigmoid, loss_layer = book.Affine(W, b), book.Relu(), book.Sigmoid(), book.SoftmaxWithLoss()
        a = affine.forward(x)
        h = sigmoid.forward(relu.forward(a))
        loss = loss_layer.forward(h, t)
        dx = affine.backward(relu.backward(sigmoid.backward(loss_layer.backward())))
    finally:
        book.set_client(None)
    a_ref = x @ W + b
    h_ref = 1 / (1 + np.exp(-np.maximum(a_ref, 0)))
    y = np.exp(h_ref) / np.exp(h_ref).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(loss, -np.log(y[np.arange(5), t]).mean())
    dh = (y - np.eye(3)[t]) / 5
    da = dh * h_ref * (1 - h_ref) * (a_ref > 0)
    np.testing.assert_allclose(dx, da @ W.T)
    np.testing.assert_allclose(affine.dW, x.T @ da)
    np.testing.assert_allclose(affine.db, da.sum(axis=0))


def test_forward_then_backward_equals_run(client, rng):
    """The two-step Forward/Backward gives the same outputs and gradients as one Run."""
    g = gs.Graph()
    x, w = g.inputs("x", "w")
    g.output(g.Sum(g.Tanh(x @ w)), "loss")
    feeds = {"x": rng.standard_normal((4, 3)).astype(np.float32), "w": rng.standard_normal((3, 2)).astype(np.float32)}
    ran = client.run(g, feeds)
    session = client.forward(g, feeds)
    grads = session.backward()
    np.testing.assert_array_equal(session.outputs["loss"], ran.outputs["loss"])
    assert grads.keys() == ran.grads.keys()
    for name in grads:
        np.testing.assert_array_equal(grads[name], ran.grads[name])
        assert grads[name].dtype == np.float32


def test_retained_session_answers_twice_then_is_gone(client):
    """Backward with retain keeps the session; without it the session is released."""
    session = client.forward(apple_graph(), APPLE_FEEDS)
    first = session.backward(retain=True)
    second = session.backward({"price": np.float64(2)})
    assert second["tax"] == 2 * first["tax"]
    with pytest.raises(gs.FailedPrecondition, match="is gone: released; run Forward again"):
        session.backward()


def test_check_gradients_agrees(client, rng):
    """CheckGradients: numerical and backprop gradients agree in float64."""
    g = gs.Graph(dtype="float64")
    x, w, b = g.inputs("x", "w", "b")
    g.output(g.SoftmaxWithLoss(g.Affine(x, w, b), g.input("t")), "loss")
    feeds = {"x": rng.standard_normal((3, 4)), "w": rng.standard_normal((4, 5)), "b": rng.standard_normal(5),
             "t": np.array([1, 4, 0])}
    checks = client.check_gradients(g, feeds)
    assert set(checks) == {"x", "w", "b"}
    assert all(c.max_abs_diff < 1e-7 for c in checks.values())


def test_register_gives_content_addressed_id(client, target):
    """The same graph gets the same id from another client and a separate server."""
    graph_id = client.register(apple_graph())
    other = start_server("127.0.0.1:0")
    try:
        with gs.connect(f"127.0.0.1:{other.port}") as c2:
            assert c2.register(apple_graph()) == graph_id
            assert c2.run(graph_id, APPLE_FEEDS).outputs["price"] == pytest.approx(1100)
    finally:
        other.stop(None)


def test_client_resends_graph_unknown_to_a_fresh_server(client):
    """A client whose cached id a new server does not know sends the graph again and goes on."""
    g = apple_graph()
    first = start_server("127.0.0.1:0")
    with gs.connect(f"127.0.0.1:{first.port}") as c:
        c.run(g, APPLE_FEEDS)
        port = first.port
        first.stop(None)
        second = start_server(f"127.0.0.1:{port}")
        try:
            assert c.run(g, APPLE_FEEDS).outputs["price"] == pytest.approx(1100)
        finally:
            second.stop(None)


def test_list_layers_has_schema_and_provenance(client):
    """ListLayers gives each layer's schema with plugin name and version."""
    layers = client.list_layers()
    mul = layers["Mul"]
    assert (mul.inputs, mul.outputs, mul.distribution, mul.plugin) == (["x", "y"], ["out"], "gradserve", "builtin")
    sm = layers["SoftmaxWithLoss"]
    assert sm.differentiable == ["x"]
    assert layers["Sum"].attributes["keepdims"] == {"type": "bool", "required": False, "default": False,
                                                    "doc": "keep reduced axes with length one"}
    assert "Elementwise product" in client.graph().Mul.__doc__  # the client's schemas, not a global


# -- errors: each bad request gets its status and message, and the server goes on --


def bad(client, graph, feeds, code, pattern):
    with pytest.raises(gs.GradserveError, match=pattern) as info:
        client.run(graph, feeds)
    assert info.value.code == code
    assert client.run(apple_graph(), APPLE_FEEDS).outputs["price"] == pytest.approx(1100)  # still serving
    return info.value


def test_unknown_op_is_not_found(client):
    """An unknown op is NOT_FOUND, names the node and lists known layers."""
    g = gs.Graph()
    g.output(g.Mull(g.input("x"), g.input("y"), name="n1"), "out")
    error = bad(client, g, {"x": np.ones(2), "y": np.ones(2)}, grpc.StatusCode.NOT_FOUND, "unknown op 'Mull'.*Mul")
    assert error.node == "n1"


def test_cycle_is_invalid_argument(client):
    """A cycle is INVALID_ARGUMENT naming a node on it."""
    g = gs.Graph()
    x = g.input("x")
    g.node("Mul", x, "n2", name="n1")
    g.output(g.node("Add", "n1", x, name="n2"), "out")
    bad(client, g, {"x": np.ones(2)}, grpc.StatusCode.INVALID_ARGUMENT, "node 'n[12]': the node is on a cycle")


def test_wrong_arity_is_invalid_argument(client):
    """A node with one input for Mul is INVALID_ARGUMENT."""
    g = gs.Graph()
    g.output(g.Mul(g.input("x"), name="n1"), "out")
    bad(client, g, {"x": np.ones(2)}, grpc.StatusCode.INVALID_ARGUMENT, r"node 'n1': Mul takes 2 inputs")


def test_dangling_input_is_invalid_argument(client):
    """A node reading an undefined name is INVALID_ARGUMENT."""
    g = gs.Graph()
    g.output(g.node("Mul", g.input("x"), "ghost", name="n1"), "out")
    bad(client, g, {"x": np.ones(2)}, grpc.StatusCode.INVALID_ARGUMENT, "input 'ghost' is neither")


def test_missing_feed_is_invalid_argument(client):
    """A feed left out is INVALID_ARGUMENT naming it."""
    bad(client, apple_graph(), {"apple": np.float64(1), "tax": np.float64(1)}, grpc.StatusCode.INVALID_ARGUMENT,
        "missing feed for graph input 'apple_num'")


def test_dtype_mismatch_is_invalid_argument(client):
    """A float64 feed for an input declared float32 is INVALID_ARGUMENT."""
    g = gs.Graph()
    g.output(g.Relu(g.input("x", dtype="float32")), "y")
    bad(client, g, {"x": np.ones(2)}, grpc.StatusCode.INVALID_ARGUMENT, "expects dtype float32, got float64")


def test_shape_mismatch_is_invalid_argument(client):
    """(2,3) * (4,) is INVALID_ARGUMENT naming the node and the shapes."""
    g = gs.Graph()
    g.output(g.Mul(g.input("x"), g.input("y"), name="n1"), "out")
    error = bad(client, g, {"x": np.ones((2, 3)), "y": np.ones(4)}, grpc.StatusCode.INVALID_ARGUMENT,
                r"Mul.forward failed on \(float64\[2, 3\], float64\[4\]\)")
    assert error.node == "n1"


def test_tensor_bytes_not_matching_shape(target):
    """A Tensor whose bytes disagree with shape and dtype is INVALID_ARGUMENT saying both."""
    stub = pb_grpc.GradServeStub(grpc.insecure_channel(target))
    g = apple_graph().to_proto()
    request = pb.RunRequest(graph=pb.GraphRef(graph=g))
    for name in ("apple", "apple_num", "tax"):
        request.feeds[name].CopyFrom(pb.Tensor(dtype=pb.FLOAT64, shape=[], data=b"\0" * 8))
    request.feeds["tax"].shape[:] = [2]
    with pytest.raises(grpc.RpcError) as info:
        stub.Run(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "feed 'tax': 8 bytes do not match shape [2] of float64" in info.value.details()


def test_unknown_graph_id_is_not_found(client):
    """Running an id the server never saw is NOT_FOUND and says to send the graph."""
    with pytest.raises(gs.NotFound, match="unknown graph id or name 'deadbeef'"):
        client.run("deadbeef", APPLE_FEEDS)


def test_unknown_session_is_not_found(client):
    """Backward on a session id that never existed is NOT_FOUND."""
    session = gs.Session(client, {}, "nope", "")
    with pytest.raises(gs.NotFound, match="no session 'nope'"):
        session.backward()


def test_expired_session_is_failed_precondition():
    """A session past its TTL is FAILED_PRECONDITION, saying it expired."""
    running = start_server("127.0.0.1:0", options=ServerOptions(limits=Limits(session_ttl=0.0)))
    try:
        with gs.connect(f"127.0.0.1:{running.port}") as c:
            session = c.forward(apple_graph(), APPLE_FEEDS)
            c.forward(apple_graph(), APPLE_FEEDS)  # any later call sweeps expired sessions
            with pytest.raises(gs.FailedPrecondition, match="expired after 0s unused"):
                session.backward()
    finally:
        running.stop(None)


def test_message_over_size_limit_is_resource_exhausted():
    """A request larger than the server's max message size is RESOURCE_EXHAUSTED; the server goes on."""
    running = start_server("127.0.0.1:0", options=ServerOptions(limits=Limits(max_message_bytes=1 << 16)))
    try:
        with gs.connect(f"127.0.0.1:{running.port}") as c:
            g = gs.Graph()
            g.output(g.Sum(g.input("x")), "s")
            with pytest.raises(gs.ResourceExhausted):
                c.run(g, {"x": np.ones(1 << 15)})
            assert c.run(g, {"x": np.ones(10)}).outputs["s"] == 10
    finally:
        running.stop(None)


def test_default_message_size_takes_a_64_mib_tensor(client):
    """The default limits carry a 64 MiB float32 tensor in and its gradient out."""
    g = gs.Graph()
    g.output(g.Sum(g.input("x")), "s")
    x = np.ones(16 << 20, dtype=np.float32)
    result = client.run(g, {"x": x})
    assert result.outputs["s"] == x.size and result.grads["x"].nbytes == 64 << 20


def test_concurrent_runs_are_correct(target):
    """8 client threads x 100 Runs on different inputs all get their own correct results."""
    g = gs.Graph(dtype="float64")
    x, w = g.inputs("x", "w")
    g.output(g.Sum(x * w), "s")

    def worker(k):
        with gs.connect(target) as c:
            for i in range(100):
                x_val, w_val = np.full(3, float(k)), np.full(3, float(i))
                r = c.run(g, {"x": x_val, "w": w_val})
                assert r.outputs["s"] == 3 * k * i
                np.testing.assert_array_equal(r.grads["x"], w_val)
                np.testing.assert_array_equal(r.grads["w"], x_val)
        return k

    with ThreadPoolExecutor(8) as pool:
        assert sorted(pool.map(worker, range(8))) == list(range(8))


def test_embedded_connect_leaves_nothing_behind():
    """connect() with no target runs the apple example on an embedded server and cleans up on close."""
    before = set(threading.enumerate())
    with gs.connect() as c:
        assert c.run(apple_graph(), APPLE_FEEDS).grads["tax"] == pytest.approx(1000)
    leftover = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert leftover == []


def test_health_and_reflection(target):
    """The standard health service answers SERVING and reflection lists our service."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    channel = grpc.insecure_channel(target)
    health = health_pb2_grpc.HealthStub(channel)
    assert health.Check(health_pb2.HealthCheckRequest(service="gradserve.v1.GradServe")).status == \
        health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"gradserve.v1.GradServe", "grpc.health.v1.Health"} <= names
