"""Large tensors: Run's encoding without protobuf copies (proto/wire.py) and RunStream's chunks."""

import grpc
import numpy as np
import pytest

import gradserve.client as gs
from gradserve.client import connection
from gradserve.proto import gradserve_pb2 as pb
from gradserve.proto import streaming, wire
from gradserve.proto.tensors import from_tensor_map, to_tensor_map

FEEDS = {"x": np.arange(-6, 6, dtype=np.float32).reshape(3, 4), "w": np.float32(2.0)}


def relu_times_w() -> gs.Graph:
    g = gs.Graph("float32")
    g.output(g.Relu(g.input("x")) * g.input("w"), "y")
    return g


def test_wire_encoding_is_the_protobuf_message(monkeypatch):
    """wire.encode's bytes parse as the same message protobuf builds, and wire's decoder reads protobuf's bytes."""
    monkeypatch.setattr(wire, "SMALL_BYTES", 0)  # what larger messages take: the reader and writer of wire.py
    arrays = {"x": np.arange(6.0).reshape(2, 3)[:, ::2], "b": np.array([True, False]), "s": np.asarray(3),
              "big": np.arange(3, dtype=">f4"), "empty": np.zeros((0, 2), np.int32)}
    expected = pb.RunRequest(graph=pb.GraphRef(graph_id="g"), wrt=["x"])
    to_tensor_map(arrays, expected.feeds)
    encoded = wire.encode(pb.RunRequest(graph=pb.GraphRef(graph_id="g"), wrt=["x"]), {"feeds": arrays})
    parsed = pb.RunRequest.FromString(encoded.data)
    assert parsed == expected and parsed.SerializeToString() == expected.SerializeToString()
    decoded = wire.Decoder(pb.RunRequest).decode(expected.SerializeToString())
    assert decoded.graph.graph_id == "g" and list(decoded.wrt) == ["x"]
    for name, array in from_tensor_map(decoded.tensors["feeds"]).items():
        assert array.dtype == np.asarray(arrays[name]).dtype.newbyteorder("=") and \
            np.array_equal(array, arrays[name]), name


def test_small_wire_encoding_is_the_protobuf_message():
    """Below SMALL_BYTES the maps go through protobuf: the same message, whatever dtype, byte order or shape."""
    rounds = [
        {"x": np.arange(6.0).reshape(2, 3)[:, ::2], "b": np.array([True, False]), "s": np.asarray(3)},
        {"x": np.arange(3, dtype=">f4"), "b": np.zeros((0, 2), np.int32), "s": np.asarray(3)},
        {"x": np.arange(6.0).reshape(2, 3)[:, ::2], "s": np.float64(2.5)},
    ]
    for arrays in rounds:
        expected = pb.RunResponse(graph_id="g")
        to_tensor_map(arrays, expected.grads)
        encoded = wire.encode(pb.RunResponse(graph_id="g"), {"outputs": {}, "grads": arrays})
        assert pb.RunResponse.FromString(encoded.data) == expected


def test_wire_decoder_reads_tensor_data_at_any_offset():
    """Whatever the lengths of the names and ids before them, decoded arrays have the sent values and are aligned
    (views of the message where its bytes are, copies where they are not)."""
    rng = np.random.default_rng(0)
    for graph_id_length in range(0, 24):
        arrays = {"x" * int(rng.integers(1, 30)): np.arange(int(rng.integers(1, 5000)), dtype=dtype)
                  for dtype in ("f8", "f4", "i2", "u1")}
        arrays["big"] = np.ones((300, 30), np.float64)  # past SMALL_BYTES together: the wire.py writer
        request = pb.RunRequest(graph=pb.GraphRef(graph_id="g" * graph_id_length))
        data = wire.encode(request, {"feeds": arrays}).data
        decoded = from_tensor_map(wire.Decoder(pb.RunRequest).decode(data).tensors["feeds"])
        for name, array in arrays.items():
            assert np.array_equal(decoded[name], array) and decoded[name].flags.aligned, name
            assert decoded[name].dtype == array.dtype and not decoded[name].flags.writeable, name


