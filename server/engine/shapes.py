"""Shape inference over a plan from the layers' own rules: sizes checked before anything is allocated.

Each layer may declare ``output_types`` (its shape rule, see gradserve.plugins.Layer). From the inputs'
shapes and dtypes the rules give every value's, without running anything: the engine refuses a pass whose
values would exceed the size limits before a layer allocates them, and KServe metadata reads output shapes
from the same inference. Past a layer without a rule, shapes are unknown (None) and go unchecked.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from gradserve.plugins import TensorType
from gradserve.server.engine.errors import INPUT_ERRORS, ComputeError, LimitError
from gradserve.server.engine.plan import Plan, SizeLimits

_LOGGER = logging.getLogger(__name__)

#: Two sizes for every free (-1) input dimension: an output dimension that differs between them is free too.
PROBE_SIZES = (2, 3)
#: Feed signatures whose sizes a plan remembers as checked; past this the memory starts over.
_CHECKED_SIGNATURES = 64


@dataclass(frozen=True)
class ValueSpec:
    """A value's dtype name and shape (-1 = any size); None where it cannot be known before a run."""

    name: str
    dtype: str | None
    shape: tuple[int, ...] | None


def infer(plan: Plan, inputs: Sequence[TensorType | None], training: bool = False) -> list[TensorType | None]:
    """Every slot's TensorType from the graph inputs' (in plan.inputs order); None where a rule is missing.

    A rule that refuses its inputs raises a ComputeError naming the node, as forward would have.
    """
    types: list[TensorType | None] = [None] * plan.n_slots
    for inp, known in zip(plan.inputs, inputs):
        types[plan.input_slots[inp.name]] = known
    return _infer_steps(plan, types, training, 0)


def _infer_steps(plan: Plan, types: list, training: bool, start: int) -> list[TensorType | None]:
    """Fill ``types`` for the outputs of plan.steps[start:] from what it holds."""
    for step in plan.steps[start:]:
        ins = [types[s] for s in step.in_slots]
        if any(t is None for t in ins):
            continue
        layer = step.new()
        layer.training = training
        try:
            outs = layer.output_types(*ins)
        except INPUT_ERRORS as exc:
            # worded as forward's own failure would be: the rule refuses what forward would have
            raise ComputeError(f"{step.op}.forward failed on ({_describe(ins)}): {exc}", step.node) from None
        except Exception as exc:  # noqa: BLE001 - a plugin's broken rule leaves sizes unknown, not the call failed
            _LOGGER.warning("shape rule of %s (node %r) failed: %r", step.op, step.node, exc)
            continue
        if outs is None:
            continue
        if not isinstance(outs, tuple) or len(outs) != len(step.out_slots):
            _LOGGER.warning("shape rule of %s returned %r, not %d TensorTypes", step.op, outs, len(step.out_slots))
            continue
        for slot, out in zip(step.out_slots, outs):
            if type(out) is not TensorType or not all(type(d) is int for d in out.shape):  # Python ints: exact
                out = TensorType(tuple(int(d) for d in out[0]), np.dtype(out[1]), getattr(out, "value", None))
            types[slot] = out
    return types


def check_sizes(plan: Plan, values: list, limits: SizeLimits, training: bool = False) -> int | None:
    """Refuse a pass over these fed ``values`` whose outputs would exceed ``limits``, before it runs.

    Each node's outputs (and so their gradients, of the same shapes) must fit max-tensor-elements and all of
    them together max-pass-elements. A plan remembers the feed signatures it has checked: a training loop
    pays for the inference once. Returns the index of the first step whose outputs' sizes are unknown (a
    layer without a shape rule), after which the engine calls ``check_rest``; None when all are known.
    """
    signature = (training, tuple((values[s].shape, values[s].dtype) for s in plan.input_slots.values()))
    checked = plan.checked_signatures
    if signature in checked:
        return checked[signature]
    types = infer(plan, [TensorType(values[s].shape, values[s].dtype, values[s] if plan.shape_from_values else None)
                         for s in plan.input_slots.values()], training)
    unknown = _check(plan, types, limits, 0, 0)
    if plan.shape_from_values:
        return unknown  # the next pass's values may give other shapes
    if len(checked) >= _CHECKED_SIGNATURES:
        checked.clear()
    checked[signature] = unknown
    return unknown


def check_rest(plan: Plan, values: list, limits: SizeLimits, start: int, training: bool = False) -> int | None:
    """``check_sizes`` for plan.steps[start:], from the values computed so far (the pass has run to there)."""
    types = [None if v is None else TensorType(v.shape, v.dtype, v if plan.shape_from_values else None)
             for v in values]
    computed = sum(v.size for v in values if v is not None) - sum(values[s].size for s in plan.input_slots.values())
    return _check(plan, _infer_steps(plan, types, training, start), limits, start, computed)


def _check(plan: Plan, types: list, limits: SizeLimits, start: int, total: int) -> int | None:
    """Raise the LimitError for the first output of plan.steps[start:] over ``limits``; the first unknown step."""
    for index in range(start, len(plan.steps)):
        step = plan.steps[index]
        for slot in step.out_slots:
            kind = types[slot]
            if kind is None:
                return index
            size = math.prod(kind.shape)
            if size > limits.max_tensor_elements:
                raise LimitError(f"{step.op} would output {plan.slot_names[slot]!r} of shape {list(kind.shape)}: "
                                 f"{size} elements, over the max-tensor-elements limit of "
                                 f"{limits.max_tensor_elements}; refused before computing it", step.node)
            total += size
            if total > limits.max_pass_elements:
                raise LimitError(f"the values computed up to this node hold {total} elements, over the "
                                 f"max-pass-elements limit of {limits.max_pass_elements}; refused before "
                                 "computing them", step.node)
    return None


def output_specs(plan: Plan) -> tuple[ValueSpec, ...]:
    """Each graph output's dtype and shape, as far as the inputs' declared dtypes and shapes determine them.

    Inferred twice, once per probe size for the free (-1) input dimensions; nothing runs. Nothing is known
    when an input declares no shape, or when a rule is missing or refuses the probe shapes.
    """
    unknown = tuple(ValueSpec(o.name, None, None) for o in plan.spec.outputs)
    if any(inp.shape is None for inp in plan.inputs):
        return unknown
    runs = []
    for size in PROBE_SIZES:
        inputs = [TensorType(tuple(size if d == -1 else d for d in inp.shape), np.dtype(inp.dtype or "float32"))
                  for inp in plan.inputs]
        try:
            types = infer(plan, inputs)
        except ComputeError as exc:
            _LOGGER.debug("shape inference of graph %s failed: %s", plan.graph_id, exc)
            return unknown
        runs.append({name: types[slot] for name, slot in plan.output_slots.items()})
    # An input of undeclared dtype was taken as float32; what comes out then depends on what goes in.
    dtypes_known = all(inp.dtype is not None for inp in plan.inputs)
    specs = []
    for out in plan.spec.outputs:
        first, second = (run[out.name] for run in runs)
        if first is None or second is None:
            specs.append(ValueSpec(out.name, None, None))
            continue
        dtype = first.dtype.name if dtypes_known and first.dtype == second.dtype else None
        shape = (tuple(a if a == b else -1 for a, b in zip(first.shape, second.shape))
                 if len(first.shape) == len(second.shape) else None)
        specs.append(ValueSpec(out.name, dtype, shape))
    return tuple(specs)


def _describe(types: Sequence[TensorType]) -> str:
    return ", ".join(f"{t.dtype.name}{list(t.shape)}" for t in types) or "no inputs"
