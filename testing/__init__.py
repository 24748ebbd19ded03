"""The conformance kit for layer plugins: check_layer, check_plugin, plugin_cases (no server, no gRPC)."""

from gradserve.testing.cases import Case, LayerCase, check_plugin, plugin_cases, plugin_layers
from gradserve.testing.conformance import CHECKS, ConformanceError, LayerReport, check_layer

__all__ = [
    "CHECKS", "Case", "ConformanceError", "LayerCase", "LayerReport", "check_layer", "check_plugin", "plugin_cases",
    "plugin_layers",
]
