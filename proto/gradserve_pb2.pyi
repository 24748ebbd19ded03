from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DTYPE_UNSPECIFIED: _ClassVar[DType]
    FLOAT32: _ClassVar[DType]
    FLOAT64: _ClassVar[DType]
    INT32: _ClassVar[DType]
    INT64: _ClassVar[DType]
    BOOL: _ClassVar[DType]
    FLOAT16: _ClassVar[DType]
    INT8: _ClassVar[DType]
    INT16: _ClassVar[DType]
    UINT8: _ClassVar[DType]

class SessionStep(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SESSION_STEP_UNSPECIFIED: _ClassVar[SessionStep]
    SESSION_OPEN: _ClassVar[SessionStep]
    SESSION_FORWARD: _ClassVar[SessionStep]
    SESSION_BACKWARD: _ClassVar[SessionStep]
    SESSION_RUN: _ClassVar[SessionStep]
    SESSION_RELEASE: _ClassVar[SessionStep]
DTYPE_UNSPECIFIED: DType
FLOAT32: DType
FLOAT64: DType
INT32: DType
INT64: DType
BOOL: DType
FLOAT16: DType
INT8: DType
INT16: DType
UINT8: DType
SESSION_STEP_UNSPECIFIED: SessionStep
SESSION_OPEN: SessionStep
SESSION_FORWARD: SessionStep
SESSION_BACKWARD: SessionStep
SESSION_RUN: SessionStep
SESSION_RELEASE: SessionStep

class Tensor(_message.Message):
    __slots__ = ("dtype", "shape", "data")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    dtype: DType
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, dtype: _Optional[_Union[DType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class Ints(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, values: _Optional[_Iterable[int]] = ...) -> None: ...

class Floats(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class AttrValue(_message.Message):
    __slots__ = ("i", "f", "b", "s", "ints", "floats")
    I_FIELD_NUMBER: _ClassVar[int]
    F_FIELD_NUMBER: _ClassVar[int]
    B_FIELD_NUMBER: _ClassVar[int]
    S_FIELD_NUMBER: _ClassVar[int]
    INTS_FIELD_NUMBER: _ClassVar[int]
    FLOATS_FIELD_NUMBER: _ClassVar[int]
    i: int
    f: float
    b: bool
    s: str
    ints: Ints
    floats: Floats
    def __init__(self, i: _Optional[int] = ..., f: _Optional[float] = ..., b: bool = ..., s: _Optional[str] = ..., ints: _Optional[_Union[Ints, _Mapping]] = ..., floats: _Optional[_Union[Floats, _Mapping]] = ...) -> None: ...

class ValueInfo(_message.Message):
    __slots__ = ("name", "dtype", "shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: DType
    shape: Shape
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[_Union[DType, str]] = ..., shape: _Optional[_Union[Shape, _Mapping]] = ...) -> None: ...

class Shape(_message.Message):
    __slots__ = ("dims",)
    DIMS_FIELD_NUMBER: _ClassVar[int]
    dims: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, dims: _Optional[_Iterable[int]] = ...) -> None: ...

class Node(_message.Message):
    __slots__ = ("name", "op", "inputs", "outputs", "attrs")
    class AttrsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: AttrValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[AttrValue, _Mapping]] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    ATTRS_FIELD_NUMBER: _ClassVar[int]
    name: str
    op: str
    inputs: _containers.RepeatedScalarFieldContainer[str]
    outputs: _containers.RepeatedScalarFieldContainer[str]
    attrs: _containers.MessageMap[str, AttrValue]
    def __init__(self, name: _Optional[str] = ..., op: _Optional[str] = ..., inputs: _Optional[_Iterable[str]] = ..., outputs: _Optional[_Iterable[str]] = ..., attrs: _Optional[_Mapping[str, AttrValue]] = ...) -> None: ...

class Output(_message.Message):
    __slots__ = ("name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: str
    def __init__(self, name: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class Graph(_message.Message):
    __slots__ = ("inputs", "nodes", "outputs")
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    inputs: _containers.RepeatedCompositeFieldContainer[ValueInfo]
    nodes: _containers.RepeatedCompositeFieldContainer[Node]
    outputs: _containers.RepeatedCompositeFieldContainer[Output]
    def __init__(self, inputs: _Optional[_Iterable[_Union[ValueInfo, _Mapping]]] = ..., nodes: _Optional[_Iterable[_Union[Node, _Mapping]]] = ..., outputs: _Optional[_Iterable[_Union[Output, _Mapping]]] = ...) -> None: ...

class GraphRef(_message.Message):
    __slots__ = ("graph", "graph_id", "name")
    GRAPH_FIELD_NUMBER: _ClassVar[int]
    GRAPH_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    graph: Graph
    graph_id: str
    name: str
    def __init__(self, graph: _Optional[_Union[Graph, _Mapping]] = ..., graph_id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class ListLayersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AttrSchema(_message.Message):
    __slots__ = ("name", "type", "required", "default", "doc")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_FIELD_NUMBER: _ClassVar[int]
    DOC_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    required: bool
    default: AttrValue
    doc: str
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., required: bool = ..., default: _Optional[_Union[AttrValue, _Mapping]] = ..., doc: _Optional[str] = ...) -> None: ...

class LayerSchema(_message.Message):
    __slots__ = ("name", "doc", "inputs", "outputs", "differentiable", "attributes", "plugin", "distribution", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DOC_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    DIFFERENTIABLE_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    PLUGIN_FIELD_NUMBER: _ClassVar[int]
    DISTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    doc: str
    inputs: _containers.RepeatedScalarFieldContainer[str]
    outputs: _containers.RepeatedScalarFieldContainer[str]
    differentiable: _containers.RepeatedScalarFieldContainer[str]
    attributes: _containers.RepeatedCompositeFieldContainer[AttrSchema]
    plugin: str
    distribution: str
    version: str
    def __init__(self, name: _Optional[str] = ..., doc: _Optional[str] = ..., inputs: _Optional[_Iterable[str]] = ..., outputs: _Optional[_Iterable[str]] = ..., differentiable: _Optional[_Iterable[str]] = ..., attributes: _Optional[_Iterable[_Union[AttrSchema, _Mapping]]] = ..., plugin: _Optional[str] = ..., distribution: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class PluginInfo(_message.Message):
    __slots__ = ("name", "distribution", "version", "status", "reason", "layers")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DISTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    name: str
    distribution: str
    version: str
    status: str
    reason: str
    layers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., distribution: _Optional[str] = ..., version: _Optional[str] = ..., status: _Optional[str] = ..., reason: _Optional[str] = ..., layers: _Optional[_Iterable[str]] = ...) -> None: ...

class ListLayersResponse(_message.Message):
    __slots__ = ("layers", "plugins")
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    PLUGINS_FIELD_NUMBER: _ClassVar[int]
    layers: _containers.RepeatedCompositeFieldContainer[LayerSchema]
    plugins: _containers.RepeatedCompositeFieldContainer[PluginInfo]
    def __init__(self, layers: _Optional[_Iterable[_Union[LayerSchema, _Mapping]]] = ..., plugins: _Optional[_Iterable[_Union[PluginInfo, _Mapping]]] = ...) -> None: ...

class RegisterGraphRequest(_message.Message):
    __slots__ = ("graph", "name", "version")
    GRAPH_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    graph: Graph
    name: str
    version: str
    def __init__(self, graph: _Optional[_Union[Graph, _Mapping]] = ..., name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class RegisterGraphResponse(_message.Message):
    __slots__ = ("graph_id",)
    GRAPH_ID_FIELD_NUMBER: _ClassVar[int]
    graph_id: str
    def __init__(self, graph_id: _Optional[str] = ...) -> None: ...

class ForwardRequest(_message.Message):
    __slots__ = ("graph", "feeds", "keep_for_backward", "training", "seed")
    class FeedsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...
    GRAPH_FIELD_NUMBER: _ClassVar[int]
    FEEDS_FIELD_NUMBER: _ClassVar[int]
    KEEP_FOR_BACKWARD_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    graph: GraphRef
    feeds: _containers.MessageMap[str, Tensor]
    keep_for_backward: bool
    training: bool
    seed: int
    def __init__(self, graph: _Optional[_Union[GraphRef, _Mapping]] = ..., feeds: _Optional[_Mapping[str, Tensor]] = ..., keep_for_backward: bool = ..., training: bool = ..., seed: _Optional[int] = ...) -> None: ...

class ForwardResponse(_message.Message):
    __slots__ = ("outputs", "session_id", "graph_id")
    class OutputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    GRAPH_ID_FIELD_NUMBER: _ClassVar[int]
    outputs: _containers.MessageMap[str, Tensor]
    session_id: str
    graph_id: str
    def __init__(self, outputs: _Optional[_Mapping[str, Tensor]] = ..., session_id: _Optional[str] = ..., graph_id: _Optional[str] = ...) -> None: ...

class BackwardRequest(_message.Message):
    __slots__ = ("session_id", "output_grads", "wrt", "retain")
    class OutputGradsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_GRADS_FIELD_NUMBER: _ClassVar[int]
    WRT_FIELD_NUMBER: _ClassVar[int]
    RETAIN_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    output_grads: _containers.MessageMap[str, Tensor]
    wrt: _containers.RepeatedScalarFieldContainer[str]
    retain: bool
    def __init__(self, session_id: _Optional[str] = ..., output_grads: _Optional[_Mapping[str, Tensor]] = ..., wrt: _Optional[_Iterable[str]] = ..., retain: bool = ...) -> None: ...

class BackwardResponse(_message.Message):
    __slots__ = ("grads",)
    class GradsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...
    GRADS_FIELD_NUMBER: _ClassVar[int]
    grads: _containers.MessageMap[str, Tensor]
    def __init__(self, grads: _Optional[_Mapping[str, Tensor]] = ...) -> None: ...

class ReleaseSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class ReleaseSessionResponse(_message.Message):
    __slots__ = ("released",)
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    released: bool
    def __init__(self, released: bool = ...) -> None: ...

class RunRequest(_message.Message):
    __slots__ = ("graph", "feeds", "output_grads", "wrt", "training", "seed", "no_grad", "trace")
    class FeedsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...
    class OutputGradsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...
    GRAPH_FIELD_NUMBER: _ClassVar[int]
    FEEDS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_GRADS_FIELD_NUMBER: _ClassVar[int]
    WRT_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    NO_GRAD_FIELD_NUMBER: _ClassVar[int]
    TRACE_FIELD_NUMBER: _ClassVar[int]
    graph: GraphRef
    feeds: _containers.MessageMap[str, Tensor]
    output_grads: _containers.MessageMap[str, Tensor]
    wrt: _containers.RepeatedScalarFieldContainer[str]
    training: bool
    seed: int
    no_grad: bool
    trace: bool
    def __init__(self, graph: _Optional[_Union[GraphRef, _Mapping]] = ..., feeds: _Optional[_Mapping[str, Tensor]] = ..., output_grads: _Optional[_Mapping[str, Tensor]] = ..., wrt: _Optional[_Iterable[str]] = ..., training: bool = ..., seed: _Optional[int] = ..., no_grad: bool = ..., trace: bool = ...) -> None: ...

class RunResponse(_message.Message):
    __slots__ = ("outputs", "grads", "graph_id", "values", "value_grads")
    class OutputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...
    class GradsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...
    class ValueGradsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    GRADS_FIELD_NUMBER: _ClassVar[int]
    GRAPH_ID_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    VALUE_GRADS_FIELD_NUMBER: _ClassVar[int]
    outputs: _containers.MessageMap[str, Tensor]
    grads: _containers.MessageMap[str, Tensor]
    graph_id: str
    values: _containers.MessageMap[str, Tensor]
    value_grads: _containers.MessageMap[str, Tensor]
    def __init__(self, outputs: _Optional[_Mapping[str, Tensor]] = ..., grads: _Optional[_Mapping[str, Tensor]] = ..., graph_id: _Optional[str] = ..., values: _Optional[_Mapping[str, Tensor]] = ..., value_grads: _Optional[_Mapping[str, Tensor]] = ...) -> None: ...

class TensorChunk(_message.Message):
    __slots__ = ("field", "name", "data")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    field: str
    name: str
    data: bytes
    def __init__(self, field: _Optional[str] = ..., name: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class RunChunk(_message.Message):
    __slots__ = ("request", "response", "chunk")
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    request: RunRequest
    response: RunResponse
    chunk: TensorChunk
    def __init__(self, request: _Optional[_Union[RunRequest, _Mapping]] = ..., response: _Optional[_Union[RunResponse, _Mapping]] = ..., chunk: _Optional[_Union[TensorChunk, _Mapping]] = ...) -> None: ...

class CheckGradientsRequest(_message.Message):
    __slots__ = ("graph", "feeds", "output_grads", "wrt", "eps")
    class FeedsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...
    class OutputGradsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...
    GRAPH_FIELD_NUMBER: _ClassVar[int]
    FEEDS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_GRADS_FIELD_NUMBER: _ClassVar[int]
    WRT_FIELD_NUMBER: _ClassVar[int]
    EPS_FIELD_NUMBER: _ClassVar[int]
    graph: GraphRef
    feeds: _containers.MessageMap[str, Tensor]
    output_grads: _containers.MessageMap[str, Tensor]
    wrt: _containers.RepeatedScalarFieldContainer[str]
    eps: float
    def __init__(self, graph: _Optional[_Union[GraphRef, _Mapping]] = ..., feeds: _Optional[_Mapping[str, Tensor]] = ..., output_grads: _Optional[_Mapping[str, Tensor]] = ..., wrt: _Optional[_Iterable[str]] = ..., eps: _Optional[float] = ...) -> None: ...

class GradientCheck(_message.Message):
    __slots__ = ("name", "max_abs_diff", "mean_abs_diff", "numerical", "backprop")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MAX_ABS_DIFF_FIELD_NUMBER: _ClassVar[int]
    MEAN_ABS_DIFF_FIELD_NUMBER: _ClassVar[int]
    NUMERICAL_FIELD_NUMBER: _ClassVar[int]
    BACKPROP_FIELD_NUMBER: _ClassVar[int]
    name: str
    max_abs_diff: float
    mean_abs_diff: float
    numerical: Tensor
    backprop: Tensor
    def __init__(self, name: _Optional[str] = ..., max_abs_diff: _Optional[float] = ..., mean_abs_diff: _Optional[float] = ..., numerical: _Optional[_Union[Tensor, _Mapping]] = ..., backprop: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class CheckGradientsResponse(_message.Message):
    __slots__ = ("checks",)
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    checks: _containers.RepeatedCompositeFieldContainer[GradientCheck]
    def __init__(self, checks: _Optional[_Iterable[_Union[GradientCheck, _Mapping]]] = ...) -> None: ...

class SessionRequest(_message.Message):
    __slots__ = ("step", "graph", "chunk", "feeds", "output_grads", "wrt", "retain", "training", "seed", "pass_id", "no_grad", "keep_feeds", "patch_indices", "patch_values")
    class FeedsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...
    class OutputGradsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...
    class PatchIndicesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...
    class PatchValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...
    STEP_FIELD_NUMBER: _ClassVar[int]
    GRAPH_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    FEEDS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_GRADS_FIELD_NUMBER: _ClassVar[int]
    WRT_FIELD_NUMBER: _ClassVar[int]
    RETAIN_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    PASS_ID_FIELD_NUMBER: _ClassVar[int]
    NO_GRAD_FIELD_NUMBER: _ClassVar[int]
    KEEP_FEEDS_FIELD_NUMBER: _ClassVar[int]
    PATCH_INDICES_FIELD_NUMBER: _ClassVar[int]
    PATCH_VALUES_FIELD_NUMBER: _ClassVar[int]
    step: SessionStep
    graph: GraphRef
    chunk: TensorChunk
    feeds: _containers.MessageMap[str, Tensor]
    output_grads: _containers.MessageMap[str, Tensor]
    wrt: _containers.RepeatedScalarFieldContainer[str]
    retain: bool
    training: bool
    seed: int
    pass_id: int
    no_grad: bool
    keep_feeds: bool
    patch_indices: _containers.MessageMap[str, Tensor]
    patch_values: _containers.MessageMap[str, Tensor]
    def __init__(self, step: _Optional[_Union[SessionStep, str]] = ..., graph: _Optional[_Union[GraphRef, _Mapping]] = ..., chunk: _Optional[_Union[TensorChunk, _Mapping]] = ..., feeds: _Optional[_Mapping[str, Tensor]] = ..., output_grads: _Optional[_Mapping[str, Tensor]] = ..., wrt: _Optional[_Iterable[str]] = ..., retain: bool = ..., training: bool = ..., seed: _Optional[int] = ..., pass_id: _Optional[int] = ..., no_grad: bool = ..., keep_feeds: bool = ..., patch_indices: _Optional[_Mapping[str, Tensor]] = ..., patch_values: _Optional[_Mapping[str, Tensor]] = ...) -> None: ...

class SessionResponse(_message.Message):
    __slots__ = ("status", "graph_id", "chunk", "outputs", "grads", "released", "replica")
    class OutputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...
    class GradsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...
    STATUS_FIELD_NUMBER: _ClassVar[int]
    GRAPH_ID_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    GRADS_FIELD_NUMBER: _ClassVar[int]
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    status: _status_pb2.Status
    graph_id: str
    chunk: TensorChunk
    outputs: _containers.MessageMap[str, Tensor]
    grads: _containers.MessageMap[str, Tensor]
    released: bool
    replica: str
    def __init__(self, status: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., graph_id: _Optional[str] = ..., chunk: _Optional[_Union[TensorChunk, _Mapping]] = ..., outputs: _Optional[_Mapping[str, Tensor]] = ..., grads: _Optional[_Mapping[str, Tensor]] = ..., released: bool = ..., replica: _Optional[str] = ...) -> None: ...
