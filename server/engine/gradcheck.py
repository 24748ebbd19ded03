"""Numerical gradients by central differences, compared with backprop (the chapter's gradient check)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gradserve.plugins import TensorType
from gradserve.server.engine import execute as engine, shapes
from gradserve.server.engine.errors import FeedError, LimitError
from gradserve.plugins.numerical import central_differences
from gradserve.server.engine.plan import Plan

#: What one node costs a forward pass beyond its elements, in elements: a tiny layer call is some µs,
#: about what numpy takes for a thousand elements.
NODE_COST_ELEMENTS = 1_000


@dataclass
class InputCheck:
    """Numerical vs backprop gradient for one input."""

    name: str
    numerical: np.ndarray
    backprop: np.ndarray

    @property
    def abs_diff(self) -> np.ndarray:
        return np.abs(self.numerical - self.backprop)

    @property
    def max_abs_diff(self) -> float:
        return float(self.abs_diff.max()) if self.abs_diff.size else 0.0

    @property
    def mean_abs_diff(self) -> float:
        return float(self.abs_diff.mean()) if self.abs_diff.size else 0.0


def forward_cost(plan: Plan, feeds) -> int:
    """One forward pass's cost in elements: every value's (from the shape rules) plus NODE_COST_ELEMENTS a node."""
    inputs = []
    for inp in plan.inputs:
        value = np.asarray(feeds[inp.name]) if inp.name in feeds else None
        inputs.append(None if value is None else TensorType(value.shape, value.dtype))
    types = shapes.infer(plan, inputs)
    return NODE_COST_ELEMENTS * len(plan.steps) + sum(math.prod(t.shape) for t in types if t is not None)


def check_gradients(plan: Plan, feeds, wrt=None, output_grads=None, eps: float = 1e-4,
                    max_elements: int | None = None, should_stop: engine.ShouldStop | None = None,
                    max_work: int | None = None) -> list[InputCheck]:
    """Compare backprop with central differences of L = sum(output * seed) for each wrt input.

    Runs forward twice per element of each checked input, so ``max_elements`` bounds the elements and
    ``max_work`` the work (2 x elements x forward_cost), both checked before anything runs. Use float64
    feeds for a meaningful comparison.
    """
    if max_work is not None:
        names = plan.differentiable_inputs if wrt is None else set(wrt) & plan.differentiable_inputs
        elements = sum(np.size(feeds[n]) for n in names if n in feeds and np.asarray(feeds[n]).dtype.kind == "f")
        work = 2 * elements * forward_cost(plan, feeds)
        if work > max_work:
            raise LimitError(f"a gradient check over {elements} elements runs forward {2 * elements} times, "
                             f"{work} element-steps in all, over the max-gradcheck-work limit of {max_work}; "
                             "check fewer or smaller inputs, or a smaller graph")
    state = engine.forward(plan, feeds, should_stop=should_stop)
    backprop = state.backward(output_grads, wrt, should_stop)
    seeds = {name: state.values[plan.output_slots[name]] for name in state._seeds(output_grads)}
    seed_values = {n: (np.ones_like(v) if not output_grads else np.asarray(output_grads[n], dtype=v.dtype))
                   for n, v in seeds.items()}
    total = sum(np.size(feeds[name]) for name in backprop)
    if max_elements is not None and total > max_elements:
        raise LimitError(f"gradient check over {total} elements exceeds the max-gradcheck-elements limit of "
                         f"{max_elements}; check fewer inputs or smaller ones")

    def loss(current):
        outs = engine.forward(plan, current, should_stop=should_stop).outputs()
        return sum(float(np.sum(outs[n].astype(np.float64) * seed_values[n])) for n in seed_values)

    checks = []
    for name, grad in backprop.items():
        base = np.asarray(feeds[name])
        if not np.issubdtype(base.dtype, np.floating):
            raise FeedError(f"cannot check gradients of non-floating input {name!r}")
        numerical = central_differences(lambda bumped: loss({**feeds, name: bumped}), base, eps)
        checks.append(InputCheck(name, numerical.reshape(base.shape), grad.astype(np.float64)))
    return checks
