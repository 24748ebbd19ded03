"""The GradServe gRPC servicer: convert, call the Service, convert back."""

from __future__ import annotations

import functools
import os
import socket
import time

import grpc
from google.protobuf import message_factory

from gradserve.proto import REPLICA_KEY
from gradserve.proto import gradserve_pb2 as pb
from gradserve.proto import gradserve_pb2_grpc as pb_grpc
from gradserve.proto import streaming, wire
from gradserve.proto.tensors import from_tensor_map, to_tensor, to_tensor_map
from gradserve.server.rpc import convert, session_servicer, status
from gradserve.server.rpc.interceptors import KINDS
from gradserve.server.engine import execute as engine
from gradserve.server.rpc.train_servicer import REQUEST_DECODER as TRAIN_DECODER, serve_train
from gradserve.server.engine.errors import CancelledError, DeadlineError, EngineError, GraphError, LimitError
from gradserve.server.engine.execute import ShouldStop
from gradserve.server.rpc.streams import StreamGuard
from gradserve.server.service.operations import Service




def replica_id() -> str:
    """``host:pid`` of this process; the pid is read per call because --workers forks after import."""
    return _replica_id(os.getpid())


@functools.lru_cache(maxsize=None)
def _replica_id(pid: int) -> str:
    return f"{socket.gethostname()}:{pid}"  # gethostname is a system call: once per process, not per request


def handled(method):
    """Turn every error a request can cause into its gRPC status; the server goes on."""

    @functools.wraps(method)
    def wrapper(self, request, context):
        context.set_trailing_metadata(((REPLICA_KEY, replica_id()),))
        try:
            return method(self, request, context)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a status, never a crash
            status.abort(context, exc)

    return wrapper


#: How often, at most, the check between nodes asks grpc whether the call is still wanted (a lock each
#: time: 0.4 µs, as much as a tiny node).
CHECK_SECONDS = 1e-3


def stopper(context: grpc.ServicerContext, max_seconds: float | None = None) -> ShouldStop:
    """A check the engine calls between nodes: stop once the caller cancelled, its deadline passed,
    or the call ran past the server's max-call-seconds limit (looked at once per CHECK_SECONDS)."""
    give_up = None if max_seconds is None else time.monotonic() + max_seconds
    next_check = 0.0

    def should_stop(now_for_sure: bool = False):
        nonlocal next_check
        now = time.monotonic()
        if now < next_check and not now_for_sure:
            return
        next_check = now + CHECK_SECONDS
        if not context.is_active():
            if context.time_remaining() <= 0:
                raise DeadlineError("the call's deadline passed; stopped between nodes")
            raise CancelledError("the caller cancelled the call (or gave up at its deadline); stopped between nodes")
        if give_up is not None and now > give_up:
            raise LimitError(f"the call ran past the max-call-seconds limit of {max_seconds:g}s; "
                             "stopped between nodes")

    return should_stop


#: Methods whose tensor maps skip protobuf's copies (proto/wire.py): the request decoder of each.
TENSOR_METHODS = {"Run": wire.Decoder(pb.RunRequest), "Train": TRAIN_DECODER}
RUN_TENSORS = tuple(wire.tensor_map_fields(pb.RunRequest).values())  # feeds, output_grads


def add_to_server(servicer: "GradServeServicer", server: grpc.Server) -> None:
    """Serve ``servicer`` on ``server``, as the generated add_GradServeServicer_to_server does, except that
    TENSOR_METHODS take a wire.Decoded request and answer with a wire.Encoded response."""
    service = pb.DESCRIPTOR.services_by_name["GradServe"]
    handlers = {}
    for method in service.methods:
        decoder = TENSOR_METHODS.get(method.name)
        if decoder is not None:
            deserialize, serialize = decoder.decode, wire.serialize
        elif method.name == "RunStream":
            deserialize, serialize = streaming.deserialize, streaming.serialize
        elif method.name == "Session":
            deserialize, serialize = session_servicer.DESERIALIZE, session_servicer.SERIALIZE
        else:
            deserialize = message_factory.GetMessageClass(method.input_type).FromString
            serialize = message_factory.GetMessageClass(method.output_type).SerializeToString
        factory = KINDS[method.client_streaming, method.server_streaming].factory
        handlers[method.name] = factory(getattr(servicer, method.name), request_deserializer=deserialize,
                                        response_serializer=serialize)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    server.add_registered_method_handlers(service.full_name, handlers)


