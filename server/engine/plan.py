"""Validate a GraphSpec against the registry and compile it into an execution Plan."""

from __future__ import annotations

import functools
import operator
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Protocol

import numpy as np

from gradserve.plugins import Layer, SchemaError
from gradserve.server.engine.errors import (
    ArityError,
    AttributeValueError,
    CycleError,
    GraphError,
    LimitError,
    NameConflictError,
    UnknownOpError,
)
from gradserve.server.engine.spec import GraphSpec, InputSpec


class LayerEntry(Protocol):
    cls: type[Layer]


class Layers(Protocol):
    """Where compile_graph finds layer classes by op name (the service's Registry is one)."""

    def get(self, op: str) -> LayerEntry | None: ...

    def names(self) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class Step:
    """One node, ready to run: its layer class, bound attributes and value slots."""

    node: str
    op: str
    cls: type[Layer]
    attrs: dict
    in_slots: tuple[int, ...]
    out_slots: tuple[int, ...]
    grad_mask: tuple[bool, ...]  # which inputs are differentiable
    arity: int = field(init=False)  # len(in_slots)
    out_slot: int | None = field(init=False)  # the one output's slot (most layers), else None
    grad_slots: tuple[tuple[int, int], ...] = field(init=False)  # (position, slot) of each differentiable input
    gather: Callable[[list], tuple] = field(init=False, repr=False, compare=False)  # values -> forward's args
    new: Callable[[], Layer] = field(init=False, repr=False, compare=False)  # a fresh layer instance

    def __post_init__(self):
        object.__setattr__(self, "gather", _gatherer(self.in_slots))
        object.__setattr__(self, "new", _instantiator(self.cls, self.attrs))
        object.__setattr__(self, "arity", len(self.in_slots))
        object.__setattr__(self, "out_slot", self.out_slots[0] if len(self.out_slots) == 1 else None)
        object.__setattr__(self, "grad_slots", tuple(
            (position, slot) for position, (slot, differentiable) in enumerate(zip(self.in_slots, self.grad_mask))
            if differentiable))


def _gatherer(slots: tuple[int, ...]) -> Callable[[list], tuple]:
    """A fast ``lambda values: tuple(values[s] for s in slots)``: the engine calls it once per node."""
    if len(slots) > 1:
        return operator.itemgetter(*slots)
    if slots:
        only = slots[0]
        return lambda values: (values[only],)
    return lambda values: ()


def _instantiator(cls: type[Layer], attrs: dict) -> Callable[[], Layer]:
    """A fast ``lambda: cls(**attrs)``: the engine makes one instance per node per pass.

    Layer's own ``__init__`` only copies the attributes into the instance's ``__dict__``; a class that keeps
    it is made without the keyword-argument call (half the cost on a 1-element chain). A class with its own
    ``__new__`` or ``__init__`` is called as written.
    """
    if cls.__new__ is not object.__new__ or cls.__init__ is not Layer.__init__:
        return functools.partial(cls, **attrs)
    if not attrs:
        return functools.partial(object.__new__, cls)

    def new():
        layer = object.__new__(cls)
        layer.__dict__.update(attrs)
        return layer

    return new


class BackwardStep(NamedTuple):
    """One step of a backward pass, for one set of wrt inputs."""

    index: int  # the step's position in Plan.steps (and of its layer instance in a Pass)
    step: Step
    grad_slots: tuple[tuple[int, int], ...]  # (position, slot) of the input gradients that lead to a wrt input
    needs_input_grad: tuple[bool, ...] | None  # what the layer is told it must compute; None: every gradient


@dataclass(frozen=True)
class SizeLimits:
    """What one pass may compute: elements of any one value, and of all its values together."""

    max_tensor_elements: int
    max_pass_elements: int


