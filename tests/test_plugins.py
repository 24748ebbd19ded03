"""Plugin discovery: entry points, GRADSERVE_PLUGINS, broken plugins, duplicates, provenance."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import textwrap

import pytest

from gradserve.server.service.registry import PluginConflictError, load_registry

LAYER_PLUGIN = """
from gradserve.plugins import Layer, hookimpl

class {layer}(Layer):
    \"\"\"Doubles x.\"\"\"
    inputs = ("x",)
    def forward(self, x):
        return 2 * x
    def backward(self, dout):
        return (2 * dout,)

@hookimpl
def register_layers(register):
    register({layer})
"""


def make_distribution(root, dist, version, module, source):
    """A real distribution on disk: a module and a dist-info with METADATA and a `gradserve` entry point."""
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[gradserve]\n{module} = {module}\n")


@pytest.fixture()
def site(tmp_path, monkeypatch):
    """A folder on sys.path where tests drop plugin distributions."""
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in list(sys.modules):
        if name.startswith("gsplug_"):
            del sys.modules[name]
    importlib.invalidate_caches()


def statuses(registry):
    return {p.name: p for p in registry.plugins}


def test_builtins_come_through_our_entry_point():
    """The built-in layers are loaded through the `gradserve` entry point, with our distribution and version."""
    registry = load_registry(environ={})
    entry = registry.get("Mul")
    assert (entry.plugin, entry.distribution) == ("builtin", "gradserve")
    assert entry.version == importlib.metadata.version("gradserve")


def test_third_party_plugin_is_loaded_with_provenance(site):
    """An installed distribution's layers are registered with its name and version."""
    make_distribution(site, "gsplug-double", "1.2.3", "gsplug_double", LAYER_PLUGIN.format(layer="Double"))
    registry = load_registry(environ={})
    entry = registry.get("Double")
    assert (entry.plugin, entry.distribution, entry.version) == ("gsplug_double", "gsplug-double", "1.2.3")
    assert statuses(registry)["gsplug_double"].layers == ["Double"]


def test_allow_list_semantics(site):
    """GRADSERVE_PLUGINS: unset loads all, "a" only that distribution, "" none; the rest are blocked."""
    make_distribution(site, "gsplug-double", "1.0", "gsplug_double", LAYER_PLUGIN.format(layer="Double"))
    assert {"Double", "Mul"} <= set(load_registry(environ={}).layers)
    only = load_registry(environ={"GRADSERVE_PLUGINS": "gsplug_double"})
    assert set(only.layers) == {"Double"}
    assert statuses(only)["builtin"].status == "blocked"
    none = load_registry(environ={"GRADSERVE_PLUGINS": ""})
    assert none.layers == {}
    assert {p.status for p in none.plugins} == {"blocked"}


def test_plugin_that_fails_to_import_is_skipped(site):
    """A plugin raising at import is recorded as failed with the reason; the others load."""
    make_distribution(site, "gsplug-broken", "0.1", "gsplug_broken", "raise RuntimeError('no luck')\n")
    registry = load_registry(environ={})
    status = statuses(registry)["gsplug_broken"]
    assert status.status == "failed" and "RuntimeError: no luck" in status.reason
    assert "Mul" in registry.layers


def test_plugin_whose_hook_raises_is_skipped(site):
    """A register_layers hook that raises is recorded as failed; the others load."""
    source = "from gradserve.plugins import hookimpl\n@hookimpl\ndef register_layers(register):\n    raise KeyError('x')\n"
    make_distribution(site, "gsplug-raises", "0.1", "gsplug_raises", source)
    registry = load_registry(environ={})
    assert "register_layers failed: KeyError" in statuses(registry)["gsplug_raises"].reason
    assert "Mul" in registry.layers


def test_plugin_registering_an_invalid_layer_is_skipped(site):
    """Registering something that is not a valid Layer fails the plugin with the schema problem."""
    source = LAYER_PLUGIN.format(layer="Half").replace('inputs = ("x",)', 'inputs = ["x"]')
    make_distribution(site, "gsplug-invalid", "0.1", "gsplug_invalid", source)
    registry = load_registry(environ={})
    status = statuses(registry)["gsplug_invalid"]
    assert status.status == "failed" and "Half.inputs must be a tuple" in status.reason
    assert "Half" not in registry.layers


def test_misspelled_hook_is_caught(site):
    """A hookimpl with a misspelled name fails check_pending and the plugin is skipped."""
    source = "from gradserve.plugins import hookimpl\n@hookimpl\ndef register_layer(register):\n    pass\n"
    make_distribution(site, "gsplug-typo", "0.1", "gsplug_typo", source)
    status = statuses(load_registry(environ={}))["gsplug_typo"]
    assert status.status == "failed" and "register_layer" in status.reason


def test_duplicate_layer_name_names_both_plugins(site):
    """Two plugins registering one layer name is a start-up error naming both and the way out."""
    make_distribution(site, "gsplug-one", "1.0", "gsplug_one", LAYER_PLUGIN.format(layer="Twice"))
    make_distribution(site, "gsplug-two", "2.0", "gsplug_two", LAYER_PLUGIN.format(layer="Twice"))
    with pytest.raises(PluginConflictError) as info:
        load_registry(environ={})
    message = str(info.value)
    assert "'gsplug_one'" in message and "'gsplug_two'" in message and "GRADSERVE_PLUGINS" in message
    assert set(load_registry(environ={"GRADSERVE_PLUGINS": "gradserve,gsplug-one"}).layers) >= {"Twice", "Mul"}


def test_trace_env_writes_hook_calls_to_stderr(site, capsys):
    """GRADSERVE_TRACE_PLUGINS=1 traces the hook calls to stderr."""
    load_registry(environ={"GRADSERVE_TRACE_PLUGINS": "1"})
    assert "register_layers" in capsys.readouterr().err


def test_plugins_and_engine_import_without_grpc():
    """gradserve.plugins and the engine import without grpc; the client imports neither server nor plugins."""
    code = (
        "import sys\n"
        "import gradserve.plugins, gradserve.plugins.builtin, gradserve.server.engine.execute, gradserve.server.engine.plan,"
        " gradserve.server.service.operations, gradserve.server.service.registry\n"
        "assert not any(m == 'grpc' or m.startswith('grpc.') for m in sys.modules), 'grpc imported'\n"
        "import gradserve.client\n"
        "assert 'gradserve.server.engine.execute' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    client_only = (
        "import sys, gradserve.client, gradserve.client.book\n"
        "bad = [m for m in sys.modules if m.startswith(('gradserve.server', 'gradserve.plugins'))]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", client_only], check=True)


def test_duplicate_layer_name_stops_the_cli_with_a_message(site, capsys):
    """`gradserve plugins` with two plugins claiming one name exits 2 naming both, with no traceback."""
    from gradserve.server.cli import main

    make_distribution(site, "gsplug-one", "1.0", "gsplug_one", LAYER_PLUGIN.format(layer="Twice"))
    make_distribution(site, "gsplug-two", "2.0", "gsplug_two", LAYER_PLUGIN.format(layer="Twice"))
    assert main(["plugins"]) == 2
    err = capsys.readouterr().err
    assert "gradserve plugins: layer 'Twice' is registered by two plugins" in err and "Traceback" not in err
