"""The Train stream's servicer: decode each TrainRequest, call the service's TrainingRun, answer in order.

One message, one answer: a message that fails is answered with its google.rpc.Status (TrainResponse.status)
and the stream goes on. What breaks the stream itself (chunks that do not fit, a request that does not
parse, the caller leaving, the stream guard's limits) ends the call with its status. However the call ends,
the run's parameters and optimizer state are freed with it. Once the server begins to shut down, open and
batch are answered UNAVAILABLE (going away) while get_params and close still hand the parameters back,
until the shutdown's grace ends.
"""

from __future__ import annotations

import logging
from typing import Iterator

import grpc

from gradserve.proto import REPLICA_KEY
from gradserve.proto import gradserve_pb2 as pb
from gradserve.proto import stream_chunks, wire
from gradserve.proto.tensors import TensorError, from_tensor_map
from gradserve.server.engine.errors import EngineError
from gradserve.server.rpc import status
from gradserve.server.service.operations import Service
from gradserve.server.service.stream_sessions import ShuttingDownError
from gradserve.server.service.training import GOING_AWAY, TrainingRun

_LOGGER = logging.getLogger(__name__)

REQUEST_DECODER = wire.Decoder(pb.TrainRequest)


class StreamBroken(Exception):
    """The stream cannot go on (its chunks do not fit what was announced): the call ends with this status."""

    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error


def _chunk_response(chunk: pb.TensorChunk) -> pb.TrainResponse:
    return pb.TrainResponse(chunk=chunk)


class TrainStream:
    """One Train call: its TrainingRun (after open) and the handling of each message."""

    def __init__(self, servicer, requests, context: grpc.ServicerContext):
        self.servicer = servicer
        self.service: Service = servicer.service
        self.requests = requests
        self.context = context
        self.run: TrainingRun | None = None

    def answers(self) -> Iterator[wire.Encoded]:
        for request in self.requests:
            kind = request.message.WhichOneof("kind")
            try:
                tensors = self._assembled(kind, request.tensors)
                response, out = self._handle(kind, request.message, tensors)
            except (StreamBroken, grpc.RpcError):  # the stream itself is broken, or the caller left mid-chunks
                raise
            except Exception as exc:  # noqa: BLE001 - this message failed; the stream goes on
                if self.context.code() is not None or not self.context.is_active():
                    raise  # the call itself ended while reading (undecodable, cancelled, the stream guard)
                yield wire.encode(pb.TrainResponse(status=_status_message(exc)), {}, 0)
                continue
            yield from stream_chunks.send(response, out, _chunk_response)
            if kind == "close":
                return

    def close(self) -> None:
        """Free the run's room (once; also called from gRPC's thread when the call ends)."""
        if self.run is not None:
            self.run.close()

    def _assembled(self, kind: str | None, tensors: dict) -> dict:
        if kind == "chunk":
            raise StreamBroken(TensorError("a chunk that no message announced: a message with a tensor's dtype "
                                           "and shape but no data comes first"))
        try:
            return stream_chunks.receive(tensors, self._next_chunk, self.service.limits.check_sizes)
        except TensorError as exc:
            raise StreamBroken(exc) from None

    def _next_chunk(self) -> pb.TensorChunk:
        request = next(self.requests, None)
        if request is None:
            raise TensorError("the stream ended before the chunks of the last message's tensors")
        if request.message.WhichOneof("kind") != "chunk":
            raise TensorError("a message came before the chunks of the last one's tensors had all arrived")
        return request.message.chunk

    def _handle(self, kind: str | None, message: pb.TrainRequest, tensors: dict):
        """(the response, its tensor maps) for one message."""
        if kind in ("open", "batch") and self.service.streams.going_away.is_set():
            raise ShuttingDownError(GOING_AWAY)
        if kind == "open":
            return self._open(message.open, tensors)
        if kind is None:
            raise EngineError("a TrainRequest sets one of open, batch, get_params, close (this one sets none)")
        run = self._require_run(kind)
        if kind == "batch":
            if tensors["params"]:
                raise EngineError("parameters travel with open only; a batch sends its feeds")
            loss, outputs = run.step(from_tensor_map(tensors["feeds"], "feed"), message.batch.outputs,
                                     self.servicer._stopper(self.context))
            return pb.TrainResponse(loss=loss, step=run.steps), {"outputs": outputs}
        if tensors["params"] or tensors["feeds"]:
            raise EngineError(f"{kind} carries no tensors")
        response = pb.TrainResponse(step=run.steps)
        params = run.params()
        if kind == "close":
            self.close()
        return response, {"params": params}

    def _open(self, open_: pb.TrainOpen, tensors: dict):
        if self.run is not None:
            raise EngineError("this stream is open already: open once, first; start another stream for "
                              "another run")
        if tensors["feeds"]:
            raise EngineError("the open message sends parameters (params); feeds travel with each batch")
        plan = self.servicer._plan(open_.graph)
        self.run = self.service.train(
            plan, from_tensor_map(tensors["params"], "parameter"), open_.loss, list(open_.feeds),
            open_.optimizer.name, dict(open_.optimizer.settings), list(open_.outputs), not open_.inference,
            open_.seed if open_.HasField("seed") else None,
        )
        return pb.TrainResponse(graph_id=plan.graph_id), {}

    def _require_run(self, kind: str) -> TrainingRun:
        if self.run is None:
            raise EngineError(f"{kind} before open: the stream's first message opens it (TrainOpen: the graph, "
                              "the parameters, the loss, the optimizer)")
        return self.run


def _status_message(exc: Exception):
    """The google.rpc.Status of ``exc`` for TrainResponse.status (logged when INTERNAL)."""
    rpc = status.status_for(exc)
    if rpc.code == grpc.StatusCode.INTERNAL.value[0]:
        _LOGGER.error("internal error in a Train stream message", exc_info=exc)
    return rpc


def serve_train(servicer, requests, context: grpc.ServicerContext, replica: str) -> Iterator[wire.Encoded]:
    """The Train method's handler body (a generator of encoded answers)."""
    context.send_initial_metadata(((REPLICA_KEY, replica),))  # a client sees its replica before the first step
    context.set_trailing_metadata(((REPLICA_KEY, replica),))
    stream = TrainStream(servicer, requests, context)
    context.add_callback(stream.close)  # a caller that vanishes frees the run even before the handler notices
    try:
        yield from stream.answers()
    except Exception as exc:  # noqa: BLE001 - every failure becomes a status, never a crash
        if context.code() is not None:  # ended with its status already (an undecodable request)
            raise
        if not context.is_active():  # the caller left, or the stream guard ended the call: no one to answer
            return
        status.abort(context, exc.error if isinstance(exc, StreamBroken) else exc)
    finally:
        stream.close()

