"""The Train stream: parameters and optimizer state on the server, the same numbers as the client's optimizers."""

from __future__ import annotations

import time

import grpc
import numpy as np
import pytest

import gradserve.client as gs
from gradserve.client import optimizers as client_optimizers
from gradserve.client.errors import ServerShuttingDown
from gradserve.client.network import TwoLayerNet
from gradserve.client.trainer import load
from gradserve.proto import gradserve_pb2 as pb
from gradserve.proto.tensors import from_tensor_map, to_tensor_map
from gradserve.server.rpc.server import ServerOptions, start_server
from gradserve.server.service.limits import Limits

OPTIMIZERS = {"sgd": {"lr": 0.1}, "momentum": {"lr": 0.05, "momentum": 0.8}, "nesterov": {"lr": 0.05},
              "adagrad": {"lr": 0.1}, "rmsprop": {"lr": 0.01, "decay_rate": 0.9}, "adam": {"lr": 0.01}}
STEPS = 6


def batches(rng, n=STEPS, rows=5, inputs=6, classes=3):
    return [(rng.standard_normal((rows, inputs)), rng.integers(0, classes, rows)) for _ in range(n)]


def wait_for(predicate, what: str, seconds: float = 10.0):
    give_up = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > give_up:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture()
def own_server(registry):
    """A server of this test's own (its session counts are this test's alone)."""
    running = start_server("127.0.0.1:0", registry)
    yield running
    running.stop(None)


def limited_server(registry, **limits):
    return start_server("127.0.0.1:0", registry, ServerOptions(limits=Limits(**limits)))


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_train_stream_matches_the_client_side_optimizer(client, rng, name):
    """Over several steps, each loss and the final parameters of a Train stream equal Run + the client's
    optimizer of the same name and settings (1e-6)."""
    net = TwoLayerNet(6, 4, 3, dtype="float64", seed=1, client=client)
    reference = {k: v.copy() for k, v in net.params.items()}
    local = client_optimizers.make_optimizer(name, **OPTIMIZERS[name])
    with client.trainer(net.graph, net.params, name, feeds=["x", "t"], **OPTIMIZERS[name]) as trainer:
        for x, t in batches(rng):
            loss = trainer.step({"x": x, "t": t})
            run = client.run(net.graph, {**reference, **net.batch_feeds(x, t)}, grad=net.param_names,
                             seed_grads=net.seed_grads)
            assert loss == pytest.approx(float(run.outputs["loss"]), abs=1e-6)
            local.update(reference, run.grads)
        assert trainer.steps == STEPS
        final = trainer.close()
    for key in reference:
        np.testing.assert_allclose(final[key], reference[key], rtol=1e-6, atol=1e-6)
        assert not np.array_equal(final[key], net.params[key])  # it trained (net.params are the initial ones)


def test_params_can_be_read_at_any_time_and_close_returns_them(client, rng):
    """params() mid-stream gives the parameters after the last step; close() gives the final ones, twice."""
    net = TwoLayerNet(6, 4, 3, dtype="float64", seed=0, client=client)
    initial = {k: v.copy() for k, v in net.params.items()}
    trainer = net.trainer("sgd", lr=0.5)
    before = trainer.params()
    for key in initial:
        np.testing.assert_array_equal(before[key], initial[key])
    (x, t), = batches(rng, 1)
    trainer.step(net.batch_feeds(x, t))
    after = trainer.params()
    assert any(not np.array_equal(after[k], initial[k]) for k in initial)
    final = trainer.close()
    for key in final:
        np.testing.assert_array_equal(final[key], after[key])
    assert trainer.close().keys() == final.keys() and trainer.closed
    with pytest.raises(gs.GradserveError, match="closed"):
        trainer.step(net.batch_feeds(x, t))


