"""Run a Plan forward in topological order and backward by the chain rule (no gRPC here)."""

from __future__ import annotations

import sys
import time
from typing import Callable, Iterable, Mapping, Protocol

import numpy as np

from gradserve.plugins.layer import describe
from gradserve.server.engine.errors import INPUT_ERRORS, ComputeError, EngineError, FeedError, LimitError, listing
from gradserve.server.engine.plan import Plan, Step, check_feed
from gradserve.server.engine.shapes import check_rest, check_sizes


#: An ndarray object's own bytes, without its shape, strides or data (sys.getsizeof of a 0-d view).
_ARRAY_HEADER = sys.getsizeof(np.empty(0)[:]) - 16
#: What the allocator adds to each array buffer (its header and rounding): without it, sessions of a
#: 10k-node chain of 4-element arrays grew RSS 1.47x what they counted (bench.hostile state, 300 sessions).
_BUFFER_OVERHEAD = 32

#: Told how long each layer call took: ``observe(op, "forward" | "backward", seconds)`` (metrics hook it here).
Observer = Callable[[str, str, float], None]

#: The ``wrt`` that asks for no gradient: the pass runs forward only (RunRequest.no_grad, the client's grad=False).
FORWARD_ONLY: tuple[str, ...] = ()


class ShouldStop(Protocol):
    """Called between nodes; raises an EngineError (CancelledError, DeadlineError, LimitError) to end the pass.

    It may look at the call's state only now and then; ``now_for_sure`` makes it look now (the service asks so
    before it keeps a session).
    """

    def __call__(self, now_for_sure: bool = False) -> None: ...


class LayerContractError(EngineError):
    """A layer broke the Layer contract (wrong number or shape of results): the plugin's fault."""


