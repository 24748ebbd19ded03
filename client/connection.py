"""The Client: connect to a server (or start an embedded one), register graphs, run them, get gradients."""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import grpc
import numpy as np

from gradserve.proto import REPLICA_KEY, message_size_options
from gradserve.proto import gradserve_pb2 as pb
from gradserve.proto import gradserve_pb2_grpc as pb_grpc
from gradserve.proto import streaming, wire
from gradserve.proto.attrs import attr_from_proto
from gradserve.proto.tensors import TensorError, from_tensor, from_tensor_map, to_tensor_map
from gradserve.client import session_stream
from gradserve.client.channel import Pem, open_channel, token_metadata
from gradserve.client.errors import GradserveError, NotFound, check_mapping, from_rpc_error
from gradserve.client.graph import Graph

DEFAULT_MESSAGE_BYTES = 256 << 20
#: Run streams its tensors in chunks (RunStream) from this many request bytes on. Measured with Relu (Run /
#: streamed Run / bare unary echo, ms): 4 MiB 8.5 / 9.9 / 7.3, 8 MiB 15.0 / 14.2 / 13.0, 16 MiB 49 / 22 / 20:
#: whole-message buffers that big are mapped fresh and faulted in on every call, while the chunks reuse the
#: same warm memory and both sides work at once (docs/benchmarks.md).
STREAM_BYTES = 8 << 20
RUN_RESULT_TENSORS = tuple(wire.tensor_map_fields(pb.RunResponse).values())


@dataclass
class Result:
    """What Run returns: outputs and gradients as numpy arrays keyed by name."""

    outputs: dict[str, np.ndarray]
    grads: dict[str, np.ndarray]
    graph_id: str
    values: dict[str, np.ndarray] = field(default_factory=dict)  # with trace=True: every value
    value_grads: dict[str, np.ndarray] = field(default_factory=dict)  # with trace=True: their gradients
    graph: Graph | None = None
    replica: str = ""  # the server process that answered ("host:pid"), to see load balancing at work

    def to_dot(self, title: str | None = None) -> str:
        """Graphviz DOT of the graph as the chapter draws it: values on the edges, gradients beneath them."""
        from gradserve.client.drawing import to_dot

        return to_dot(self, title)


@dataclass
class GradientCheck:
    name: str
    max_abs_diff: float
    mean_abs_diff: float
    numerical: np.ndarray
    backprop: np.ndarray


@dataclass
class LayerInfo:
    name: str
    doc: str
    inputs: list[str]
    outputs: list[str]
    differentiable: list[str]
    attributes: dict[str, dict]
    plugin: str
    distribution: str
    version: str

    def as_dict(self) -> dict:
        return dict(vars(self))


@dataclass
class LayerList:
    layers: list[LayerInfo]
    plugins: list[dict] = field(default_factory=list)

    def __getitem__(self, name: str) -> LayerInfo:
        return next(layer for layer in self.layers if layer.name == name)


class Session:
    """A Forward kept on the server: ``outputs`` now, ``backward(dout)`` later (the chapter's two steps)."""

    def __init__(self, client: "Client", outputs: dict[str, np.ndarray], session_id: str, graph_id: str):
        self.client = client
        self.outputs = outputs
        self.session_id = session_id
        self.graph_id = graph_id

    def backward(self, dout: Mapping[str, np.ndarray] | None = None, wrt: Iterable[str] | None = None,
                 retain: bool = False) -> dict[str, np.ndarray]:
        """Gradients for ``wrt`` (default: every float input); ``dout`` seeds outputs (default: ones for scalars)."""
        request = pb.BackwardRequest(session_id=self.session_id, wrt=list(wrt or ()), retain=retain)
        to_tensor_map(check_mapping("dout", dout), request.output_grads)
        response = self.client._call(self.client._stub.Backward, request)
        return from_tensor_map(response.grads)

    def release(self) -> None:
        self.client._call(self.client._stub.ReleaseSession, pb.ReleaseSessionRequest(session_id=self.session_id))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


