"""The pytest plugin (entry point group pytest11): fixtures check_layer and check_plugin, and a report header.

pytest loads this in every project of an environment where gradserve is
installed, so it imports numpy and the kit only when a fixture is used.
"""

from __future__ import annotations

import importlib.metadata

import pytest


def pytest_report_header(config):
    """Which gradserve layer plugins this environment has: the first thing to look at when one is missing."""
    try:
        version = importlib.metadata.version("gradserve")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return None
    found = []
    for ep in importlib.metadata.entry_points(group="gradserve"):
        dist = getattr(ep, "dist", None)
        found.append(f"{ep.name} ({dist.metadata['Name']} {dist.version})" if dist is not None else ep.name)
    return f"gradserve {version}, layer plugins installed: {', '.join(sorted(found)) or 'none'}"


@pytest.fixture
def check_layer():
    """gradserve.testing.check_layer: ``check_layer(MyLayer, {"x": x}, attrs={...})`` raises on a broken layer."""
    from gradserve.testing import check_layer

    return check_layer


@pytest.fixture
def check_plugin():
    """gradserve.testing.check_plugin: ``check_plugin(my_module, {"MyLayer": Case({"x": x})})`` checks every layer."""
    from gradserve.testing import check_plugin

    return check_plugin


@pytest.fixture
def check_optimizer():
    """gradserve.testing.check_optimizer: ``check_optimizer(MyOptimizer, {"lr": 0.1})`` raises on a broken one."""
    from gradserve.testing import check_optimizer

    return check_optimizer
