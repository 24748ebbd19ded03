"""The service's operations over numpy: graphs by id or name, sessions, limits (what the servicer calls)."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from gradserve.server.engine import execute as engine, gradcheck
from gradserve.server.engine.errors import CancelledError, GraphError, LimitError, UnknownGraphError, quoted
from gradserve.server.engine.spec import GraphSpec
from gradserve.server.service.limits import Limits
from gradserve.server.engine.plan import Plan, compile_graph
from gradserve.server.service.registry import Registry
from gradserve.server.service.sessions import SessionStore
from gradserve.server.service.store import GraphStore, Record
from gradserve.server.service.stream_sessions import StreamSessions

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class NamedGraph:
    name: str
    version: str
    graph_id: str


class Service:
    """Everything a request can ask of gradserve, free of gRPC."""

    def __init__(self, registry: Registry, limits: Limits = Limits(), graph_store: str | Path | None = None,
                 observe: engine.Observer | None = None):
        self.registry = registry
        self.limits = limits
        self.observe = observe  # told every layer call's time (metrics); None costs nothing
        self.sessions = SessionStore(limits.session_ttl, limits.max_sessions, limits.max_session_bytes)
        self.streams = StreamSessions(self)  # Session streams' sessions (held in self.sessions too)
        self._plans: OrderedDict[str, Plan] = OrderedDict()
        self._plans_bytes = 0  # estimated bytes of the cached plans (Plan.nbytes)
        self._named: dict[str, NamedGraph] = {}
        self._pinned: dict[str, Plan] = {}  # plans of named graphs are never evicted
        self._lock = threading.Lock()
        self._store = GraphStore(graph_store, limits.max_store_bytes) if graph_store else None
        if self._store is not None:
            self._apply(self._store.load_all())

    # -- graphs --

    def register(self, spec: GraphSpec, name: str = "", version: str = "", persist: bool = True) -> Plan:
        """Validate and compile ``spec`` (once per content), optionally under a name; return its plan.

        A named graph is written to the graph store (when there is one) under the same lock as the
        in-memory update, so what is served is what a restart loads.
        """
        if len(name) > self.limits.max_graph_name_length:
            raise GraphError(f"graph name {quoted(name)!r} has {len(name)} characters, over the "
                             f"max-graph-name-length limit of {self.limits.max_graph_name_length}")
        plan = self._compiled(spec)
        if name:
            named = NamedGraph(name, version or "1", plan.graph_id)
            if persist and self._store is not None:
                with self._store.locked():
                    self._check_named_room(named, plan)
                    self._store.save(Record(named.name, named.version, spec.canonical()))
                    self._name(named, plan)
            else:
                self._name(named, plan)
        return plan

    def plan(self, graph: GraphSpec | str) -> Plan:
        """The plan for an inline graph (compiled and cached) or for a graph id or name."""
        if isinstance(graph, GraphSpec):
            return self._compiled(graph)
        self._refresh()
        with self._lock:
            named = self._named.get(graph)
            graph_id = named.graph_id if named else graph
            plan = self._pinned.get(graph_id) or self._plans.get(graph_id)
            if plan is not None and graph_id in self._plans:
                self._plans.move_to_end(graph_id)
        if plan is None:
            raise UnknownGraphError(f"unknown graph id or name {quoted(graph)!r} on this server; send the graph "
                                    "itself (RegisterGraph, or inline in the request)")
        return plan

    def named_graphs(self) -> list[NamedGraph]:
        self._refresh()
        with self._lock:
            return sorted(self._named.values(), key=lambda n: n.name)

    def named(self, name: str) -> NamedGraph | None:
        self._refresh()
        with self._lock:
            return self._named.get(name)

    def _compiled(self, spec: GraphSpec) -> Plan:
        graph_id = spec.graph_id()
        with self._lock:
            plan = self._pinned.get(graph_id) or self._plans.get(graph_id)
        if plan is not None:
            return plan
        plan = compile_graph(spec, self.registry, self.limits.max_graph_nodes, self.limits.size_limits())
        if plan.nbytes > self.limits.max_cached_plan_bytes:
            raise LimitError(f"this graph would keep about {plan.nbytes} bytes compiled, over the "
                             f"max-cached-plan-bytes limit of {self.limits.max_cached_plan_bytes}; send a smaller "
                             "graph (a large Constant can be a graph input instead)")
        with self._lock:
            if graph_id not in self._plans:
                self._plans[graph_id] = plan
                self._plans_bytes += plan.nbytes
            while (len(self._plans) > self.limits.max_cached_plans
                   or self._plans_bytes > self.limits.max_cached_plan_bytes):
                _, dropped = self._plans.popitem(last=False)
                self._plans_bytes -= dropped.nbytes
        return plan

    def _check_named_room(self, named: NamedGraph, plan: Plan) -> None:
        """Refuse a new name past max-named-graphs, or a plan that would take named plans past their bytes."""
        with self._lock:
            if named.name not in self._named and len(self._named) >= self.limits.max_named_graphs:
                raise LimitError(f"{len(self._named)} named graphs reached the max-named-graphs limit of "
                                 f"{self.limits.max_named_graphs}; reuse a name or register without one")
            kept = {n.graph_id for n in self._named.values() if n.name != named.name} | {plan.graph_id}
            nbytes = sum(self._pinned[g].nbytes for g in kept if g in self._pinned) + (
                0 if plan.graph_id in self._pinned else plan.nbytes)
            if nbytes > self.limits.max_named_graph_bytes:
                raise LimitError(f"named graphs would keep about {nbytes} bytes compiled, over the "
                                 f"max-named-graph-bytes limit of {self.limits.max_named_graph_bytes}")

    def _name(self, named: NamedGraph, plan: Plan) -> None:
        """Point ``named.name`` at ``plan``; a plan no name points at any more is no longer pinned."""
        self._check_named_room(named, plan)
        with self._lock:
            previous = self._named.get(named.name)
            self._named[named.name] = named
            self._pinned[plan.graph_id] = plan
            if previous is not None and previous.graph_id != plan.graph_id and not any(
                    n.graph_id == previous.graph_id for n in self._named.values()):
                del self._pinned[previous.graph_id]

    def _refresh(self) -> None:
        """Take in the names other processes wrote to the store since the last look (one stat when none)."""
        if self._store is None:
            return
        records = self._store.changed()
        if records:
            with self._store.locked():  # serialised with writers: what is applied is the newest on disk
                self._apply(records + self._store.changed(force=True))

    def _apply(self, records) -> None:
        for record in records:
            try:
                self.register(GraphSpec.from_canonical(record.graph), record.name, record.version, persist=False)
            except Exception as exc:  # one bad graph must not keep the others from loading
                _LOGGER.error("graph store: skipping graph %r: %s", quoted(record.name), exc)

    # -- running --

    def forward(self, plan: Plan, feeds, keep_for_backward=False, training=False, seed=None,
                should_stop: engine.ShouldStop | None = None):
        """(outputs, session id or "")."""
        self.limits.check_arrays(feeds.items())
        state = engine.forward(plan, feeds, training=training, seed=seed, should_stop=should_stop,
                               observe=self.observe)
        if keep_for_backward and should_stop is not None:
            should_stop(True)  # the caller may have left during the last node: keep no session nobody can use
        session_id = self.sessions.put(state) if keep_for_backward else ""
        return state.outputs(), session_id

    def backward(self, session_id: str, output_grads=None, wrt=None, retain=False,
                 should_stop: engine.ShouldStop | None = None):
        self.limits.check_arrays((output_grads or {}).items())
        state = self.sessions.get(session_id)
        try:
            grads = state.backward(output_grads, wrt, should_stop)
        except CancelledError:
            if not retain:  # the caller meant this Backward to end the session, and it left: end it now
                self.sessions.release(session_id)
            raise
        if not retain:
            self.sessions.release(session_id)
        return grads

    def release(self, session_id: str) -> bool:
        return self.sessions.release(session_id)

    def run(self, plan: Plan, feeds, output_grads=None, wrt=None, training=False, seed=None,
            should_stop: engine.ShouldStop | None = None):
        """(outputs, grads) of forward and backward in one stateless call."""
        state, grads = self._forward_backward(plan, feeds, output_grads, wrt, training, seed, should_stop)
        return state.outputs(), grads

    def trace(self, plan: Plan, feeds, output_grads=None, wrt=None, training=False, seed=None,
              should_stop: engine.ShouldStop | None = None):
        """(outputs, grads, values, value_grads): a Run that also returns every value and its gradient."""
        value_grads: dict = {}
        state, grads = self._forward_backward(plan, feeds, output_grads, wrt, training, seed, should_stop,
                                              value_grads)
        return state.outputs(), grads, state.named_values(), value_grads

    def _forward_backward(self, plan, feeds, output_grads, wrt, training, seed, should_stop, value_grads=None):
        self.limits.check_arrays(list(feeds.items()) + list((output_grads or {}).items()))
        return engine.forward_backward(plan, feeds, output_grads, wrt, training=training, seed=seed,
                                       should_stop=should_stop, observe=self.observe, value_grads=value_grads)

    def check_gradients(self, plan: Plan, feeds, wrt=None, output_grads=None, eps=1e-4,
                        should_stop: engine.ShouldStop | None = None):
        self.limits.check_arrays(feeds.items())
        return gradcheck.check_gradients(plan, feeds, wrt, output_grads, eps or 1e-4,
                                         self.limits.max_gradcheck_elements, should_stop,
                                         self.limits.max_gradcheck_work)