def test_wire_decoder_leaves_unexpected_bytes_to_protobuf(monkeypatch):
    """An entry whose value field repeats is merged as protobuf merges it; bytes that are no message raise."""
    monkeypatch.setattr(wire, "SMALL_BYTES", 0)
    first, second = pb.Tensor(dtype=pb.FLOAT64), pb.Tensor(shape=[2], data=np.ones(2).tobytes())
    entry = b"\x0a\x01x" + b"\x12" + bytes([len(first.SerializeToString())]) + first.SerializeToString() + \
        b"\x12" + bytes([len(second.SerializeToString())]) + second.SerializeToString()
    decoded = wire.Decoder(pb.RunRequest).decode(b"\x12" + bytes([len(entry)]) + entry)
    assert np.array_equal(from_tensor_map(decoded.tensors["feeds"])["x"], np.ones(2))
    with pytest.raises(Exception):
        wire.Decoder(pb.RunRequest).decode(b"\x12\x09garbage")


def test_streamed_run_gives_what_unary_run_gives(client, monkeypatch):
    """Above the client's STREAM_BYTES, Run goes through RunStream and returns the same Result."""
    g = relu_times_w()
    seed = {"y": np.full((3, 4), 0.5, np.float32)}
    unary = client.run(g, FEEDS, seed_grads=seed, trace=True)
    monkeypatch.setattr(connection, "STREAM_BYTES", 0)
    streamed = client.run(g, FEEDS, seed_grads=seed, trace=True)
    assert streamed.graph_id == unary.graph_id and streamed.replica == unary.replica
    for part in ("outputs", "grads", "values", "value_grads"):
        mine, theirs = getattr(streamed, part), getattr(unary, part)
        assert mine.keys() == theirs.keys(), part
        for name in mine:
            assert np.array_equal(mine[name], theirs[name]), (part, name)


def test_streamed_run_reports_errors_as_run_does(client, monkeypatch):
    """A missing feed through RunStream is INVALID_ARGUMENT, an unknown graph id NOT_FOUND."""
    monkeypatch.setattr(connection, "STREAM_BYTES", 0)
    with pytest.raises(gs.InvalidArgument, match="missing feed"):
        client.run(relu_times_w(), {"x": FEEDS["x"]})
    with pytest.raises(gs.NotFound):
        client.run("no-such-graph", FEEDS)


def stream(target, chunks):
    with grpc.insecure_channel(target) as channel:
        call = channel.stream_stream("/gradserve.v1.GradServe/RunStream", request_serializer=streaming.serialize,
                                     response_deserializer=streaming.deserialize)
        return list(call(iter(chunks)))


def test_chunks_that_do_not_fit_their_tensor_are_invalid_argument(client, target):
    """Missing bytes, extra bytes, an unannounced tensor or garbage bytes end RunStream with INVALID_ARGUMENT."""
    graph_id = client.register(relu_times_w())
    request = pb.RunRequest(graph=pb.GraphRef(graph_id=graph_id))
    first = next(streaming.send("request", request, {"feeds": {"x": np.zeros(4, np.float32), "w": np.float32(1)}}))
    cases = [
        [first, streaming.DataChunk("feeds", "x", b"\0" * 8)],
        [first, streaming.DataChunk("feeds", "x", b"\0" * 20)],
        [first, streaming.DataChunk("feeds", "z", b"\0" * 16)],
        [streaming.DataChunk("feeds", "x", b"\0" * 16)],
    ]
    for chunks in cases:
        with pytest.raises(grpc.RpcError) as caught:
            stream(target, chunks)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, chunks
    with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError) as caught:
        list(channel.stream_stream("/gradserve.v1.GradServe/RunStream")(iter([b"\x0a\x09garbage"])))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
