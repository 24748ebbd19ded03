"""KServe models over the Service: a named graph is a model, `<name>:grad` its gradient model (no gRPC here).

The gradient convention, for an unmodified KServe client:

- model `<name>:grad` takes the inputs of model `<name>`, plus `<output>:grad` for
  the gradient of any output (optional: without any, every scalar output is
  seeded with one, as for a loss);
- its outputs are `<input>:grad` for every floating-point input, plus the
  model's own outputs; asking for some outputs computes only those (no
  `<input>:grad` among them: forward only).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np

from gradserve.server.engine import execute as engine
from gradserve.server.engine.errors import FeedError, UnknownGraphError, listing, quoted
from gradserve.server.engine.plan import Plan
from gradserve.server.service.operations import NamedGraph, Service
from gradserve.server.engine.shapes import output_specs

GRAD_SUFFIX = ":grad"
#: Reported for a tensor whose graph declares no dtype (any dtype is accepted): the Graph builder's default.
DEFAULT_DTYPE = "float32"
#: Reported for a tensor whose graph declares no shape: one free dimension (any shape is accepted).
UNKNOWN_SHAPE = (-1,)
_FLOATS = ("float16", "float32", "float64")
_MAX_SIGNATURES = 1024  # graphs re-registered under the same names leave stale entries; start over past this


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str  # a numpy dtype name
    shape: tuple[int, ...]  # -1 = any size


@dataclass(frozen=True)
class Model:
    name: str  # as clients call it: `<graph name>` or `<graph name>:grad`
    version: str
    plan: Plan
    grad: bool
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]


class Models:
    """The models a KServe client sees: two per named graph."""

    def __init__(self, service: Service):
        self.service = service
        self._signatures: dict[str, tuple] = {}  # graph id -> (inputs, outputs): the shape probe runs once
        self._lock = threading.Lock()
        # Concurrent first calls on one graph infer its shapes once: the others wait for that, not redo it.
        self._inferring = threading.Lock()

    def names(self) -> list[tuple[str, str]]:
        """(model name, version) of every model, the gradient models after their graphs."""
        return [(name, named.version) for named in self.service.named_graphs()
                for name in (named.name, named.name + GRAD_SUFFIX)]

    def find(self, name: str, version: str = "") -> Model | None:
        """The model ``name`` (at ``version``, when given), or None."""
        named, grad = self._named(name)
        if named is None or (version and version != named.version):
            return None
        return self._model(name, named, grad)

    def get(self, name: str, version: str = "") -> Model:
        """The model ``name``; raise UnknownGraphError saying which models there are."""
        named, grad = self._named(name)
        if named is None:
            known = listing(n for n, _ in self.names()) or "none yet"
            raise UnknownGraphError(f"no model {quoted(name)!r} on this server (models: {known}); a model is a graph "
                                    f"registered with a name, and `<name>{GRAD_SUFFIX}` gives its gradients")
        if version and version != named.version:
            raise UnknownGraphError(f"model {name!r} has version {named.version!r}, not {version!r}; "
                                    "ask for that version or leave the version empty")
        return self._model(name, named, grad)

    def infer(self, model: Model, feeds: Mapping[str, np.ndarray], requested: Iterable[str] = (),
              training: bool = False, seed: int | None = None,
              should_stop: engine.ShouldStop | None = None) -> dict[str, np.ndarray]:
        """Run ``model``; return the ``requested`` outputs in that order (all of them when none are named)."""
        requested = list(requested)
        known = {t.name for t in model.outputs}
        unknown = [n for n in requested if n not in known]
        if unknown:
            hint = f"; gradients come from model {model.name + GRAD_SUFFIX!r}" if not model.grad else ""
            raise FeedError(f"model {model.name!r} has no output {unknown[0]!r} (its outputs: "
                            f"{listing(t.name for t in model.outputs)}){hint}")
        plan = model.plan
        if not model.grad:
            outputs, _ = self.service.run(plan, feeds, wrt=engine.FORWARD_ONLY, training=training, seed=seed, should_stop=should_stop)
            return {n: outputs[n] for n in requested or outputs}

        graph_feeds, output_grads = self._split_feeds(model, feeds)
        wrt = [n.removesuffix(GRAD_SUFFIX) for n in requested if n not in plan.output_slots] if requested else None
        outputs, grads = self.service.run(plan, graph_feeds, output_grads, wrt, training=training, seed=seed,
                                          should_stop=should_stop)
        results = dict(outputs)
        results.update((name + GRAD_SUFFIX, grad) for name, grad in grads.items())
        for name in requested:
            if name not in results:
                dtype = graph_feeds[name.removesuffix(GRAD_SUFFIX)].dtype.name
                raise FeedError(f"output {name!r} cannot be computed: its input is {dtype}, and only "
                                "floating-point inputs have gradients")
        return {n: results[n] for n in requested} if requested else results

    # -- helpers --

    def _named(self, name: str) -> tuple[NamedGraph | None, bool]:
        named = self.service.named(name)  # an exact name wins, even one that ends in ":grad"
        if named is None and name.endswith(GRAD_SUFFIX):
            return self.service.named(name.removesuffix(GRAD_SUFFIX)), True
        return named, False

    def _model(self, name: str, named: NamedGraph, grad: bool) -> Model:
        plan = self.service.plan(named.graph_id)
        inputs, outputs = self._signature(plan)
        if grad:
            inputs, outputs = (
                inputs + tuple(TensorInfo(t.name + GRAD_SUFFIX, t.dtype, t.shape) for t in outputs),
                outputs + tuple(TensorInfo(t.name + GRAD_SUFFIX, t.dtype, t.shape)
                                for t in inputs if t.dtype in _FLOATS),
            )
        return Model(name, named.version, plan, grad, inputs, outputs)

    def _signature(self, plan: Plan) -> tuple[tuple[TensorInfo, ...], tuple[TensorInfo, ...]]:
        with self._lock:
            cached = self._signatures.get(plan.graph_id)
        if cached is not None:
            return cached
        with self._inferring:
            with self._lock:
                cached = self._signatures.get(plan.graph_id)
            if cached is None:
                inputs = tuple(_info(i.name, i.dtype, i.shape) for i in plan.inputs)
                outputs = tuple(_info(o.name, o.dtype, o.shape) for o in output_specs(plan))
                cached = (inputs, outputs)
                with self._lock:
                    if len(self._signatures) >= _MAX_SIGNATURES:
                        self._signatures.clear()
                    self._signatures[plan.graph_id] = cached
        return cached

    @staticmethod
    def _split_feeds(model: Model, feeds: Mapping[str, np.ndarray]):
        """(graph feeds, output gradients) from a gradient model's inputs."""
        plan = model.plan
        graph_feeds, output_grads = {}, {}
        for name, array in feeds.items():
            if name not in plan.input_slots and name.endswith(GRAD_SUFFIX):
                output = name.removesuffix(GRAD_SUFFIX)
                if output not in plan.output_slots:
                    raise FeedError(f"input {name!r} names no output of model {model.name!r} (its outputs: "
                                    f"{listing(plan.output_slots)}); an output's gradient is input "
                                    f"`<output>{GRAD_SUFFIX}`")
                output_grads[output] = array
            else:
                graph_feeds[name] = array
        return graph_feeds, output_grads


def _info(name: str, dtype: str | None, shape: tuple[int, ...] | None) -> TensorInfo:
    return TensorInfo(name, dtype or DEFAULT_DTYPE, tuple(shape) if shape is not None else UNKNOWN_SHAPE)
