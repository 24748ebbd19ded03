"""Run check_layer over every layer a plugin module registers, one or more test cases per layer."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Mapping, Sequence

import pluggy

from gradserve.plugins import PROJECT_NAME, Layer, hookspecs
from gradserve.testing.conformance import ConformanceError, LayerReport, check_layer


@dataclass
class Case:
    """Inputs (by name, or in schema order) and the other arguments of one check_layer() call."""

    inputs: Mapping[str, Any] | Sequence[Any]
    attrs: Mapping[str, Any] = field(default_factory=dict)
    training: bool = False
    seed: int | None = 0
    options: Mapping[str, Any] = field(default_factory=dict)  # eps, rtol, atol, max_elements
    id: str = ""


@dataclass
class LayerCase:
    """One layer with one Case: ``.check()`` runs it; ``str()`` is a readable pytest id."""

    layer: type[Layer]
    case: Case

    def check(self) -> LayerReport:
        __tracebackhide__ = True
        c = self.case
        return check_layer(self.layer, c.inputs, c.attrs, training=c.training, seed=c.seed, **dict(c.options))

    def __str__(self) -> str:
        if self.case.id:
            return f"{self.layer.name}-{self.case.id}"
        parts = [f"{k}={v}" for k, v in self.case.attrs.items()] + (["training"] if self.case.training else [])
        return f"{self.layer.name}[{','.join(parts)}]" if parts else self.layer.name


def plugin_layers(module: ModuleType) -> dict[str, type[Layer]]:
    """The layers ``module`` registers, found the way the server finds them (its register_layers hook).

    Raises ConformanceError (check "registration") when the module has no
    valid hook, registers something that is not a Layer, or one name twice.
    """
    __tracebackhide__ = True
    plugin = getattr(module, "__name__", repr(module))
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    try:
        pm.register(module)
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise ConformanceError("registration", plugin, f"invalid hook: {exc}") from None
    if not pm.hook.register_layers.get_hookimpls():
        raise ConformanceError("registration", plugin, "the module has no @hookimpl-decorated register_layers "
                                                       "(import hookimpl from gradserve.plugins)")
    found: dict[str, type[Layer]] = {}

    def register(layer_cls):
        if not (isinstance(layer_cls, type) and issubclass(layer_cls, Layer)):
            raise ConformanceError("registration", plugin, f"register() takes a Layer subclass, got {layer_cls!r}")
        if layer_cls.name in found:
            raise ConformanceError("registration", plugin, f"layer name {layer_cls.name!r} is registered twice")
        found[layer_cls.name] = layer_cls

    pm.hook.register_layers(register=register)
    return found


def plugin_cases(module: ModuleType, cases: Mapping[str, Case | Sequence[Case]]) -> list[LayerCase]:
    """One LayerCase per (registered layer, case), for ``pytest.mark.parametrize(..., ids=str)``.

    Every layer the module registers needs at least one case, so that a layer
    added later cannot go unchecked; a case for a name the module does not
    register is an error too.
    """
    __tracebackhide__ = True
    layers = plugin_layers(module)
    plugin = getattr(module, "__name__", repr(module))
    untested = sorted(set(layers) - set(cases))
    if untested:
        raise ConformanceError("registration", plugin, f"no test case for registered layer(s) {untested}; "
                                                       f"add them to the cases")
    unknown = sorted(set(cases) - set(layers))
    if unknown:
        raise ConformanceError("registration", plugin, f"cases name layer(s) {unknown} that the module does not "
                                                       f"register (it registers {sorted(layers)})")
    out = []
    for name, layer_cls in layers.items():
        given = cases[name]
        for case in ([given] if isinstance(given, Case) else list(given)):
            out.append(LayerCase(layer_cls, case))
    return out


def check_plugin(module: ModuleType, cases: Mapping[str, Case | Sequence[Case]]) -> dict[str, list[LayerReport]]:
    """check_layer() every case of every layer ``module`` registers; reports by layer name."""
    __tracebackhide__ = True
    reports: dict[str, list[LayerReport]] = {}
    for item in plugin_cases(module, cases):
        reports.setdefault(item.layer.name, []).append(item.check())
    return reports
