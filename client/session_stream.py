"""A session that lives as long as one Session stream: ``with client.open_session(graph) as s: s.forward(...)``."""

from __future__ import annotations

import collections
import logging
import queue
import threading
import weakref
from typing import Iterable, Mapping

import grpc
import numpy as np

from gradserve.proto import gradserve_pb2 as pb
from gradserve.proto import session_wire
from gradserve.proto.streaming import DataChunk
from gradserve.proto.tensors import TensorError, from_tensor_map
from gradserve.client.errors import GradserveError, NotFound, StreamBroken, check_mapping, from_rpc_error, from_status
from gradserve.client.graph import Graph

_LOGGER = logging.getLogger(__name__)

METHOD = "/gradserve.v1.GradServe/Session"
_END = object()  # put in the outbox: the client has nothing more to send (the stream half-closes)
#: With send_changes, smaller feeds are sent whole every time (comparing them costs more than sending them).
CHANGES_MIN_ELEMENTS = 1024


def session_method(channel: grpc.Channel):
    """The Session stream's callable on ``channel``, with the wire encoding of proto/session_wire.py."""
    return channel.stream_stream(METHOD, request_serializer=session_wire.serialize,
                                 response_deserializer=session_wire.Deserializer(pb.SessionResponse),
                                 _registered_method=True)