def test_outputs_asked_for_come_back_with_every_step(client, rng):
    """outputs=["scores"] at open (or per step) returns the scores of the batch before the update."""
    net = TwoLayerNet(6, 4, 3, dtype="float64", seed=0, client=client)
    (x, t), = batches(rng, 1)
    expected = net.predict(x)
    with net.trainer("sgd", outputs=["scores"]) as trainer:
        trainer.step(net.batch_feeds(x, t))
        np.testing.assert_allclose(trainer.outputs["scores"], expected, rtol=1e-12)
    with net.trainer("sgd") as trainer:
        trainer.step(net.batch_feeds(x, t))
        assert trainer.outputs == {}
        trainer.step(net.batch_feeds(x, t), outputs=["scores"])
        assert trainer.outputs["scores"].shape == (5, 3)


def test_an_error_mid_stream_is_answered_and_the_stream_goes_on(client, rng):
    """A bad batch (a missing feed, a wrong shape, an unknown output) is answered with its status alone: the
    parameters and the step count stay as they were and the next batch trains as if it had not been sent."""
    net = TwoLayerNet(6, 4, 3, dtype="float64", seed=0, client=client)
    data = batches(rng, 2)
    with net.trainer("adam", lr=0.01) as clean:
        for x, t in data:
            clean.step(net.batch_feeds(x, t))
        expected = clean.params()
    with net.trainer("adam", lr=0.01) as trainer:
        trainer.step(net.batch_feeds(*data[0]))
        with pytest.raises(gs.InvalidArgument, match="no feed 't'"):
            trainer.step({"x": data[1][0]})
        with pytest.raises(gs.InvalidArgument) as wrong_shape:
            trainer.step(net.batch_feeds(rng.standard_normal((5, 7)), data[1][1]))
        assert wrong_shape.value.node == "Affine1" or "x" in wrong_shape.value.message
        with pytest.raises(gs.InvalidArgument, match="no graph output 'nope'"):
            trainer.step(net.batch_feeds(*data[1]), outputs=["nope"])
        with pytest.raises(gs.InvalidArgument, match="'W1', which is a parameter"):
            trainer.step({**net.batch_feeds(*data[1]), "W1": net.params["W1"]})
        assert trainer.steps == 1
        trainer.step(net.batch_feeds(*data[1]))
        assert trainer.steps == 2
        got = trainer.params()
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key])


@pytest.mark.parametrize("kwargs,error,says", [
    ({"optimizer": "lion"}, gs.InvalidArgument, "no optimizer 'lion' on this server (optimizers: AdaGrad, Adam"),
    ({"optimizer": "adam", "momentum": 0.9}, gs.InvalidArgument, "no setting 'momentum' (its settings: lr, beta1"),
    ({"loss": "scores2"}, gs.InvalidArgument, "the loss 'scores2' is not a graph output"),
    ({"feeds": ["x"]}, gs.InvalidArgument, "graph input 't' is neither a parameter nor a feed"),
    ({"outputs": ["nope"]}, gs.InvalidArgument, "no graph output 'nope'"),
])
def test_a_bad_open_is_refused_with_what_to_fix(client, kwargs, error, says):
    """An open that does not fit the graph or the optimizer raises a typed error saying what to fix."""
    net = TwoLayerNet(6, 4, 3, dtype="float64", seed=0, client=client)
    optimizer = kwargs.pop("optimizer", "sgd")
    with pytest.raises(error) as raised:
        client.trainer(net.graph, net.params, optimizer, **kwargs)
    assert says in raised.value.message


def test_a_parameter_must_be_a_differentiable_float_input(client):
    """Parameters that are not graph inputs, integer parameters, or ones mixing dtypes are refused by name."""
    net = TwoLayerNet(6, 4, 3, dtype="float64", seed=0, client=client)
    with pytest.raises(gs.InvalidArgument, match="parameter 'W9' is not a graph input"):
        client.trainer(net.graph, {**net.params, "W9": np.zeros(2)})
    with pytest.raises(gs.InvalidArgument, match="parameter 'W1' is int64"):
        client.trainer(net.graph, {**net.params, "W1": np.zeros((6, 4), np.int64)})
    with pytest.raises(gs.InvalidArgument, match="mix dtypes"):
        client.trainer(net.graph, {**net.params, "b1": np.zeros(4, np.float32)})