@dataclass
class Plan:
    """A validated graph in topological order, with every name resolved to a slot index."""

    graph_id: str
    spec: GraphSpec
    inputs: tuple[InputSpec, ...]
    input_slots: dict[str, int]
    output_slots: dict[str, int]
    steps: tuple[Step, ...]
    n_slots: int
    slot_names: tuple[str, ...]
    differentiable_inputs: frozenset[str] = frozenset()  # inputs some node reads in a differentiable position
    sizes: SizeLimits | None = None  # checked before every pass (shapes.check_sizes); None: unchecked
    nbytes: int = 0  # what the plan and its spec keep in memory, estimated (estimated_plan_bytes)
    _backward_cache: dict = field(default_factory=dict, repr=False)
    checked_signatures: dict = field(default_factory=dict, repr=False)  # feed signatures within `sizes`
    # Worked out once here so that a Run does not: each input's (spec, slot, numpy dtype), the differentiable
    # inputs' slots by name, and the backward steps when every one of them is differentiated.
    feed_checks: tuple[tuple[InputSpec, int, np.dtype | None], ...] = field(init=False, repr=False)
    differentiable_slots: dict[str, int] = field(init=False, repr=False)
    all_backward_steps: tuple[BackwardStep, ...] = field(init=False, repr=False)
    shape_from_values: bool = field(init=False, repr=False)  # some step's output shape follows input values

    def __post_init__(self):
        self.feed_checks = tuple((inp, self.input_slots[inp.name], None if inp.dtype is None else np.dtype(inp.dtype))
                                 for inp in self.inputs)
        self.differentiable_slots = {name: slot for name, slot in self.input_slots.items()
                                     if name in self.differentiable_inputs}
        self.all_backward_steps = self.backward_steps(frozenset(self.differentiable_slots.values()))
        self.shape_from_values = any(getattr(step.cls, "shape_from_values", False) for step in self.steps)

    def backward_steps(self, wrt_slots: frozenset[int], every_gradient: bool = False) -> tuple[BackwardStep, ...]:
        """The steps that lie on a path from a wrt input, in reverse order (cached), each with the parts
        backward reads: the gradient slots that lead to a wrt input, and the layer's ``needs_input_grad``
        (None when it needs them all). ``every_gradient``: every differentiable input's (for tracing)."""
        key = (wrt_slots, every_gradient)
        cached = self._backward_cache.get(key)
        if cached is None:
            live = set(wrt_slots)  # the values whose gradient leads to a wrt input
            needed = []
            for index, step in enumerate(self.steps):
                uses = tuple(m and s in live for s, m in zip(step.in_slots, step.grad_mask))
                if not any(uses):
                    continue
                live.update(step.out_slots)
                if every_gradient or uses == step.grad_mask:
                    needed.append(BackwardStep(index, step, step.grad_slots, None))
                else:  # an input that is data, not a parameter (Affine's x): its layer may skip that gradient
                    grad_slots = tuple((position, slot) for position, slot in step.grad_slots if uses[position])
                    needed.append(BackwardStep(index, step, grad_slots, uses))
            cached = self._backward_cache[key] = tuple(reversed(needed))
        return cached


