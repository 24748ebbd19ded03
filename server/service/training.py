"""Training on the server: one TrainingRun per Train stream keeps the parameters and the optimizer's state.

A run is opened with a compiled graph, the initial parameters, the name of the loss output, the feed names
and an optimizer; each ``step(batch)`` is one forward and backward (the engine's run) and one optimizer
update, atomically: a step that fails leaves the parameters as they were. The bytes of the parameters and of
the optimizer's state count against the session limits (one session, max-session-bytes) while the run lives.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable, Mapping

import numpy as np

from gradserve.plugins import SchemaError
from gradserve.server.engine import execute as engine
from gradserve.server.engine.errors import EngineError, FeedError, LimitError
from gradserve.server.engine.plan import Plan
from gradserve.server.service.limits import Limits
from gradserve.server.service.registry import Registry
from gradserve.server.service.sessions import SessionStore

_LOGGER = logging.getLogger(__name__)

DEFAULT_LOSS = "loss"
DEFAULT_OPTIMIZER = "sgd"


class TrainingError(EngineError):
    """A Train stream's open or batch does not fit its graph, its parameters or its optimizer."""


#: What a batch is answered with once the server is going away (SIGTERM); the client raises ServerShuttingDown.
GOING_AWAY = ("the server is shutting down (SIGTERM, going away): it takes no more batches; get the parameters now "
              "(params() or close() still answer until the shutdown grace ends) and go on on another server")


class TrainingRun:
    """The parameters and optimizer state of one Train stream; ``step`` trains on a batch, ``close`` frees."""

    def __init__(self, plan: Plan, params: dict[str, np.ndarray], loss: str, feeds: tuple[str, ...],
                 optimizer, outputs: tuple[str, ...], training: bool, seed: int | None, sessions: SessionStore,
                 session_id: str, nbytes: int, observe: engine.Observer | None = None):
        self.plan = plan
        self._params = params
        self.loss = loss
        self.feeds = feeds
        self.optimizer = optimizer
        self.outputs = outputs
        self.training = training
        self.seed = seed
        self.steps = 0
        self._sessions = sessions
        self.session_id = session_id  # held in the session store: one session of ``nbytes``, never evicted
        self.nbytes = nbytes
        self._observe = observe
        self._state = {name: optimizer.new_state(array) for name, array in params.items()}
        self._wrt = list(params)
        # the engine casts the seed to the loss's dtype
        self._seed_grads = {loss: np.ones((), next(iter(params.values())).dtype)}

    def step(self, batch: Mapping[str, np.ndarray], outputs: Iterable[str] = (),
             should_stop: Callable[..., None] | None = None) -> tuple[float, dict[str, np.ndarray]]:
        """Train on one batch: (the loss before the update, the outputs asked for at open and here)."""
        self._check_batch(batch)
        wanted = check_outputs(self.plan, (*self.outputs, *outputs))
        feeds = dict(batch)
        feeds.update(self._params)
        seed = None if self.seed is None else self.seed + self.steps
        values, grads = engine.run(self.plan, feeds, self._seed_grads, self._wrt, training=self.training, seed=seed,
                                   should_stop=should_stop, observe=self._observe)
        loss = values[self.loss]
        if np.size(loss) != 1:
            raise TrainingError(f"the loss output {self.loss!r} has shape {list(np.shape(loss))}; a Train stream "
                                "minimizes a scalar")
        self.steps += 1
        for name, param in self._params.items():
            grad = grads.get(name)
            if grad is None:  # the loss does not depend on it (yet): a zero gradient, as the book's would be
                grad = np.zeros_like(param)
            self.optimizer.update(param, grad, self._state[name], self.steps)
        return float(loss), {name: values[name] for name in wanted}

    def params(self) -> dict[str, np.ndarray]:
        """Copies of the parameters now (the caller may send them while training goes on)."""
        return {name: array.copy() for name, array in self._params.items()}

    def close(self) -> None:
        """Give the room back to the session limits (idempotent); the arrays go when the last reference does."""
        self._sessions.release(self.session_id)

    def _check_batch(self, batch: Mapping[str, np.ndarray]) -> None:
        if batch.keys() == set(self.feeds):
            return
        missing = [name for name in self.feeds if name not in batch]
        if missing:
            raise FeedError(f"the batch has no feed {missing[0]!r} (every batch carries: {', '.join(self.feeds)})")
        extra = sorted(set(batch) - set(self.feeds))
        what = "a parameter, kept on the server" if extra[0] in self._params else "not a feed of this stream"
        raise FeedError(f"the batch feeds {extra[0]!r}, which is {what} (feeds: {', '.join(self.feeds)})")