def raw_train(target: str, requests):
    """The Train method over a plain channel with protobuf's own (de)serializers: any gRPC client's view."""
    with grpc.insecure_channel(target) as channel:
        call = channel.stream_stream("/gradserve.v1.GradServe/Train",
                                     request_serializer=pb.TrainRequest.SerializeToString,
                                     response_deserializer=pb.TrainResponse.FromString)
        return list(call(iter(requests), timeout=30))


def test_a_plain_protobuf_client_is_answered_in_order_with_per_message_statuses(client, target, rng):
    """Messages before open, an empty one, a second open: each answered with its own status; the stream goes on
    and close ends it with the parameters."""
    net = TwoLayerNet(6, 4, 3, dtype="float64", seed=0, client=client)
    graph_id = client.register(net.graph)
    open_ = pb.TrainRequest(open=pb.TrainOpen(graph=pb.GraphRef(graph_id=graph_id),
                                              optimizer=pb.OptimizerSpec(name="SGD", settings={"lr": 0.1})))
    to_tensor_map(net.params, open_.params)
    batch = pb.TrainRequest(batch=pb.TrainBatch())
    x, t = batches(rng, 1)[0]
    to_tensor_map(net.batch_feeds(x, t), batch.feeds)
    get_params, close = pb.TrainRequest(get_params=pb.TrainGetParams()), pb.TrainRequest(close=pb.TrainClose())
    answers = raw_train(target, [batch, pb.TrainRequest(), open_, open_, batch, get_params, close])
    codes = [a.status.code for a in answers]
    assert codes == [grpc.StatusCode.INVALID_ARGUMENT.value[0]] * 2 + [0, 3, 0, 0, 0]
    assert "before open" in answers[0].status.message and "open is" not in answers[1].status.message
    assert "open already" in answers[3].status.message
    assert answers[2].graph_id == graph_id
    assert answers[4].loss == pytest.approx(net.loss(x, t)) and answers[4].step == 1
    final = from_tensor_map(answers[6].params)
    np.testing.assert_array_equal(final["W1"], from_tensor_map(answers[5].params)["W1"])
    assert answers[6].step == 1


def test_large_parameters_travel_in_chunks_both_ways(client, rng):
    """Parameters of more than 8 MiB are sent after the open message in chunks and come back in chunks, intact."""
    net = TwoLayerNet(1100, 2000, 3, dtype="float32", seed=0, client=client)  # W1: 8.8 MB
    assert sum(a.nbytes for a in net.params.values()) >= 8 << 20
    with net.trainer("sgd", lr=0.1) as trainer:
        got = trainer.params()
        for key in net.params:
            np.testing.assert_array_equal(got[key], net.params[key])
        x, t = rng.random((2, 1100), dtype=np.float32), np.array([0, 2])
        grads = net.forward_backward(x, t).grads
        trainer.step(net.batch_feeds(x, t))
        final = trainer.close()
    np.testing.assert_allclose(final["W1"], net.params["W1"] - np.float32(0.1) * grads["W1"], rtol=1e-6, atol=1e-7)


def test_save_and_load_round_trip_through_safetensors(client, rng, tmp_path):
    """trainer.save writes a safetensors file that safetensors itself reads back bit for bit, with metadata;
    a trainer opened from the file's path starts from those parameters."""
    from safetensors import safe_open

    net = TwoLayerNet(6, 4, 3, dtype="float32", seed=0, client=client)
    with net.trainer("momentum", lr=0.1) as trainer:
        for x, t in batches(rng, 3):
            trainer.step(net.batch_feeds(x, t))
        path = trainer.save(tmp_path / "net.safetensors")
        now = trainer.params()
    loaded = load(path)
    assert loaded.keys() == now.keys()
    for key in now:
        assert loaded[key].dtype == np.float32
        np.testing.assert_array_equal(loaded[key], now[key])
    with safe_open(str(path), framework="numpy") as handle:
        assert handle.metadata()["gradserve.steps"] == "3"
        assert handle.metadata()["gradserve.optimizer"] == "momentum"
    with client.trainer(net.graph, path, "sgd") as again:
        np.testing.assert_array_equal(again.params()["W1"], now["W1"])


