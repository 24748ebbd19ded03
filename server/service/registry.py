"""The registry of layers and optimizers: plugins loaded through the `gradserve` entry points, with provenance."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import sys
from dataclasses import dataclass, field

import pluggy

from gradserve.plugins import PROJECT_NAME, Layer, Optimizer, SchemaError, hookspecs

_LOGGER = logging.getLogger(__name__)

PLUGINS_ENV = "GRADSERVE_PLUGINS"
TRACE_ENV = "GRADSERVE_TRACE_PLUGINS"


class PluginConflictError(RuntimeError):
    """Two plugins register the same layer (or optimizer) name; the server refuses to start."""


@dataclass(frozen=True)
class LayerEntry:
    """A registered layer class and where it came from."""

    cls: type[Layer]
    plugin: str
    distribution: str
    version: str


@dataclass(frozen=True)
class OptimizerEntry:
    """A registered optimizer class and where it came from."""

    cls: type[Optimizer]
    plugin: str
    distribution: str
    version: str


@dataclass
class PluginStatus:
    """What happened to one plugin at load: loaded, blocked (by GRADSERVE_PLUGINS) or failed."""

    name: str
    distribution: str
    version: str
    status: str
    reason: str = ""
    layers: list[str] = field(default_factory=list)
    optimizers: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"name": self.name, "distribution": self.distribution, "version": self.version,
                "status": self.status, "reason": self.reason, "layers": list(self.layers),
                "optimizers": list(self.optimizers)}


@dataclass
class Registry:
    """Layer classes by op name, optimizer classes by lower-cased name, and the load status of every plugin."""

    layers: dict[str, LayerEntry] = field(default_factory=dict)
    plugins: list[PluginStatus] = field(default_factory=list)
    optimizers: dict[str, OptimizerEntry] = field(default_factory=dict)

    def get(self, op: str) -> LayerEntry | None:
        return self.layers.get(op)

    def names(self) -> list[str]:
        return sorted(self.layers)

    def optimizer(self, name: str) -> OptimizerEntry | None:
        """The optimizer registered as ``name``, whatever its case ("adam", "Adam")."""
        return self.optimizers.get(name.lower())


def allowed_distributions(environ=os.environ) -> set[str] | None:
    """GRADSERVE_PLUGINS: unset means every plugin; "a,b" only those distributions; "" none."""
    value = environ.get(PLUGINS_ENV)
    if value is None:
        return None
    return {_normalize(name) for name in value.split(",") if name.strip()}


def _normalize(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(".", "-")


def make_plugin_manager(environ=os.environ) -> pluggy.PluginManager:
    """A fresh plugin manager with our hookspecs (and tracing when GRADSERVE_TRACE_PLUGINS=1)."""
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    if environ.get(TRACE_ENV, "") not in ("", "0"):
        pm.trace.root.setwriter(sys.stderr.write)
        pm.enable_tracing()
    return pm


def load_registry(environ=os.environ, entry_points=None) -> Registry:
    """Load every `gradserve` entry point (restricted by GRADSERVE_PLUGINS) into a new Registry.

    A plugin that fails to import, fails hook validation, raises in its hook or
    registers an invalid layer is recorded and skipped. Two plugins claiming
    one layer name raise PluginConflictError.
    """
    pm = make_plugin_manager(environ)
    allowed = allowed_distributions(environ)
    registry = Registry()
    if entry_points is None:
        entry_points = importlib.metadata.entry_points(group=PROJECT_NAME)
    for ep in sorted(entry_points, key=lambda e: e.name):
        dist = getattr(ep, "dist", None)
        dist_name = dist.metadata["Name"] if dist is not None else ep.name
        version = dist.version if dist is not None else ""
        status = PluginStatus(ep.name, dist_name, version, "loaded")
        registry.plugins.append(status)
        if allowed is not None and _normalize(dist_name) not in allowed:
            pm.set_blocked(ep.name)
            status.status, status.reason = "blocked", f"{PLUGINS_ENV} does not list {dist_name}"
            continue
        try:
            module = ep.load()
            pm.register(module, name=ep.name)
        except Exception as exc:  # a broken plugin must not stop the others
            _fail(status, f"import failed: {type(exc).__name__}: {exc}")
            continue
        try:
            pm.check_pending()
        except pluggy.PluginValidationError as exc:
            pm.unregister(name=ep.name)
            _fail(status, f"invalid hook: {exc}")
            continue
        _collect(pm, ep.name, status, registry)
    return registry


def _fail(status: PluginStatus, reason: str) -> None:
    status.status, status.reason = "failed", reason
    _LOGGER.warning("plugin %s (%s %s) skipped: %s", status.name, status.distribution, status.version, reason)


def _collect(pm: pluggy.PluginManager, plugin_name: str, status: PluginStatus, registry: Registry) -> None:
    """Call one plugin's register_layers and register_optimizers hooks and add what they give, all or nothing."""
    found: list[type[Layer]] = []
    found_optimizers: list[type[Optimizer]] = []

    def register(layer_cls):
        if not (isinstance(layer_cls, type) and issubclass(layer_cls, Layer)):
            raise SchemaError(f"register() takes a Layer subclass, got {layer_cls!r}")
        layer_cls.validate_schema()
        found.append(layer_cls)

    def register_optimizer(optimizer_cls):
        if not (isinstance(optimizer_cls, type) and issubclass(optimizer_cls, Optimizer)):
            raise SchemaError(f"register() takes an Optimizer subclass, got {optimizer_cls!r}")
        optimizer_cls.validate_schema()
        found_optimizers.append(optimizer_cls)

    others = [p for p in pm.get_plugins() if pm.get_name(p) != plugin_name]
    for hook, callback in (("register_layers", register), ("register_optimizers", register_optimizer)):
        try:
            pm.subset_hook_caller(hook, remove_plugins=others)(register=callback)
        except Exception as exc:  # includes SchemaError from register()
            _fail(status, f"{hook} failed: {type(exc).__name__}: {exc}")
            return
    for optimizer_cls in found_optimizers:
        _check_unclaimed(registry.optimizers.get(optimizer_cls.name.lower()), "optimizer", optimizer_cls.name,
                         plugin_name, status)
    for layer_cls in found:
        _check_unclaimed(registry.layers.get(layer_cls.name), "layer", layer_cls.name, plugin_name, status)
        registry.layers[layer_cls.name] = LayerEntry(layer_cls, plugin_name, status.distribution, status.version)
        status.layers.append(layer_cls.name)
    for optimizer_cls in found_optimizers:
        registry.optimizers[optimizer_cls.name.lower()] = OptimizerEntry(optimizer_cls, plugin_name,
                                                                         status.distribution, status.version)
        status.optimizers.append(optimizer_cls.name)


def _check_unclaimed(previous, kind: str, name: str, plugin_name: str, status: PluginStatus) -> None:
    """Raise PluginConflictError when ``previous`` (an entry already registered under ``name``) exists."""
    if previous is not None:
        raise PluginConflictError(
            f"{kind} {name!r} is registered by two plugins: {previous.plugin!r} "
            f"(distribution {previous.distribution} {previous.version}) and {plugin_name!r} "
            f"(distribution {status.distribution} {status.version}). A client asking for "
            f"{name!r} could not know which it gets: uninstall one, or set {PLUGINS_ENV} "
            f"to a comma-separated list of the distributions to load, leaving one of them out."
        )