class Pass:
    """One forward pass: every value and the layer instances that backward needs."""

    __slots__ = ("plan", "values", "layers", "observe", "asked")

    def __init__(self, plan: Plan, values: list, layers: list, observe: Observer | None = None):
        self.plan = plan
        self.values = values
        self.layers = layers
        self.observe = observe  # forward's observer times backward too, even in a later Backward call
        self.asked = False  # a backward set some layer's needs_input_grad (a retained session's next one resets)

    def outputs(self) -> dict[str, np.ndarray]:
        return {name: self.values[slot] for name, slot in self.plan.output_slots.items()}

    def named_values(self) -> dict[str, np.ndarray]:
        """Every value of the graph by value name (for tracing)."""
        return dict(zip(self.plan.slot_names, self.values))

    def nbytes(self) -> int:
        """Bytes this pass keeps alive: every array's buffer (once) and header, each layer object and its
        attributes, the lists that hold them (Python's own sizes, sys.getsizeof)."""
        arrays: set[int] = set()
        buffers: set[int] = set()
        total = sys.getsizeof(self.values) + sys.getsizeof(self.layers)
        for layer in self.layers:
            if layer is not None:
                total += sys.getsizeof(layer) + sys.getsizeof(layer.__dict__)
        for array in _arrays(self.values, self.layers):
            if id(array) in arrays:
                continue
            arrays.add(id(array))
            total += _ARRAY_HEADER + 16 * array.ndim
            while isinstance(array.base, np.ndarray):  # a view (a reshape, a slice) holds its base's bytes
                array = array.base
            if id(array) not in buffers:
                buffers.add(id(array))
                total += array.nbytes + _BUFFER_OVERHEAD
        return total

    def backward(
        self,
        output_grads: Mapping[str, np.ndarray] | None = None,
        wrt: Iterable[str] | None = None,
        should_stop: ShouldStop | None = None,
        value_grads: dict | None = None,
    ) -> dict[str, np.ndarray]:
        """Gradients of the seeded outputs with respect to the ``wrt`` inputs.

        ``output_grads`` seeds outputs by name; when empty, every scalar output is
        seeded with one. Gradients are summed where a value feeds several nodes.
        ``wrt`` defaults to every floating-point graph input; integer and boolean
        inputs (labels), and inputs read only where a layer takes no gradient
        (BatchNormalization's running statistics), never get one. A ``value_grads`` dict is filled
        with the gradient reaching every value, by value name (for tracing).
        """
        with np.errstate(all="ignore"):
            return self._backward(output_grads, wrt, should_stop, value_grads)

    def _backward(self, output_grads, wrt, should_stop, value_grads) -> dict[str, np.ndarray]:
        """``backward`` under the caller's numpy error state."""
        plan, values = self.plan, self.values
        wrt_slots = self._wrt_slots(wrt)
        if value_grads is not None:  # tracing: every gradient, also of inputs no wrt input depends on
            steps = plan.backward_steps(frozenset(wrt_slots.values()), every_gradient=True)
        elif len(wrt_slots) == len(plan.differentiable_slots):
            steps = plan.all_backward_steps
        else:
            steps = plan.backward_steps(frozenset(wrt_slots.values()))
        grads: list = [None] * plan.n_slots
        for name, slot in self._seeds(output_grads).items():
            _accumulate(grads, slot, self._seed_array(name, slot, output_grads))
        layers, observe, asked = self.layers, self.observe, self.asked
        # numpy's error state is set by the caller (backward, or run), once per call.
        for index, step, grad_slots, needs in steps:
            out_slot = step.out_slot
            if out_slot is not None:  # one output (most layers): call backward(dout) without packing a tuple
                dout = grads[out_slot]
                if dout is None:
                    continue
                douts = None
            else:
                douts = [grads[s] for s in step.out_slots]
                if all(d is None for d in douts):
                    continue
            if should_stop is not None:
                should_stop()
            layer = layers[index]
            if needs is not None:
                layer.needs_input_grad = needs
                self.asked = True
            elif asked:  # an earlier backward of this retained pass asked for less
                layer.needs_input_grad = None
            try:
                if observe is not None:
                    results = _timed(observe, step, "backward", layer.backward, douts or (dout,))
                elif douts is None:
                    results = layer.backward(dout)
                else:
                    results = layer.backward(*douts)
            except _CALL_ERRORS as exc:
                raise _call_error(step, "backward", douts or (dout,), exc) from None
            if type(results) is not tuple or len(results) != step.arity:
                raise LayerContractError(
                    f"{step.op}.backward must return a tuple of {len(step.in_slots)} gradients, "
                    f"got {describe(results)}",
                    step.node,
                )
            for position, slot in grad_slots:
                grad = results[position]
                if type(grad) is not np.ndarray or grad.shape != values[slot].shape:
                    grad = _checked_grad(step, grad, values[slot], plan.slot_names[slot])
                    if grad is None:
                        continue
                # Never add in place: a layer may hand back its dout (Add does), which another node holds.
                current = grads[slot]
                grads[slot] = grad if current is None else current + grad
        if value_grads is not None:
            value_grads.update((plan.slot_names[s], g) for s, g in enumerate(grads) if g is not None)
        out = {}
        for name, slot in wrt_slots.items():
            value = values[slot]
            grad = grads[slot]
            if grad is None:
                grad = np.zeros_like(value)
            elif grad.dtype != value.dtype:
                grad = grad.astype(value.dtype)
            out[name] = grad
        return out

    def _wrt_slots(self, wrt) -> dict[str, int]:
        plan, values = self.plan, self.values
        if wrt is None:
            return {n: s for n, s in plan.differentiable_slots.items() if values[s].dtype.kind == "f"}
        names = list(dict.fromkeys(wrt))
        unknown = [n for n in names if n not in plan.input_slots]
        if unknown:
            raise FeedError(
                f"cannot take gradients for {unknown[0]!r}: not a graph input "
                f"(inputs: {listing(plan.input_slots)})"
            )
        return {n: plan.input_slots[n] for n in names
                if n in plan.differentiable_inputs and _is_float(values[plan.input_slots[n]])}

    def _seeds(self, output_grads) -> dict[str, int]:
        plan = self.plan
        if output_grads:
            unknown = [n for n in output_grads if n not in plan.output_slots]
            if unknown:
                raise FeedError(
                    f"gradient given for {unknown[0]!r}, which is not a graph output "
                    f"(outputs: {listing(plan.output_slots)})"
                )
            return {n: plan.output_slots[n] for n in output_grads}
        seeds = {n: s for n, s in plan.output_slots.items() if self.values[s].size == 1}
        if not seeds:
            raise FeedError(
                "no output gradient given and no output is a scalar; give a gradient for one of: "
                + listing(plan.output_slots)
            )
        return seeds

    def _seed_array(self, name, slot, output_grads) -> np.ndarray:
        value = self.values[slot]
        if not output_grads:
            return np.ones(value.shape, value.dtype)
        grad = np.asarray(output_grads[name])
        if grad.shape != np.shape(value):
            raise FeedError(f"gradient for output {name!r} has shape {list(grad.shape)}, the output has "
                            f"{list(np.shape(value))}")
        return grad.astype(value.dtype, copy=False)


