"""Protobuf messages <-> the engine's plain objects (graphs, attributes, schemas)."""

from __future__ import annotations

from gradserve.plugins import Layer
from gradserve.proto import gradserve_pb2 as pb
from gradserve.proto.attrs import attr_from_proto, attr_to_proto
from gradserve.proto.tensors import dtype_name
from gradserve.server.engine.errors import GraphError
from gradserve.server.engine.spec import GraphSpec, InputSpec, NodeSpec, OutputSpec
from gradserve.server.service.registry import Registry


def graph_from_proto(graph: pb.Graph) -> GraphSpec:
    inputs = []
    for vi in graph.inputs:
        try:
            dtype = dtype_name(vi.dtype) if vi.dtype else None
        except ValueError as exc:
            raise GraphError(f"graph input {vi.name!r}: {exc}") from None
        shape = tuple(vi.shape.dims) if vi.HasField("shape") else None
        inputs.append(InputSpec(vi.name, dtype, shape))
    nodes = tuple(
        NodeSpec(n.name, n.op, tuple(n.inputs), tuple(n.outputs), {k: attr_from_proto(v) for k, v in n.attrs.items()})
        for n in graph.nodes
    )
    outputs = tuple(OutputSpec(o.name or o.value, o.value) for o in graph.outputs)
    return GraphSpec(tuple(inputs), nodes, outputs)


def layer_schema(cls: type[Layer], plugin: str, distribution: str, version: str) -> pb.LayerSchema:
    schema = pb.LayerSchema(
        name=cls.name, doc=cls.doc(), inputs=cls.inputs, outputs=cls.outputs,
        differentiable=cls.differentiable_inputs(), plugin=plugin, distribution=distribution, version=version,
    )
    for name, attr in cls.attributes.items():
        item = schema.attributes.add(name=name, type=attr.type, required=attr.required, doc=attr.doc)
        if not attr.required and attr.default is not None:
            attr_to_proto(attr.default, attr.type, item.default)
    return schema


def list_layers_response(registry: Registry) -> pb.ListLayersResponse:
    response = pb.ListLayersResponse()
    for name in registry.names():
        entry = registry.layers[name]
        response.layers.append(layer_schema(entry.cls, entry.plugin, entry.distribution, entry.version))
    for key in sorted(registry.optimizers):
        entry = registry.optimizers[key]
        response.optimizers.add(name=entry.cls.name, doc=entry.cls.doc(), settings=dict(entry.cls.settings),
                                state=entry.cls.state, plugin=entry.plugin, distribution=entry.distribution,
                                version=entry.version)
    for status in registry.plugins:
        response.plugins.add(**status.as_dict())
    return response
