"""The KServe v2 (`inference.GRPCInferenceService`) servicer: convert, call the models, convert back."""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool

from gradserve.proto import kserve_pb2 as kpb
from gradserve.proto import kserve_pb2_grpc as kpb_grpc
from gradserve.proto.kserve_tensors import add_output, datatype, request_inputs
from gradserve.server.engine.errors import EngineError, UnknownGraphError
from gradserve.server.service.kserve_models import Models
from gradserve.server.service.operations import Service
from gradserve.server.rpc.gradserve_servicer import handled, stopper
from gradserve.server.service.version import gradserve_version

SERVICE_NAME = kpb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
SERVER_NAME = "gradserve"
#: Our extension of the protocol: the `<model>:grad` gradient models (documented in docs/kserve.md).
EXTENSIONS = ("gradients",)
PLATFORM = "gradserve"
# Request parameters that gradserve reads, and Triton's scheduling hints that it may ignore (the call's
# deadline already bounds it, and there is no queue to prioritise).
_RUN_PARAMETERS = {"training": ("bool_param",), "seed": ("int64_param", "uint64_param")}
_IGNORED_PARAMETERS = {"timeout", "priority"}


def add_to_server(service: Service, server) -> None:
    """Serve the KServe v2 protocol for ``service``'s named graphs on ``server``."""
    kpb_grpc.add_GRPCInferenceServiceServicer_to_server(KServeServicer(service), server)


def reflection_pool() -> descriptor_pool.DescriptorPool:
    """A pool for server reflection that finds our KServe file (kept out of the default pool) and all else."""
    return descriptor_pool.DescriptorPool(descriptor_db=_Pools(kpb.DESCRIPTOR.pool, descriptor_pool.Default()))


class KServeServicer(kpb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, service: Service):
        self.models = Models(service)
        self._version = gradserve_version()

    @handled
    def ServerLive(self, request, context):
        return kpb.ServerLiveResponse(live=True)

    @handled
    def ServerReady(self, request, context):
        # Plugins and the graph store are loaded before the server starts answering.
        return kpb.ServerReadyResponse(ready=True)

    @handled
    def ModelReady(self, request, context):
        return kpb.ModelReadyResponse(ready=self.models.find(request.name, request.version) is not None)

    @handled
    def ServerMetadata(self, request, context):
        return kpb.ServerMetadataResponse(name=SERVER_NAME, version=self._version, extensions=EXTENSIONS)

    @handled
    def ModelMetadata(self, request, context):
        model = self.models.get(request.name, request.version)
        response = kpb.ModelMetadataResponse(name=model.name, versions=[model.version], platform=PLATFORM)
        for infos, field in ((model.inputs, response.inputs), (model.outputs, response.outputs)):
            for info in infos:
                field.add(name=info.name, datatype=datatype(info.dtype), shape=info.shape)
        return response

    @handled
    def ModelInfer(self, request, context):
        model = self.models.get(request.model_name, request.model_version)
        for tensor in request.inputs:
            _refuse_tensor_parameters("input", tensor)
        for tensor in request.outputs:
            _refuse_tensor_parameters("output", tensor)
        training, seed = _run_options(request.parameters)
        outputs = self.models.infer(model, request_inputs(request), [o.name for o in request.outputs],
                                    training, seed, stopper(context, self.models.service.limits.max_call_seconds))
        response = kpb.ModelInferResponse(model_name=model.name, model_version=model.version, id=request.id)
        for name, array in outputs.items():
            add_output(response, name, array)
        return response

    @handled
    def RepositoryIndex(self, request, context):
        if request.repository_name:
            raise UnknownGraphError(f"no model repository {request.repository_name!r}: gradserve has one, "
                                    "named '' (leave repository_name empty)")
        response = kpb.RepositoryIndexResponse()
        for name, version in self.models.names():
            response.models.add(name=name, version=version, state="READY")
        return response


def _run_options(parameters) -> tuple[bool, int | None]:
    """(training, seed) from the request's parameters; refuse any parameter gradserve would not honour."""
    training, seed = False, None
    for key, value in parameters.items():
        kind = value.WhichOneof("parameter_choice")
        if key in _IGNORED_PARAMETERS:
            continue
        if key not in _RUN_PARAMETERS:
            raise EngineError(f"request parameter {key!r} is not supported; gradserve reads training (bool) "
                              "and seed (int)")
        if kind not in _RUN_PARAMETERS[key]:
            raise EngineError(f"request parameter {key!r} must be {'a bool' if key == 'training' else 'an int'}, "
                              f"got {kind or 'nothing'}")
        if key == "training":
            training = value.bool_param
        else:
            seed = getattr(value, kind)
            if seed < 0:
                raise EngineError(f"request parameter 'seed' must be >= 0, got {seed}")
    return training, seed


def _refuse_tensor_parameters(kind: str, tensor) -> None:
    if not tensor.parameters:
        return
    key = next(iter(tensor.parameters))
    if key.startswith("shared_memory"):
        raise EngineError(f"{kind} {tensor.name!r} uses shared memory, which gradserve does not offer; "
                          "send the data in the request")
    raise EngineError(f"{kind} {tensor.name!r} has parameter {key!r}; gradserve supports no tensor parameters")


class _Pools:
    """A descriptor database over several pools, first match wins (what DescriptorPool(descriptor_db=) asks)."""

    def __init__(self, *pools: descriptor_pool.DescriptorPool):
        self._pools = pools

    def FindFileByName(self, name: str) -> descriptor_pb2.FileDescriptorProto:  # noqa: N802 - protobuf's API
        return self._find("FindFileByName", name)

    def FindFileContainingSymbol(self, symbol: str) -> descriptor_pb2.FileDescriptorProto:  # noqa: N802
        return self._find("FindFileContainingSymbol", symbol)

    def _find(self, method: str, key: str) -> descriptor_pb2.FileDescriptorProto:
        for pool in self._pools:
            try:
                found = getattr(pool, method)(key)
            except KeyError:
                continue
            proto = descriptor_pb2.FileDescriptorProto()
            found.CopyToProto(proto)
            return proto
        raise KeyError(key)
