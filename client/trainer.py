"""Training with the parameters on the server: ``trainer = client.trainer(graph, params, "adam", lr=1e-3)``.

A Trainer is one Train stream: it opens with the graph, the initial parameters, the loss output's name and an
optimizer; ``step(feeds)`` sends a batch and returns its loss (the server updates the parameters and keeps
the optimizer's state); ``params()`` fetches the parameters at any time; ``close()`` ends the stream and
returns them. ``save(path)`` writes them in the safetensors format; ``load(path)`` reads such a file back.
"""

from __future__ import annotations

import os
import queue
import threading
import weakref
from pathlib import Path
from typing import Iterable, Mapping

import grpc
import numpy as np

from gradserve.proto import REPLICA_KEY
from gradserve.proto import gradserve_pb2 as pb
from gradserve.proto import stream_chunks, wire
from gradserve.proto.tensors import TensorError, from_tensor_map
from gradserve.client.errors import GradserveError, NotFound, from_rpc_error, from_status
from gradserve.client.graph import Graph

METHOD = "/gradserve.v1.GradServe/Train"
_END = object()  # ends the request iterator: the client half-closes the stream


def load(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The parameters in a safetensors file (as ``Trainer.save`` writes them), by name."""
    from safetensors.numpy import load_file

    return load_file(str(path))


def save(params: Mapping[str, np.ndarray], path: str | os.PathLike, metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``params`` to ``path`` in the safetensors format (readable by torch, jax, numpy, ...)."""
    from safetensors.numpy import save_file

    save_file({name: np.ascontiguousarray(array) for name, array in params.items()}, str(path),
              metadata=dict(metadata) if metadata else None)
    return Path(path)


class Trainer:
    """One Train stream. Use ``Client.trainer(...)``; a context manager closes it."""

    def __init__(self, client, graph: Graph | str, params: Mapping[str, np.ndarray] | str | os.PathLike,
                 optimizer: str = "sgd", *, loss: str = "loss", feeds: Iterable[str] | None = None,
                 outputs: Iterable[str] = (), inference: bool = False, seed: int | None = None,
                 timeout: float | None = None, **settings: float):
        """``params``: the initial parameters, or the path of a safetensors file of them. ``feeds``: the names
        every batch carries (default: the graph inputs that are not parameters). ``outputs``: outputs returned
        with every step's loss (``trainer.outputs``). ``settings``: the optimizer's (lr, momentum, beta1, ...).
        ``timeout`` bounds the whole stream."""
        if isinstance(params, (str, os.PathLike)):
            params = load(params)
        self.client = client
        self.optimizer = optimizer
        self.settings = dict(settings)
        self.steps = 0
        self.outputs: dict[str, np.ndarray] = {}
        self.graph_id = ""
        self.closed = False
        self._final: dict[str, np.ndarray] | None = None
        self._lock = threading.Lock()
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        stub = client._channel.stream_stream(METHOD, request_serializer=wire.serialize,
                                             response_deserializer=wire.Decoder(pb.TrainResponse).decode,
                                             _registered_method=True)
        self._call = stub(iter(self._requests.get, _END), timeout=timeout, metadata=client._metadata)
        # A Trainer dropped without close() ends its stream (the server frees its state) and gRPC's sending thread.
        weakref.finalize(self, _abandon, self._requests, self._call)
        open_ = pb.TrainOpen(loss=loss, feeds=list(feeds or ()), outputs=list(outputs), inference=inference,
                             optimizer=pb.OptimizerSpec(name=optimizer, settings={k: float(v) for k, v in
                                                                                  settings.items()}))
        if seed is not None:
            open_.seed = seed
        params = dict(params)
        try:
            self.graph_id = self._open(graph, open_, params).graph_id
        except BaseException:
            self._cancel()
            raise

    # -- the stream's messages --

    def step(self, feeds: Mapping[str, np.ndarray], outputs: Iterable[str] = ()) -> float:
        """Train on one batch; the loss before this step's update. The outputs asked for land in ``outputs``."""
        response, tensors = self._ask(pb.TrainRequest(batch=pb.TrainBatch(outputs=list(outputs))), {"feeds": feeds})
        self.steps = response.step
        self.outputs = from_tensor_map(tensors["outputs"])
        return response.loss

    def params(self) -> dict[str, np.ndarray]:
        """The parameters as the server has them now (after the last step); after close, the final ones."""
        if self._final is not None:
            return dict(self._final)
        response, tensors = self._ask(pb.TrainRequest(get_params=pb.TrainGetParams()), {})
        return from_tensor_map(tensors["params"])

    def close(self) -> dict[str, np.ndarray]:
        """End the stream and return the final parameters (again on a second call)."""
        if self._final is None:
            response, tensors = self._ask(pb.TrainRequest(close=pb.TrainClose()), {})
            self._final = from_tensor_map(tensors["params"])
            self.steps = response.step
            self._requests.put(_END)
            self.closed = True
            try:
                for _ in self._call:  # the server ends the call with OK once it has answered close
                    pass
            except grpc.RpcError as error:
                raise from_rpc_error(error) from None
        return dict(self._final)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the current parameters to ``path`` (safetensors), with the step count and optimizer as metadata."""
        return save(self.params(), path, {"gradserve.steps": str(self.steps), "gradserve.optimizer": self.optimizer,
                                          "gradserve.graph_id": self.graph_id})

    @property
    def replica(self) -> str:
        """The server process that holds this stream ("host:pid")."""
        return dict(self._call.initial_metadata() or ()).get(REPLICA_KEY, "")

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self._cancel()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"Trainer({self.optimizer}, {self.steps} steps, {state})"

    # -- the wire --

    def _open(self, graph, open_: pb.TrainOpen, params) -> pb.TrainResponse:
        """Open by graph id where that is safe; a server that does not know the id gets the graph inline."""
        inline = isinstance(graph, Graph) and self.client._inline_graphs
        open_.graph.CopyFrom(pb.GraphRef(graph=graph.to_proto()) if inline else self.client._ref(graph))
        try:
            return self._ask(pb.TrainRequest(open=open_), {"params": params})[0]
        except NotFound as error:
            if not isinstance(graph, Graph) or inline or error.reason != "UnknownGraphError":
                raise
            open_.graph.CopyFrom(pb.GraphRef(graph=graph.to_proto()))
            return self._ask(pb.TrainRequest(open=open_), {"params": params})[0]

    def _ask(self, request: pb.TrainRequest, tensors: Mapping[str, Mapping[str, np.ndarray]]):
        """Send one message (its tensors inline, or in chunks when large) and read its answer."""
        with self._lock:
            if self.closed:
                raise GradserveError("this Trainer is closed: its stream has ended")
            for message in stream_chunks.send(request, tensors, lambda chunk: pb.TrainRequest(chunk=chunk)):
                self._requests.put(message)
            response = self._next()
            if response.message.HasField("status"):
                raise from_status(response.message.status)
            try:
                received = stream_chunks.receive(response.tensors, self._next_chunk)
            except TensorError as error:
                self._cancel()
                raise GradserveError(f"the server's Train answer is malformed: {error}") from None
            return response.message, received

    def _next(self) -> wire.Decoded:
        try:
            return next(self._call)
        except StopIteration:
            self.closed = True
            raise GradserveError("the server ended the Train stream without answering") from None
        except grpc.RpcError as error:
            self.closed = True
            raise from_rpc_error(error) from None

    def _next_chunk(self) -> pb.TensorChunk:
        response = self._next()
        if not response.message.HasField("chunk"):
            raise TensorError("an answer came before the chunks of the last one's tensors")
        return response.message.chunk

    def _cancel(self) -> None:
        self.closed = True
        _abandon(self._requests, self._call)


def _abandon(requests: queue.SimpleQueue, call) -> None:
    """End a stream without a close message: no more requests, the call cancelled (a no-op once it ended)."""
    requests.put(_END)
    call.cancel()