class Client:
    """A connection to a gradserve server. Use ``connect()`` to make one."""

    def __init__(self, target: str, *, channel: grpc.Channel | None = None, timeout: float | None = None,
                 max_message_bytes: int = DEFAULT_MESSAGE_BYTES, round_robin: bool = False, on_close=None,
                 tls: bool = False, root_certificates: Pem | None = None, certificate_chain: Pem | None = None,
                 private_key: Pem | None = None, server_name: str | None = None, token: str | None = None):
        """TLS: ``root_certificates`` (PEM bytes or a path) verify the server, or ``tls=True`` uses the system's
        roots; ``certificate_chain`` and ``private_key`` are a client certificate for mutual TLS. ``token`` is
        sent as ``authorization: Bearer`` metadata on every call."""
        self.target = target
        self.timeout = timeout
        self._channel = channel or open_channel(target, tls=tls, root_certificates=root_certificates,
                                                certificate_chain=certificate_chain, private_key=private_key,
                                                server_name=server_name, round_robin=round_robin,
                                                options=message_size_options(max_message_bytes))
        # A channel the caller made is theirs to judge; ours is secure when it speaks TLS.
        secure = channel is not None or bool(tls or root_certificates or certificate_chain)
        self._metadata = token_metadata(token, target, secure) or None
        self._stub = pb_grpc.GradServeStub(self._channel)
        # Run's tensors skip protobuf's copies both ways (proto/wire.py); the server reads the same encoding.
        # _registered_method=True as the generated stub passes: grpc then resolves the method once, not per call.
        self._run = self._channel.unary_unary("/gradserve.v1.GradServe/Run", request_serializer=wire.serialize,
                                              response_deserializer=wire.Decoder(pb.RunResponse).decode,
                                              _registered_method=True)
        self._run_stream = self._channel.stream_stream("/gradserve.v1.GradServe/RunStream",
                                                       request_serializer=streaming.serialize,
                                                       response_deserializer=streaming.deserialize,
                                                       _registered_method=True)
        self._graph_ids: weakref.WeakKeyDictionary[Graph, tuple[int, str]] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._on_close = on_close
        # Graph ids are per-server caches; where calls can reach several servers, graphs travel inline.
        self._inline_graphs = round_robin
        self._layer_classes: dict[str, type] = {}
        self._schemas: dict[str, pb.LayerSchema] | None = None  # this client's server's, from ListLayers
        self._session = session_stream.session_method(self._channel)
        self._session_streams: weakref.WeakSet = weakref.WeakSet()  # open Session streams, closed with the client

    # -- lifecycle --

    def close(self) -> None:
        for stream in list(self._session_streams):  # each half-closes, so the server frees its session now
            stream.close()
        self._channel.close()
        if self._on_close is not None:
            self._on_close()
            self._on_close = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _call(self, method, request, timeout=None):
        try:
            return method(request, timeout=timeout if timeout is not None else self.timeout,
                          metadata=self._metadata)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    # -- layers --

    def list_layers(self) -> LayerList:
        """The server's layers with their schemas and provenance (kept for ``schemas()`` and ``graph()``)."""
        response = self._call(self._stub.ListLayers, pb.ListLayersRequest())
        with self._lock:
            self._schemas = {schema.name: schema for schema in response.layers}
        layers = [
            LayerInfo(
                name=s.name, doc=s.doc, inputs=list(s.inputs), outputs=list(s.outputs),
                differentiable=list(s.differentiable),
                attributes={a.name: {"type": a.type, "required": a.required, "doc": a.doc,
                                     "default": attr_from_proto(a.default)} for a in s.attributes},
                plugin=s.plugin, distribution=s.distribution, version=s.version,
            )
            for s in response.layers
        ]
        plugins = [{"name": p.name, "distribution": p.distribution, "version": p.version, "status": p.status,
                    "reason": p.reason, "layers": list(p.layers)} for p in response.plugins]
        return LayerList(layers, plugins)

    def schemas(self) -> dict[str, pb.LayerSchema]:
        """This client's server's layer schemas by name (listed on first use; ``list_layers()`` refreshes them)."""
        with self._lock:
            schemas = self._schemas
        if schemas is None:
            self.list_layers()
            with self._lock:
                schemas = self._schemas
        return dict(schemas)

    def graph(self, dtype: str = "float32") -> Graph:
        """A new Graph that knows this client's server's layers: output names, attribute types, docs and
        signatures for its builder methods (``help(g.Affine)``)."""
        return Graph(dtype, schemas=self.schemas())

    def layer_class(self, op: str) -> type:
        """A book-style class for any layer the server lists: ``L = client.layer_class("Mul"); L().forward(x, y)``."""
        from gradserve.client.remote_layer import make_layer_class

        with self._lock:
            cls = self._layer_classes.get(op)
        if cls is None:
            schema = self.schemas().get(op)
            if schema is None:
                self.list_layers()  # a plugin the server loaded since this client last listed
                schema = self.schemas().get(op)
            if schema is None:
                raise NotFound(f"the server has no layer {op!r}")
            cls = make_layer_class(self, schema)
            with self._lock:
                self._layer_classes[op] = cls
        return cls

    # -- graphs --

    def register(self, graph: Graph, name: str | None = None, version: str | None = None) -> str:
        """Send ``graph`` once; return its content-addressed id (the same on every server)."""
        request = pb.RegisterGraphRequest(graph=graph.to_proto(), name=name or "", version=version or "")
        graph_id = self._call(self._stub.RegisterGraph, request).graph_id
        with self._lock:
            self._graph_ids[graph] = (graph.version, graph_id)
        return graph_id

    def _ref(self, graph: Graph | str) -> pb.GraphRef:
        if isinstance(graph, str):
            return pb.GraphRef(graph_id=graph)
        with self._lock:
            known = self._graph_ids.get(graph)
        if known is None or known[0] != graph.version:
            self.register(graph)
            with self._lock:
                known = self._graph_ids[graph]
        return pb.GraphRef(graph_id=known[1])

    def _with_graph(self, graph, make_request, method, timeout=None):
        """Call by graph id; when the server does not know the id (a restart), send the graph inline once.

        The inline call teaches that server the graph, so later calls go by id again. A round_robin client
        always sends graphs inline: each call may reach another replica, and a retry after a miss would go
        to the next one, so a replica could miss the same id forever.
        """
        if self._inline_graphs and isinstance(graph, Graph):
            return self._call(method, make_request(pb.GraphRef(graph=graph.to_proto())), timeout)
        try:
            return self._call(method, make_request(self._ref(graph)), timeout)
        except NotFound as error:
            if isinstance(graph, str) or error.reason != "UnknownGraphError":
                raise
            return self._call(method, make_request(pb.GraphRef(graph=graph.to_proto())), timeout)

    def run(self, graph: Graph | str, feeds: Mapping[str, np.ndarray], grad: Iterable[str] | bool | None = None,
            seed_grads: Mapping[str, np.ndarray] | None = None, *, training: bool = False, seed: int | None = None,
            trace: bool = False, timeout: float | None = None) -> Result:
        """Forward and backward in one stateless call.

        ``grad``: names of inputs to differentiate (default: every float input;
        False: forward only). ``seed_grads``: gradients of outputs (default: one
        for each scalar output). ``trace``: also return every intermediate
        value and its gradient (``Result.values``, ``Result.value_grads``).
        """
        tensors = {"feeds": check_mapping("feeds", feeds, required=True),
                   "output_grads": check_mapping("seed_grads", seed_grads)}
        nbytes = wire.tensor_bytes(tensors)
        streamed = nbytes >= STREAM_BYTES

        def make(ref):
            request = pb.RunRequest(graph=ref, training=training, no_grad=grad is False, trace=trace,
                                    wrt=[] if grad in (None, False, True) else list(grad))
            if seed is not None:
                request.seed = seed
            return streaming.send("request", request, tensors) if streamed else wire.encode(request, tensors, nbytes)

        response, call = self._with_graph(graph, make, self._run_streamed if streamed else self._run.with_call,
                                          timeout)
        tensors = response.tensors
        return Result(from_tensor_map(tensors["outputs"]), from_tensor_map(tensors["grads"]), response.graph_id,
                      from_tensor_map(tensors["values"]), from_tensor_map(tensors["value_grads"]),
                      graph if isinstance(graph, Graph) else None,
                      dict(call.trailing_metadata() or ()).get(REPLICA_KEY, ""))

    def _run_streamed(self, chunks, timeout=None, metadata=None) -> tuple[wire.Decoded, grpc.Call]:
        """RunStream, answered like ``self._run.with_call``: (the response and its tensors, the call)."""
        call = self._run_stream(chunks, timeout=timeout, metadata=metadata)
        try:
            response, tensors = streaming.receive(call, "response", RUN_RESULT_TENSORS)
        except TensorError as error:
            raise GradserveError(f"the server's RunStream answer is malformed: {error}") from None
        return wire.Decoded(response, tensors), call

    def forward(self, graph: Graph | str, feeds: Mapping[str, np.ndarray], *, training: bool = False,
                seed: int | None = None, keep_for_backward: bool = True, timeout: float | None = None) -> Session:
        def make(ref):
            request = pb.ForwardRequest(graph=ref, keep_for_backward=keep_for_backward, training=training)
            if seed is not None:
                request.seed = seed
            to_tensor_map(feeds, request.feeds)
            return request

        feeds = check_mapping("feeds", feeds, required=True)
        response = self._with_graph(graph, make, self._stub.Forward, timeout)
        return Session(self, from_tensor_map(response.outputs), response.session_id, response.graph_id)

    def open_session(self, graph: Graph | str | None = None, *, training: bool = False, seed: int | None = None,
                     timeout: float | None = None) -> session_stream.SessionStream:
        """A session that lives as long as one stream, on one server: ``with client.open_session(g) as s:
        out = s.forward(feeds); grads = s.backward(dout)``, or ``s.run(feeds, grad=...)``, many times.

        Faster than unary calls, and pinned to one replica behind any balancer; ``timeout`` bounds the whole
        stream. ``graph`` may be None when every forward or run names its own.
        """
        stream = session_stream.SessionStream(self, graph, training=training, seed=seed, timeout=timeout)
        self._track_stream(stream)
        return stream

    def _track_stream(self, stream) -> None:
        self._session_streams.add(stream)

    def check_gradients(self, graph: Graph | str, feeds: Mapping[str, np.ndarray], wrt: Iterable[str] | None = None,
                        seed_grads: Mapping[str, np.ndarray] | None = None, eps: float = 1e-4,
                        timeout: float | None = None) -> dict[str, GradientCheck]:
        """Numerical vs backprop gradients per input, computed on the server (use float64 feeds)."""
        def make(ref):
            request = pb.CheckGradientsRequest(graph=ref, wrt=list(wrt or ()), eps=eps)
            to_tensor_map(feeds, request.feeds)
            to_tensor_map(seed_grads, request.output_grads)
            return request

        feeds = check_mapping("feeds", feeds, required=True)
        seed_grads = check_mapping("seed_grads", seed_grads)
        response = self._with_graph(graph, make, self._stub.CheckGradients, timeout)
        return {c.name: GradientCheck(c.name, c.max_abs_diff, c.mean_abs_diff, from_tensor(c.numerical),
                                      from_tensor(c.backprop)) for c in response.checks}


def connect(target: str | None = None, **kwargs) -> Client:
    """A Client for ``target`` ("host:port"); with none, an embedded server on a free local port.

    Several replicas: a target that resolves to all of them ("ipv4:10.0.0.1:50051,10.0.0.2:50051", or a DNS
    name with several records) and ``round_robin=True`` spread the calls; Run is stateless, so any replica may
    answer, while a Forward's session lives on the replica that made it (see docs/deploy.md).
    """
    if target:
        return Client(target, **kwargs)
    from gradserve.client.embedded import start_embedded

    port, stop = start_embedded()
    return Client(f"127.0.0.1:{port}", on_close=stop, **kwargs)


__all__ = ["Client", "GradientCheck", "LayerInfo", "LayerList", "Result", "Session", "connect"]