class SessionStream:
    """A session on one server for as long as this stream is open; each step is one message and its answer.

    ``forward`` keeps its pass on the server (numbered by ``pass_id``, 0 by default) for ``backward``;
    ``run`` is forward and backward in one message; a step that fails raises its typed error and the
    stream goes on. Closing the stream (``close``, the end of a ``with`` block, or this object being
    collected) frees the session on the server. One thread at a time uses a stream (a lock sees to it).
    """

    def __init__(self, client, graph: Graph | str | None = None, *, training: bool = False,
                 seed: int | None = None, timeout: float | None = None):
        self.client = client
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.RLock()
        self._sent: dict[int, dict[str, np.ndarray]] = {}  # feeds the server keeps, by pass (send_changes)
        self._ids: weakref.WeakKeyDictionary[Graph, tuple[int, str]] = weakref.WeakKeyDictionary()
        self._forgotten: collections.deque[int] = collections.deque()  # passes of collected layers, to release
        self._broken: GradserveError | None = None
        self._closed = False
        self._call = client._session(iter(self._outbox.get, _END), timeout=timeout, metadata=client._metadata)
        # A stream nobody closed half-closes when it is collected: the server frees the session then.
        self._finalizer = weakref.finalize(self, self._outbox.put, _END)
        self.graph = graph
        request = pb.SessionRequest(step=pb.SESSION_OPEN, training=training)
        if seed is not None:
            request.seed = seed
        answer, _ = self._exchange(request, {}, graph)
        self.graph_id = answer.graph_id
        self.replica = answer.replica  # the server process holding the session ("host:pid")

    # -- steps --

    def forward(self, feeds: Mapping[str, np.ndarray], *, graph: Graph | str | None = None, pass_id: int = 0,
                training: bool | None = None, seed: int | None = None,
                send_changes: bool = False) -> dict[str, np.ndarray]:
        """The outputs; the pass is kept as ``pass_id`` for ``backward`` (replacing one kept there before).
        ``graph``: this step's graph instead of the session's. ``send_changes``: the server keeps the feeds,
        and the next such forward of ``pass_id`` sends only the feeds and elements that changed (parameters
        sent again and again: the book-style layers, a numerical gradient)."""
        feeds = check_mapping("feeds", feeds, required=True)
        request = pb.SessionRequest(step=pb.SESSION_FORWARD, pass_id=pass_id)
        _options(request, training, seed)
        with self._lock:
            if not send_changes:
                self._sent.pop(pass_id, None)
                tensors = {"feeds": feeds}
            else:
                request.keep_feeds = True
                tensors = self._changes(pass_id, feeds)
            try:
                _, answer = self._exchange(request, tensors, graph)
            except GradserveError:
                self._sent.pop(pass_id, None)  # a failed forward drops the server's kept feeds too
                raise
        return from_tensor_map(answer["outputs"])

    def _changes(self, pass_id: int, feeds: Mapping[str, np.ndarray]) -> dict:
        """The tensor maps of a forward that sends what changed since the feeds the server keeps for pass_id."""
        last = self._sent.get(pass_id)
        whole, indices, values = {}, {}, {}
        kept = {}
        for name, array in feeds.items():
            array = np.asarray(array)
            before = last.get(name) if last is not None else None
            if before is None or before.shape != array.shape or before.dtype != array.dtype or \
                    array.size < CHANGES_MIN_ELEMENTS:
                whole[name] = array
                kept[name] = np.array(array) if array.size >= CHANGES_MIN_ELEMENTS else None
                continue
            changed = np.flatnonzero(before != array)
            if changed.size * 4 > array.size:  # most of it changed: the whole array is cheaper
                whole[name] = array
                kept[name] = np.array(array)
                continue
            if changed.size:
                indices[name] = changed
                values[name] = array.reshape(-1)[changed]
                before.reshape(-1)[changed] = values[name]
            kept[name] = before
        self._sent[pass_id] = {name: array for name, array in kept.items() if array is not None}
        return {"feeds": whole, "patch_indices": indices, "patch_values": values}

    def backward(self, dout: Mapping[str, np.ndarray] | None = None, wrt: Iterable[str] | None = None, *,
                 retain: bool = False, pass_id: int = 0) -> dict[str, np.ndarray]:
        """Gradients of kept pass ``pass_id`` for ``wrt`` (default: every float input); ``dout`` seeds outputs
        (default: one for each scalar output). Without ``retain`` the server drops the pass after."""
        request = pb.SessionRequest(step=pb.SESSION_BACKWARD, wrt=list(wrt or ()), retain=retain, pass_id=pass_id)
        _, tensors = self._exchange(request, {"output_grads": check_mapping("dout", dout)})
        return from_tensor_map(tensors["grads"])

    def run(self, feeds: Mapping[str, np.ndarray], grad: Iterable[str] | bool | None = None,
            seed_grads: Mapping[str, np.ndarray] | None = None, *, graph: Graph | str | None = None,
            training: bool | None = None, seed: int | None = None):
        """Forward and backward in one message, as ``Client.run`` (nothing is kept): a Result."""
        from gradserve.client.connection import Result

        request = pb.SessionRequest(step=pb.SESSION_RUN, no_grad=grad is False,
                                    wrt=[] if grad in (None, False, True) else list(grad))
        _options(request, training, seed)
        tensors = {"feeds": check_mapping("feeds", feeds, required=True),
                   "output_grads": check_mapping("seed_grads", seed_grads)}
        answer, tensors = self._exchange(request, tensors, graph)
        used = graph if graph is not None else self.graph
        return Result(from_tensor_map(tensors["outputs"]), from_tensor_map(tensors["grads"]),
                      answer.graph_id or self._known_id(used) or "",
                      graph=used if isinstance(used, Graph) else None, replica=self.replica)

    def release(self, pass_id: int = 0) -> bool:
        """Drop kept pass ``pass_id`` (and feeds kept for it) on the server; whether there was a pass."""
        with self._lock:
            self._sent.pop(pass_id, None)
            answer, _ = self._exchange(pb.SessionRequest(step=pb.SESSION_RELEASE, pass_id=pass_id), {})
        return answer.released

    @property
    def ended(self) -> bool:
        """Whether the stream is over: closed, broken, or ended by the server (a limit such as its idle time)."""
        return self._closed or self._broken is not None or self._call.done()

    def forget(self, pass_id: int) -> None:
        """Release ``pass_id`` with the next step (safe from any thread, a finalizer's too: nothing is sent now)."""
        self._forgotten.append(pass_id)

    # -- lifecycle --

    def close(self) -> None:
        """End the stream; the server frees the session. Waits for the server's end of the stream."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._finalizer()  # the end marker: the stream half-closes
            if self._broken is not None:
                self._call.cancel()
                return
            try:
                for _ in self._call:  # the server answers every step before it ends; there is none left
                    pass
            except grpc.RpcError as error:
                if error.code() is not grpc.StatusCode.CANCELLED:
                    _LOGGER.debug("session stream ended with %s", error.code())

    def __enter__(self) -> "SessionStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the exchange of one step --

    def _exchange(self, request: pb.SessionRequest, tensors: dict, graph=None, *, inline: bool = False):
        """Send one step (and the releases of forgotten passes before it); its answer and the answer's tensors."""
        with self._lock:
            if self._broken is not None:
                raise self._broken
            if self._closed:
                raise StreamBroken("this session stream is closed; open a new one (client.open_session)")
            named = graph if graph is not None else (self.graph if request.step == pb.SESSION_OPEN else None)
            if named is not None:
                self._put_graph(request, named, inline)
            releases = 0
            while self._forgotten:
                forgotten = self._forgotten.popleft()
                self._sent.pop(forgotten, None)
                self._send(pb.SessionRequest(step=pb.SESSION_RELEASE, pass_id=forgotten), {})
                releases += 1
            self._send(request, tensors)
            for _ in range(releases):
                try:
                    self._receive()
                except GradserveError as error:
                    if self._broken is not None:
                        raise
                    _LOGGER.debug("releasing a forgotten pass: %s", error)
            try:
                answer, answer_tensors = self._receive()
            except NotFound as error:  # the server forgot a graph id (a restart, its cache): send the graph once
                if error.reason != "UnknownGraphError" or not isinstance(named, Graph) or inline or \
                        self._broken is not None:
                    raise
                self._ids.pop(named, None)
                retry = True
            else:
                retry = False
                if answer.graph_id and isinstance(named, Graph):
                    self._ids[named] = (named.version, answer.graph_id)
        if retry:
            request.ClearField("graph")
            return self._exchange(request, tensors, graph, inline=True)
        return answer, answer_tensors

    def _put_graph(self, request: pb.SessionRequest, graph: Graph | str, inline: bool) -> None:
        if isinstance(graph, str):
            request.graph.graph_id = graph
            return
        known = None if inline else self._known_id(graph)
        if known:
            request.graph.graph_id = known
        else:
            request.graph.graph.CopyFrom(graph.to_proto())

    def _known_id(self, graph) -> str | None:
        if isinstance(graph, str):
            return graph
        if not isinstance(graph, Graph):
            return None
        known = self._ids.get(graph)
        if known is None:
            known = self.client._graph_ids.get(graph)  # registered through this client's unary calls
        return known[1] if known is not None and known[0] == graph.version else None

    def _send(self, request: pb.SessionRequest, tensors: dict) -> None:
        try:
            items = session_wire.messages(request, tensors)
        except TensorError as error:  # an array gradserve cannot send: the caller's, and nothing went out
            raise GradserveError(str(error), grpc.StatusCode.INVALID_ARGUMENT) from None
        first, chunks = items
        self._outbox.put(first)
        for chunk in chunks:  # the bytes of announced tensors, each chunk a view of its array
            self._outbox.put(chunk)

    def _receive(self):
        try:
            item = next(self._call)
        except StopIteration:
            raise self._break(StreamBroken("the server ended the session stream without an answer")) from None
        except grpc.RpcError as error:
            raise self._break(from_rpc_error(error)) from None
        if type(item) is DataChunk:
            raise self._break(StreamBroken("the server sent a tensor chunk where an answer was due"))
        tensors = item.tensors
        if session_wire.announced(tensors):
            try:
                tensors = session_wire.assemble(tensors, self._call)
            except (TensorError, grpc.RpcError) as error:
                raise self._break(StreamBroken(f"the server's chunked answer is malformed: {error}")) from None
        answer = item.message
        if answer.HasField("status"):
            raise from_status(answer.status)
        return answer, tensors

    def _break(self, error: GradserveError) -> GradserveError:
        """The stream is over: every later step raises ``error`` too."""
        self._broken = error
        return error


def _options(request: pb.SessionRequest, training: bool | None, seed: int | None) -> None:
    if training is not None:
        request.training = training
    if seed is not None:
        request.seed = seed


_layer_streams: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # client -> threading.local
_layer_lock = threading.Lock()


def layer_stream(client) -> SessionStream:
    """This thread's Session stream to ``client``'s server for the book-style layers (opened on first use).

    It stays open while the thread and the client live; each layer keeps its pass under its own number.
    """
    local = _layer_streams.get(client)
    if local is None:
        with _layer_lock:
            local = _layer_streams.setdefault(client, threading.local())
    stream = getattr(local, "stream", None)
    if stream is None or stream.ended:  # e.g. the server's stream-idle-seconds ended it: a new one, quietly
        stream = local.stream = SessionStream(client)
        client._track_stream(stream)
    return stream
