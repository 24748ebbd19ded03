"""The conformance kit for plugins: check_layer, check_plugin, plugin_cases, check_optimizer (no server, no gRPC)."""

from gradserve.testing.cases import Case, LayerCase, check_plugin, plugin_cases, plugin_layers
from gradserve.testing.conformance import (CHECKS, OPTIMIZER_CHECKS, ConformanceError, LayerReport, OptimizerReport,
                                           check_layer, check_optimizer)

__all__ = [
    "CHECKS", "OPTIMIZER_CHECKS", "Case", "ConformanceError", "LayerCase", "LayerReport", "OptimizerReport",
    "check_layer", "check_optimizer", "check_plugin", "plugin_cases", "plugin_layers",
]