class GradServeServicer(pb_grpc.GradServeServicer):
    def __init__(self, service: Service, guard: StreamGuard | None = None):
        self.service = service
        self.guard = guard  # admits a stream's tensor bytes (the memory budget); unary calls are admitted by it too
        self._layers = convert.list_layers_response(service.registry)
        self.Session = session_servicer.SessionHandler(service, self._plan, self._stopper, replica_id)

    def _stopper(self, context):
        return stopper(context, self.service.limits.max_call_seconds)

    def _plan(self, ref: pb.GraphRef):
        kind = ref.WhichOneof("ref")
        if kind == "graph":
            return self.service.plan(convert.graph_from_proto(ref.graph))
        if kind in ("graph_id", "name"):
            return self.service.plan(getattr(ref, kind))
        raise GraphError("the request names no graph: set graph.graph, graph.graph_id or graph.name")

    @handled
    def ListLayers(self, request, context):
        return self._layers

    @handled
    def RegisterGraph(self, request, context):
        if request.version and not request.name:
            raise EngineError("a version needs a name: set name as well, or leave version empty")
        plan = self.service.register(convert.graph_from_proto(request.graph), request.name, request.version)
        return pb.RegisterGraphResponse(graph_id=plan.graph_id)

    @handled
    def Forward(self, request, context):
        plan = self._plan(request.graph)
        outputs, session_id = self.service.forward(
            plan, from_tensor_map(request.feeds, "feed"), request.keep_for_backward, request.training,
            request.seed if request.HasField("seed") else None, self._stopper(context),
        )
        response = pb.ForwardResponse(session_id=session_id, graph_id=plan.graph_id)
        try:
            to_tensor_map(outputs, response.outputs)
        except Exception:
            self.service.release(session_id)  # the caller never learns this id: keep no session it cannot use
            raise
        return response

    @handled
    def Backward(self, request, context):
        grads = self.service.backward(
            request.session_id, from_tensor_map(request.output_grads, "output gradient"),
            list(request.wrt) or None, request.retain, self._stopper(context),
        )
        response = pb.BackwardResponse()
        to_tensor_map(grads, response.grads)
        return response

    @handled
    def ReleaseSession(self, request, context):
        return pb.ReleaseSessionResponse(released=self.service.release(request.session_id))

    @handled
    def Run(self, request: wire.Decoded, context) -> wire.Encoded:
        return wire.encode(*self._run(request.message, request.tensors, context))

    def RunStream(self, chunks, context):
        """Run with the tensors in chunks (proto/streaming.py); errors end the stream as Run's would."""
        context.set_trailing_metadata(((REPLICA_KEY, replica_id()),))
        try:
            request, tensors = streaming.receive(
                chunks, "request", RUN_TENSORS, self.service.limits.check_sizes,
                lambda nbytes: self._admit(context, nbytes, f"a RunStream of {nbytes} tensor bytes"))
            response = streaming.send("response", *self._run(request, tensors, context))
        except Exception as exc:  # noqa: BLE001 - every failure becomes a status, never a crash
            # Already ended while reading: an undecodable chunk (server/rpc/undecodable.py), or gRPC's RpcError
            # for a call the client left or the stream guard ended (server/rpc/streams.py).
            if context.code() is not None or isinstance(exc, grpc.RpcError):
                raise
            status.abort(context, exc)
        yield from response

    def _admit(self, context, nbytes: int, what: str) -> None:
        if self.guard is not None:
            self.guard.admit(context, nbytes, what)

    def _run(self, request: pb.RunRequest, tensors: dict, context) -> tuple[pb.RunResponse, dict]:
        plan = self._plan(request.graph)
        wrt = engine.FORWARD_ONLY if request.no_grad else (list(request.wrt) or None)
        args = (plan, from_tensor_map(tensors["feeds"], "feed"),
                from_tensor_map(tensors["output_grads"], "output gradient"),
                wrt, request.training, request.seed if request.HasField("seed") else None, self._stopper(context))
        if request.trace:
            outputs, grads, values, value_grads = self.service.trace(*args)
            return pb.RunResponse(graph_id=plan.graph_id), {"outputs": outputs, "grads": grads, "values": values,
                                                             "value_grads": value_grads}
        outputs, grads = self.service.run(*args)
        return pb.RunResponse(graph_id=plan.graph_id), {"outputs": outputs, "grads": grads}

    def Train(self, requests, context):
        """The Train stream (server/rpc/train_servicer.py)."""
        return serve_train(self, requests, context, replica_id())

    @handled
    def CheckGradients(self, request, context):
        plan = self._plan(request.graph)
        checks = self.service.check_gradients(
            plan, from_tensor_map(request.feeds, "feed"), list(request.wrt) or None,
            from_tensor_map(request.output_grads, "output gradient"), request.eps, self._stopper(context),
        )
        response = pb.CheckGradientsResponse()
        for check in checks:
            item = response.checks.add(name=check.name, max_abs_diff=check.max_abs_diff,
                                       mean_abs_diff=check.mean_abs_diff)
            to_tensor(check.numerical, item.numerical)
            to_tensor(check.backprop, item.backprop)
        return response