def test_a_vanished_client_frees_its_parameters_and_state(own_server):
    """A client whose channel goes away mid-stream leaves nothing behind: the held session and its bytes go."""
    sessions = own_server.service.sessions
    client = gs.connect(f"127.0.0.1:{own_server.port}")
    net = TwoLayerNet(6, 4, 3, dtype="float64", seed=0, client=client)
    trainer = net.trainer("adam")
    trainer.step(net.batch_feeds(np.ones((2, 6)), [0, 1]))
    param_bytes = sum(a.nbytes for a in net.params.values())
    assert sessions.count == 1 and sessions.nbytes == 3 * param_bytes  # parameters + Adam's m and v
    client.close()  # no close message: the connection just goes
    wait_for(lambda: sessions.count == 0, "the server to free the vanished stream")
    assert sessions.nbytes == 0


def test_session_limits_count_train_streams_and_refuse_by_name(registry):
    """A Train stream counts as a session of its parameter and state bytes: max-session-bytes refuses a run
    too large for it, max-sessions refuses a Forward while the stream lives; closing it makes room."""
    net = TwoLayerNet(60, 40, 3, dtype="float64", seed=0)  # parameters larger than a pass of 2 rows
    param_bytes = sum(a.nbytes for a in net.params.values())
    running = limited_server(registry, max_session_bytes=3 * param_bytes - 8, max_sessions=1)
    try:
        with gs.connect(f"127.0.0.1:{running.port}") as client:
            net.register(client)
            with pytest.raises(gs.ResourceExhausted, match="max-session-bytes limit of") as refused:
                net.trainer("adam")  # parameters + m + v: three times the parameters
            assert "Adam state" in refused.value.message
            with net.trainer("momentum"):  # parameters + v: fits
                with pytest.raises(gs.ResourceExhausted, match="max-sessions limit of 1"):
                    client.forward(net.graph, net.feeds(np.ones((2, 60)), [0, 1]))
                with pytest.raises(gs.ResourceExhausted, match="max-sessions limit of 1"):
                    net.trainer("sgd")
            client.forward(net.graph, net.feeds(np.ones((2, 60)), [0, 1])).release()
            assert running.service.sessions.count == 0
    finally:
        running.stop(None)


