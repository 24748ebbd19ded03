"""The Session stream's handler: each step decoded, handed to a StreamSession, answered in order."""

from __future__ import annotations

import logging

import grpc

from gradserve.proto import REPLICA_KEY, session_wire, wire
from gradserve.proto import gradserve_pb2 as pb
from gradserve.proto.streaming import DataChunk
from gradserve.proto.tensors import TensorError, from_tensor_map
from gradserve.server.engine.errors import CancelledError, EngineError
from gradserve.server.rpc import status
from gradserve.server.rpc.streams import end_call, guarded
from gradserve.server.service.stream_sessions import ShuttingDownError, StreamSession

_LOGGER = logging.getLogger(__name__)

REQUEST_TENSORS = tuple(wire.tensor_map_fields(pb.SessionRequest).values())  # feeds, output_grads
DESERIALIZE = session_wire.Deserializer(pb.SessionRequest)
SERIALIZE = session_wire.serialize

_EMPTY = {}


class ProtocolError(EngineError):
    """The stream itself is broken (a chunk out of place, a step this server does not know): it ends."""


class SessionHandler:
    """``Session(requests, context)``: the stream-stream method of the GradServe servicer."""

    def __init__(self, service, plan, stopper, replica):
        """``plan(GraphRef)``, ``stopper(context)`` and ``replica()`` as the GradServe servicer has them."""
        self.service = service
        self.plan = plan
        self.stopper = stopper
        self.replica = replica
        self._steps = {
            pb.SESSION_OPEN: self._open,
            pb.SESSION_FORWARD: self._forward,
            pb.SESSION_BACKWARD: self._backward,
            pb.SESSION_RUN: self._run,
            pb.SESSION_RELEASE: self._release,
        }

    def __call__(self, requests, context):
        context.set_trailing_metadata(((REPLICA_KEY, self.replica()),))
        try:
            session = self.service.streams.open()
        except Exception as exc:  # noqa: BLE001 - max-sessions, or the server going away: the stream's status
            status.abort(context, exc)
        context.add_callback(session.close)  # also when the client vanishes mid-step
        # SIGTERM ends a stream waiting for its client's next step at once, with the status that says why
        session.end_waiting = lambda message: end_call(context, grpc.StatusCode.UNAVAILABLE, message)
        # StreamGuard (server/rpc/streams.py) already times every read and counts the stream against max-streams
        requests = iter(guarded(requests, context))
        try:
            while True:
                session.waiting = True
                request = next(requests, None)
                session.waiting = False
                if request is None:
                    return
                session.check_serving()
                if type(request) is DataChunk:
                    raise ProtocolError("a TensorChunk came with no step before it announcing its tensor "
                                        "(a tensor's chunks follow the step that announces it with empty data)")
                tensors = request.tensors
                if session_wire.announced(tensors):
                    tensors = session_wire.assemble(tensors, requests, self.service.limits.check_sizes)
                step = self._steps.get(request.message.step)
                if step is None:
                    raise ProtocolError(f"unknown session step {request.message.step}: send SESSION_OPEN first, "
                                        "then SESSION_FORWARD, _BACKWARD, _RUN or _RELEASE")
                try:
                    answer, answer_tensors = step(session, request.message, tensors, context)
                except Exception as exc:  # noqa: BLE001 - this step's error is this step's answer alone
                    if not context.is_active():
                        return
                    yield self._failed(exc)
                    continue
                first, chunks = session_wire.messages(answer, answer_tensors)
                yield first
                yield from chunks
                session.check_serving()
        except (ProtocolError, TensorError, ShuttingDownError) as exc:
            if context.is_active():
                status.abort(context, exc)
        except (grpc.RpcError, CancelledError):  # the client left, or the guard ended the stream (its status sent)
            return
        finally:
            session.close()

    @staticmethod
    def _failed(exc: Exception) -> pb.SessionResponse:
        answer = pb.SessionResponse(status=status.status_for(exc))
        if answer.status.code == grpc.StatusCode.INTERNAL.value[0]:
            _LOGGER.error("internal error in a session step", exc_info=exc)
        return answer

    # -- the steps: (request, tensors) -> (the answer, its tensor maps) --

    def _open(self, session: StreamSession, request, tensors, context):
        plan = self.plan(request.graph) if request.graph.WhichOneof("ref") else None
        training, seed = self._options(request)
        graph_id = session.open(plan, bool(training), seed)
        return pb.SessionResponse(graph_id=graph_id, replica=self.replica()), _EMPTY

    def _step_plan(self, request):
        return self.plan(request.graph) if request.graph.WhichOneof("ref") else None

    @staticmethod
    def _options(request):
        """(training, seed) of a step; None where it leaves them to the session's."""
        return (request.training if request.HasField("training") else None,
                request.seed if request.HasField("seed") else None)

    def _forward(self, session: StreamSession, request, tensors, context):
        training, seed = self._options(request)
        plan = self._step_plan(request)
        patches = None
        if tensors["patch_indices"] or tensors["patch_values"]:
            patches = (from_tensor_map(tensors["patch_indices"], "patch index"),
                       from_tensor_map(tensors["patch_values"], "patch value"))
        outputs = session.forward(from_tensor_map(tensors["feeds"], "feed"), request.pass_id, plan, training, seed,
                                  self.stopper(context), request.keep_feeds, patches)
        return pb.SessionResponse(graph_id=_inline_id(request, plan)), {"outputs": outputs}

    def _backward(self, session: StreamSession, request, tensors, context):
        grads = session.backward(from_tensor_map(tensors["output_grads"], "output gradient"),
                                 list(request.wrt) or None, request.retain, request.pass_id,
                                 self.stopper(context))
        return pb.SessionResponse(), {"grads": grads}

    def _run(self, session: StreamSession, request, tensors, context):
        training, seed = self._options(request)
        plan = self._step_plan(request)
        outputs, grads = session.run(from_tensor_map(tensors["feeds"], "feed"),
                                     from_tensor_map(tensors["output_grads"], "output gradient"),
                                     [] if request.no_grad else (list(request.wrt) or None), plan, training, seed,
                                     self.stopper(context))
        return pb.SessionResponse(graph_id=_inline_id(request, plan)), {"outputs": outputs, "grads": grads}

    def _release(self, session: StreamSession, request, tensors, context):
        return pb.SessionResponse(released=session.release(request.pass_id)), _EMPTY


def _inline_id(request: pb.SessionRequest, plan) -> str:
    """The graph id to answer with: only when the step sent its graph inline (the client learns it once)."""
    return plan.graph_id if plan is not None and request.graph.WhichOneof("ref") == "graph" else ""