def check_outputs(plan: Plan, names: Iterable[str]) -> list[str]:
    wanted = list(dict.fromkeys(names))
    unknown = [name for name in wanted if name not in plan.output_slots]
    if unknown:
        raise TrainingError(f"no graph output {unknown[0]!r} (outputs: {', '.join(plan.output_slots)})")
    return wanted


def open_run(plan: Plan, registry: Registry, sessions: SessionStore, limits: Limits,
             params: Mapping[str, np.ndarray], loss: str = "", feeds: Iterable[str] = (), optimizer: str = "",
             settings: Mapping[str, float] | None = None, outputs: Iterable[str] = (), training: bool = True,
             seed: int | None = None, observe: engine.Observer | None = None) -> TrainingRun:
    """Check what a Train stream opens with against the graph and the optimizer; hold its bytes; a TrainingRun."""
    limits.check_arrays(params.items(), "open message")
    loss = loss or DEFAULT_LOSS
    if loss not in plan.output_slots:
        raise TrainingError(f"the loss {loss!r} is not a graph output (outputs: {', '.join(plan.output_slots)}); "
                            "name the scalar output to minimize")
    if not params:
        raise TrainingError("a Train stream opens with the initial parameters: none were sent")
    for name, array in params.items():
        if name not in plan.input_slots:
            raise TrainingError(f"parameter {name!r} is not a graph input (inputs: {', '.join(plan.input_slots)})")
        if array.dtype.kind != "f":
            raise TrainingError(f"parameter {name!r} is {array.dtype}; parameters are floating-point")
        if name not in plan.differentiable_inputs:
            raise TrainingError(f"parameter {name!r} takes no gradient in this graph (no layer reads it where it "
                                "differentiates): send it as a feed instead")
    feeds = tuple(dict.fromkeys(feeds)) or tuple(name for name in plan.input_slots if name not in params)
    for name in feeds:
        if name in params:
            raise TrainingError(f"{name!r} is both a parameter and a feed; it can be one of them")
        if name not in plan.input_slots:
            raise TrainingError(f"feed {name!r} is not a graph input (inputs: {', '.join(plan.input_slots)})")
    unset = [name for name in plan.input_slots if name not in params and name not in feeds]
    if unset:
        raise TrainingError(f"graph input {unset[0]!r} is neither a parameter nor a feed of this stream")
    dtypes = {array.dtype for array in params.values()}
    if len(dtypes) > 1:
        raise TrainingError(f"the parameters mix dtypes ({', '.join(sorted(map(str, dtypes)))}); use one")
    instance = make_optimizer(registry, optimizer or DEFAULT_OPTIMIZER, settings or {})
    check_outputs(plan, outputs)
    # Our own writable copies: what arrived is a read-only view of the message, and the update works in place.
    owned = {name: np.array(array, copy=True, order="C") for name, array in params.items()}
    nbytes = sum(array.nbytes for array in owned.values()) * (1 + len(instance.state))
    what = f"this Train stream's parameters and {instance.name} state"
    if nbytes > sessions.max_bytes:
        raise LimitError(f"{what} need {nbytes} bytes, over the max-session-bytes limit of {sessions.max_bytes}")
    session_id = sessions.hold()  # LimitError at max-sessions
    try:
        sessions.keep(session_id, nbytes)
    except LimitError as exc:
        sessions.release(session_id)
        raise LimitError(f"{what} need {nbytes} bytes: {exc}") from None
    _LOGGER.debug("train stream opened: graph %s, %s, %d bytes", plan.graph_id, instance, nbytes)
    return TrainingRun(plan, owned, loss, feeds, instance, tuple(outputs), training, seed, sessions, session_id,
                       nbytes, observe)


def make_optimizer(registry: Registry, name: str, settings: Mapping[str, float]):
    """An instance of the optimizer registered as ``name`` with ``settings``; TrainingError saying what to fix."""
    entry = registry.optimizer(name)
    if entry is None:
        known = ", ".join(sorted(e.cls.name for e in registry.optimizers.values())) or "none"
        raise TrainingError(f"no optimizer {name!r} on this server (optimizers: {known})")
    try:
        return entry.cls(**settings)
    except SchemaError as exc:
        raise TrainingError(str(exc)) from None