def compile_graph(spec: GraphSpec, registry: Layers, max_nodes: int | None = None,
                  sizes: SizeLimits | None = None) -> Plan:
    """Check every rule a graph must follow and return its Plan; raise a GraphError naming the node.

    With ``sizes``, an attribute list longer than max-tensor-elements is refused here, and every pass of the
    plan has its values' sizes checked before it runs.
    """
    if max_nodes is not None and len(spec.nodes) > max_nodes:
        raise LimitError(f"graph has {len(spec.nodes)} nodes, over the max-graph-nodes limit of {max_nodes}")
    producer: dict[str, str | None] = {}  # value name -> node that defines it (None: a graph input)
    for inp in spec.inputs:
        _check_input(inp)
        if inp.name in producer:
            raise NameConflictError(f"graph input {inp.name!r} is declared twice")
        producer[inp.name] = None

    bound = []
    node_names = set()
    for node in spec.nodes:
        if not node.name:
            raise GraphError(f"a node with op {node.op!r} has no name; every node needs a unique name")
        if node.name in node_names:
            raise NameConflictError("two nodes share this name; node names must be unique", node.name)
        node_names.add(node.name)
        entry = registry.get(node.op)
        if entry is None:
            raise UnknownOpError(
                f"unknown op {node.op!r}; the layers this server has are: {', '.join(registry.names())}", node.name
            )
        cls = entry.cls
        if sizes is not None:
            _check_attribute_sizes(node, sizes.max_tensor_elements)
        try:
            attrs = cls.bind_attributes(node.attrs)
        except SchemaError as exc:
            raise AttributeValueError(str(exc), node.name) from None
        if len(node.inputs) != len(cls.inputs):
            raise ArityError(
                f"{node.op} takes {len(cls.inputs)} inputs ({', '.join(cls.inputs)}), got {len(node.inputs)}",
                node.name,
            )
        outputs = node.outputs or _default_outputs(node.name, cls)
        if len(outputs) != len(cls.outputs):
            raise ArityError(
                f"{node.op} has {len(cls.outputs)} outputs ({', '.join(cls.outputs)}), the node names {len(outputs)}",
                node.name,
            )
        for value in outputs:
            if value in producer:
                owner = producer[value]
                where = "a graph input" if owner is None else f"an output of node {owner!r}"
                raise NameConflictError(f"output value {value!r} is already {where}", node.name)
            producer[value] = node.name
        bound.append((node, cls, attrs, outputs))

    for node, _, _, _ in bound:
        for value in node.inputs:
            if value not in producer:
                raise NameConflictError(
                    f"input {value!r} is neither a graph input nor any node's output (a dangling name)", node.name
                )

    order = _topological_order(bound, producer)
    slot_names = [inp.name for inp in spec.inputs] + [v for _, _, _, outs in bound for v in outs]
    slot = {name: i for i, name in enumerate(slot_names)}
    steps = []
    for index in order:
        node, cls, attrs, outputs = bound[index]
        diff = set(cls.differentiable_inputs())
        steps.append(Step(
            node=node.name, op=node.op, cls=cls, attrs=attrs,
            in_slots=tuple(slot[v] for v in node.inputs),
            out_slots=tuple(slot[v] for v in outputs),
            grad_mask=tuple(name in diff for name in cls.inputs),
        ))

    output_slots = {}
    for out in spec.outputs:
        if out.value not in slot:
            raise GraphError(f"graph output {out.name!r} names value {out.value!r}, which nothing defines")
        if out.name in output_slots:
            raise NameConflictError(f"graph output name {out.name!r} is used twice")
        output_slots[out.name] = slot[out.value]
    if not output_slots:
        raise GraphError("the graph has no outputs; name at least one")

    read_differentiably = {s for step in steps for s, m in zip(step.in_slots, step.grad_mask) if m}
    return Plan(
        graph_id=spec.graph_id(), spec=spec, inputs=spec.inputs,
        differentiable_inputs=frozenset(i.name for i in spec.inputs if slot[i.name] in read_differentiably),
        input_slots={inp.name: slot[inp.name] for inp in spec.inputs},
        output_slots=output_slots, steps=tuple(steps), n_slots=len(slot_names), slot_names=tuple(slot_names),
        sizes=sizes, nbytes=estimated_plan_bytes(spec),
    )


#: Bytes a plan and its spec keep per node, per attribute list item, per character of a name: measured with
#: tracemalloc on chains of 1,000 and 10,000 Relu nodes (1,370 bytes a node) and on a Constant of 1M floats
#: (40 bytes a float), rounded up.
PLAN_BYTES_PER_NODE = 1_500
PLAN_BYTES_PER_ATTR_ITEM = 40
PLAN_BYTES_PER_NAME_CHAR = 3