def forward(
    plan: Plan,
    feeds: Mapping[str, np.ndarray],
    *,
    training: bool = False,
    seed: int | None = None,
    should_stop: ShouldStop | None = None,
    observe: Observer | None = None,
) -> Pass:
    """Run every node in topological order; ``should_stop`` is called between nodes and may raise.

    ``observe``, when given, is told the time of every layer call (forward here, backward later).
    """
    with np.errstate(all="ignore"):
        return _forward(plan, feeds, training, seed, should_stop, observe)


def _forward(plan: Plan, feeds, training, seed, should_stop, observe) -> Pass:
    """``forward`` under the caller's numpy error state."""
    values: list = [None] * plan.n_slots
    if feeds.keys() != plan.input_slots.keys():
        _check_feed_names(plan, feeds)
    for inp, slot, dtype in plan.feed_checks:
        value = feeds[inp.name]
        if type(value) is not np.ndarray:
            value = np.asarray(value)
        if (dtype is not None and value.dtype != dtype) or inp.shape is not None:
            problem = check_feed(inp, value, dtype)
            if problem:
                raise FeedError(problem)
        values[slot] = value
    layers: list = [None] * len(plan.steps)
    unknown = None if plan.sizes is None else check_sizes(plan, values, plan.sizes, training)
    if unknown is None:
        _run_steps(plan, enumerate(plan.steps), values, layers, training, seed, should_stop, observe)
        return Pass(plan, values, layers, observe)
    # Past a layer without a shape rule, sizes are checked again from what it computed, up to the next one.
    start = 0
    while unknown is not None:
        _run_steps(plan, enumerate(plan.steps[start:unknown + 1], start), values, layers, training, seed,
                   should_stop, observe)
        start = unknown + 1
        unknown = check_rest(plan, values, plan.sizes, start, training)
    _run_steps(plan, enumerate(plan.steps[start:], start), values, layers, training, seed, should_stop, observe)
    return Pass(plan, values, layers, observe)


def _run_steps(plan: Plan, steps, values: list, layers: list, training, seed, should_stop, observe) -> None:
    """Run the (index, step) pairs ``steps`` in order, filling ``values`` and ``layers``."""
    stateful = training or seed is not None
    # This loop is the engine's per-node cost (a 1000-node graph of tiny arrays is all overhead):
    # keep it to the layer calls and list indexing, with numpy's error state set once per call by the caller.
    for index, step in steps:
        if should_stop is not None:
            should_stop()
        layer = step.new()
        if stateful:
            layer.training = training
            layer.seed = None if seed is None else (seed, index)
        args = step.gather(values)
        try:
            if observe is None:
                result = layer.forward(*args)
            else:
                result = _timed(observe, step, "forward", layer.forward, args)
        except _CALL_ERRORS as exc:
            raise _call_error(step, "forward", args, exc) from None
        layers[index] = layer
        if step.out_slot is not None:
            values[step.out_slot] = result if type(result) is np.ndarray else _as_array(step, result)
            continue
        if not isinstance(result, tuple) or len(result) != len(step.out_slots):
            raise LayerContractError(
                f"{step.op}.forward must return a tuple of {len(step.out_slots)} outputs, got {describe(result)}",
                step.node,
            )
        for slot, item in zip(step.out_slots, result):
            values[slot] = _as_array(step, item)