def test_fit_trains_on_the_server_and_leaves_the_trained_parameters_in_the_net(client):
    """net.fit trains through one Train stream: loss falls, net.params hold the result, test accuracy is high."""
    from gradserve.client.demo import load_digits_split

    data = load_digits_split(seed=0)
    net = TwoLayerNet(64, 50, 10, weight_init_std="he", seed=0, client=client)
    initial = net.params["W1"].copy()
    history = net.fit(data.x_train, data.t_train, epochs=3, batch_size=32, optimizer="adam", lr=0.01,
                      x_test=data.x_test, t_test=data.t_test)
    assert history.steps == 3 * -(-len(data.x_train) // 32)
    assert history.loss[-1] < history.loss[0]
    assert history.test_acc[-1] >= 0.90
    assert not np.array_equal(net.params["W1"], initial)
    assert net.accuracy(data.x_test, data.t_test) == history.test_acc[-1]


def test_sigterm_refuses_batches_as_going_away_and_still_hands_the_parameters_back():
    """After SIGTERM a `gradserve serve` answers a batch UNAVAILABLE saying it is going away (ServerShuttingDown,
    a gs.Unavailable); within --grace the same stream still gives the parameters back, then the server exits 0."""
    import signal

    from serve_process import ServeProcess

    with ServeProcess("--grace", "5") as server:
        with gs.connect(server.target, timeout=30) as client:
            net = TwoLayerNet(6, 4, 3, dtype="float64", seed=0, client=client)
            trainer = net.trainer("adam")
            feeds = net.batch_feeds(np.ones((2, 6)), [0, 1])
            trainer.step(feeds)
            server.proc.send_signal(signal.SIGTERM)
            give_up = time.monotonic() + 10
            with pytest.raises(gs.Unavailable) as refused:
                while time.monotonic() < give_up:  # steps succeed until the server has handled the signal
                    trainer.step(feeds)
                    time.sleep(0.01)
            assert isinstance(refused.value, ServerShuttingDown)  # a gs.Unavailable, as for a Session stream
            assert "going away" in refused.value.message and "close()" in refused.value.message
            now = trainer.params()
            final = trainer.close()
        for key in final:
            np.testing.assert_array_equal(final[key], now[key])
        assert server.proc.wait(timeout=30) == 0


def test_the_stream_guard_bounds_train_streams_by_name(registry):
    """The server's stream limits apply to Train: a stream past max-streams is refused naming it; a stream left
    silent past stream-idle-seconds is ended naming it, and its parameters are freed."""
    running = limited_server(registry, max_streams=2, stream_idle_seconds=0.5)
    sessions = running.service.sessions
    try:
        with gs.connect(f"127.0.0.1:{running.port}", timeout=30) as client:
            net = TwoLayerNet(6, 4, 3, dtype="float64", seed=0, client=client)
            feeds = net.batch_feeds(np.ones((2, 6)), [0, 1])
            trainer = net.trainer("sgd")  # one stream per peer address: half the max-streams limit of 2
            with pytest.raises(gs.ResourceExhausted, match="max-streams"):
                net.trainer("sgd")
            trainer.step(feeds)
            time.sleep(1.5)
            with pytest.raises(gs.DeadlineExceeded, match="stream-idle-seconds"):
                trainer.step(feeds)
            wait_for(lambda: sessions.count == 0, "the server to free the ended stream")
            with net.trainer("sgd") as again:  # the slot is free again
                again.step(feeds)
    finally:
        running.stop(None)


def test_a_trainer_dropped_without_close_ends_its_stream(own_server):
    """A Trainer garbage-collected without close() cancels its stream: the server frees what it held."""
    import gc

    sessions = own_server.service.sessions
    with gs.connect(f"127.0.0.1:{own_server.port}") as client:
        net = TwoLayerNet(6, 4, 3, dtype="float64", seed=0, client=client)
        trainer = net.trainer("momentum")
        assert sessions.count == 1
        del trainer
        gc.collect()
        wait_for(lambda: sessions.count == 0, "the server to free a dropped trainer's stream")


@pytest.mark.parametrize("case,says", [("stray chunk", "a chunk that no message announced"),
                                       ("missing chunks", "a message came before the chunks"),
                                       ("too many bytes", "the chunks carry more than its 32 bytes")])
def test_chunks_that_do_not_fit_end_the_stream_with_invalid_argument(client, target, case, says):
    """Chunks are the one thing a stream cannot answer message by message: a chunk nothing announced, a message
    before the announced chunks, or chunks past the announced size end the call with INVALID_ARGUMENT."""
    net = TwoLayerNet(2, 2, 2, dtype="float64", seed=0, client=client)
    open_ = pb.TrainRequest(open=pb.TrainOpen(graph=pb.GraphRef(graph_id=client.register(net.graph))))
    to_tensor_map({k: v for k, v in net.params.items() if k != "W1"}, open_.params)
    open_.params["W1"].dtype = pb.FLOAT64
    open_.params["W1"].shape[:] = [2, 2]  # 32 bytes announced, to follow in chunks
    chunk = pb.TrainRequest(chunk=pb.TensorChunk(field="params", name="W1", data=bytes(24)))
    requests = {"stray chunk": [chunk],
                "missing chunks": [open_, pb.TrainRequest(get_params=pb.TrainGetParams())],
                "too many bytes": [open_, chunk, chunk]}[case]
    with pytest.raises(grpc.RpcError) as ended:
        raw_train(target, requests)
    assert ended.value.code() == grpc.StatusCode.INVALID_ARGUMENT and says in ended.value.details()