def estimated_plan_bytes(spec: GraphSpec) -> int:
    """What compiling ``spec`` keeps alive (its nodes, steps, slots, attributes), estimated from its size."""
    names = sum(len(i.name) for i in spec.inputs) + sum(len(o.name) + len(o.value) for o in spec.outputs)
    items = 0
    for node in spec.nodes:
        names += len(node.name) + len(node.op) + sum(map(len, node.inputs)) + sum(map(len, node.outputs))
        items += sum(len(v) if isinstance(v, (tuple, list, str)) else 1 for v in node.attrs.values())
    return (PLAN_BYTES_PER_NODE * (len(spec.nodes) + len(spec.inputs)) + PLAN_BYTES_PER_ATTR_ITEM * items
            + PLAN_BYTES_PER_NAME_CHAR * names)


def _check_attribute_sizes(node, max_elements: int) -> None:
    """Refuse an attribute list (a Constant's value) longer than one tensor may be."""
    for name, value in node.attrs.items():
        if isinstance(value, (tuple, list)) and len(value) > max_elements:
            raise LimitError(f"attribute {name!r} has {len(value)} elements, over the max-tensor-elements limit "
                             f"of {max_elements}", node.name)


def _check_input(inp: InputSpec) -> None:
    if not inp.name:
        raise GraphError("a graph input has an empty name")
    if inp.dtype is not None and not _is_dtype_name(inp.dtype):
        raise GraphError(f"graph input {inp.name!r} has dtype {inp.dtype!r}, not the name of a numeric or bool "
                         "numpy dtype (float32, int64, bool, ...)")
    if inp.shape is not None and any(d < -1 for d in inp.shape):
        raise GraphError(f"graph input {inp.name!r} has shape {list(inp.shape)}; dimensions are >= 0, or -1 for any")


def _is_dtype_name(name: str) -> bool:
    """Whether ``name`` is a numpy dtype's own name, of a number or a bool. Which of those travel is the wire's
    business (gradserve.proto.dtypes): the engine takes any array numpy computes with."""
    try:
        dtype = np.dtype(name)
    except (TypeError, ValueError):
        return False
    return dtype.name == name and dtype.kind in "biuf"


def _default_outputs(node_name: str, cls: type[Layer]) -> tuple[str, ...]:
    if len(cls.outputs) == 1:
        return (node_name,)
    return tuple(f"{node_name}:{out}" for out in cls.outputs)


def _topological_order(bound, producer) -> list[int]:
    """Kahn's algorithm, stable in the given node order; raise CycleError naming a node on a cycle."""
    index_of = {node.name: i for i, (node, _, _, _) in enumerate(bound)}
    indegree = [0] * len(bound)
    users: list[list[int]] = [[] for _ in bound]
    for i, (node, _, _, _) in enumerate(bound):
        for value in node.inputs:
            owner = producer[value]
            if owner is not None:
                indegree[i] += 1
                users[index_of[owner]].append(i)
    ready = deque(i for i, d in enumerate(indegree) if d == 0)
    order = []
    while ready:
        i = ready.popleft()
        order.append(i)
        for j in users[i]:
            indegree[j] -= 1
            if indegree[j] == 0:
                ready.append(j)
    if len(order) != len(bound):
        stuck = next(bound[i][0].name for i, d in enumerate(indegree) if d > 0)
        raise CycleError("the node is on a cycle: its inputs depend on its own outputs", stuck)
    return order


def check_feed(inp: InputSpec, value: np.ndarray, dtype: np.dtype | None = None) -> str | None:
    """Why ``value`` does not fit graph input ``inp`` (whose dtype is ``dtype``, when given), or None when it does."""
    if inp.dtype is not None and value.dtype != (dtype or inp.dtype) and value.dtype.name != inp.dtype:
        return f"input {inp.name!r} expects dtype {inp.dtype}, got {value.dtype.name}"
    if inp.shape is not None:
        if len(inp.shape) != value.ndim or any(d not in (-1, n) for d, n in zip(inp.shape, value.shape)):
            return f"input {inp.name!r} expects shape {list(inp.shape)} (-1 = any), got {list(value.shape)}"
    return None