def run(plan: Plan, feeds, output_grads=None, wrt=None, *, training=False, seed=None,
        should_stop: ShouldStop | None = None, observe: Observer | None = None) -> tuple[dict, dict]:
    """Forward then backward in one call: (outputs, gradients)."""
    state, grads = forward_backward(plan, feeds, output_grads, wrt, training=training, seed=seed,
                                    should_stop=should_stop, observe=observe)
    return state.outputs(), grads


def forward_backward(plan: Plan, feeds, output_grads=None, wrt=None, *, training=False, seed=None,
                     should_stop: ShouldStop | None = None, observe: Observer | None = None,
                     value_grads: dict | None = None) -> tuple[Pass, dict]:
    """The forward Pass and the gradients of its backward (none for ``wrt`` FORWARD_ONLY: backward does not run);
    ``value_grads`` as Pass.backward takes it (tracing)."""
    with np.errstate(all="ignore"):  # once for both passes: entering it costs about a µs, as much as a tiny node
        state = _forward(plan, feeds, training, seed, should_stop, observe)
        if wrt is not None and not wrt:
            return state, {}
        return state, state._backward(output_grads, wrt, should_stop, value_grads)


def _checked_grad(step: Step, grad, value: np.ndarray, name: str) -> np.ndarray | None:
    """A gradient a layer returned that is not simply an array of its input's shape: None (no gradient),
    the array it stands for, or a LayerContractError when its shape is not the input's."""
    if grad is None:
        return None
    grad = np.asarray(grad)
    if grad.shape != value.shape:
        raise LayerContractError(f"{step.op}.backward returned a gradient of shape {grad.shape} for {name!r} of "
                                 f"shape {value.shape}", step.node)
    return grad


def _check_feed_names(plan: Plan, feeds) -> None:
    """Raise a FeedError naming the first missing feed or the first feed that is not a graph input."""
    inputs = listing(i.name for i in plan.inputs)
    missing = [inp.name for inp in plan.inputs if inp.name not in feeds]
    if missing:
        raise FeedError(f"missing feed for graph input {missing[0]!r} (the graph's inputs: {inputs})")
    extra = [name for name in feeds if name not in plan.input_slots]
    if extra:
        raise FeedError(f"feed {extra[0]!r} is not a graph input (the graph's inputs: {inputs})")


def _timed(observe: Observer, step: Step, what: str, method, args):
    start = time.perf_counter()
    result = method(*args)
    observe(step.op, what, time.perf_counter() - start)
    return result


#: What a layer call may raise because of the request (its inputs, or their size) rather than a server fault.
_CALL_ERRORS = INPUT_ERRORS + (MemoryError,)


def _call_error(step: Step, what: str, args, exc: Exception) -> EngineError:
    """The error that reports a failed layer call, naming the node."""
    if isinstance(exc, MemoryError):  # an output too big for this machine: the request's size, not a server fault
        return LimitError(f"{step.op}.{what} needs more memory than the server has: {exc}", step.node)
    shapes = ", ".join(describe(a) for a in args)
    return ComputeError(f"{step.op}.{what} failed on ({shapes}): {exc}", step.node)


def _as_array(step: Step, value) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, (np.generic, int, float, bool)):
        return np.asarray(value)
    raise LayerContractError(f"{step.op}.forward returned {describe(value)}, not an array", step.node)


def _accumulate(grads: list, slot: int, grad: np.ndarray) -> None:
    # Never add in place: a layer may hand back its dout (Add does), which another node also holds.
    current = grads[slot]
    grads[slot] = grad if current is None else current + grad


def _is_float(value: np.ndarray) -> bool:
    return value.dtype.kind == "f"


def _arrays(values, layers):
    for value in values:
        if isinstance(value, np.ndarray):
            yield value
    for layer in layers:
        if layer is not None:
            for item in vars(layer).values():
                if isinstance(item, np.ndarray):
                    yield item
