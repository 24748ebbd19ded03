"""Infer a plan's output dtypes and shapes by running it on small zero inputs (-1 where a size follows the inputs')."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from gradserve.server.engine import execute as engine
from gradserve.server.engine.plan import Plan

_LOGGER = logging.getLogger(__name__)

#: Two sizes for every free (-1) input dimension: an output dimension that differs between the runs is free too.
PROBE_SIZES = (2, 3)
#: Above this many input elements the probe would cost more than a metadata call should; shapes stay unknown.
MAX_PROBE_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class ValueSpec:
    """A value's dtype name and shape (-1 = any size); None where it cannot be known before a run."""

    name: str
    dtype: str | None
    shape: tuple[int, ...] | None


def output_specs(plan: Plan) -> tuple[ValueSpec, ...]:
    """Each graph output's dtype and shape, as far as the inputs' declared dtypes and shapes determine them.

    Layers declare no shape rules, so the plan runs forward twice on zeros, once
    per probe size. Nothing is known when an input declares no shape, when the
    inputs are too large to probe, or when a layer rejects the zeros.
    """
    unknown = tuple(ValueSpec(o.name, None, None) for o in plan.spec.outputs)
    if any(inp.shape is None for inp in plan.inputs):
        return unknown
    runs = []
    for size in PROBE_SIZES:
        feeds = {inp.name: np.zeros([size if d == -1 else d for d in inp.shape], dtype=inp.dtype or "float32")
                 for inp in plan.inputs}
        if sum(a.size for a in feeds.values()) > MAX_PROBE_ELEMENTS:
            return unknown
        try:
            runs.append(engine.forward(plan, feeds).outputs())
        except Exception as exc:  # noqa: BLE001 - any layer may refuse zeros; then shapes are simply unknown
            _LOGGER.debug("shape probe of graph %s failed: %s", plan.graph_id, exc)
            return unknown
    # An input of undeclared dtype was probed as float32; what comes out then depends on what goes in.
    dtypes_known = all(inp.dtype is not None for inp in plan.inputs)
    specs = []
    for out in plan.spec.outputs:
        first, second = (np.asarray(run[out.name]) for run in runs)
        dtype = first.dtype.name if dtypes_known and first.dtype == second.dtype else None
        shape = (tuple(a if a == b else -1 for a, b in zip(first.shape, second.shape, strict=True))
                 if first.ndim == second.ndim else None)
        specs.append(ValueSpec(out.name, dtype, shape))
    return tuple(specs)
