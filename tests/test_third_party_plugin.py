"""A real third-party plugin (examples/gradserve-conv) pip-installed beside gradserve in a throwaway venv.

The venv is built once per session, offline after one `pip download`: the
plugins are built with --no-build-isolation, gradserve's wheel comes from the
`gradserve_wheel` fixture, and the install uses --no-index --no-compile.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from grpc_health.v1 import health_pb2

import gradserve.client as gs
from serve_process import ServeProcess, health_status

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "gradserve-conv"
CONV_LAYERS = ["Maxout", "Snake"]  # not built in: a name clash with a built-in would be a start-up error

BROKEN_PYPROJECT = """\
[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"

[project]
name = "gradserve-broken"
version = "0.0.1"
dependencies = ["gradserve"]

[project.entry-points.gradserve]
broken = "gradserve_broken"
"""


def run(*args, **kwargs) -> subprocess.CompletedProcess:
    """A subprocess that must succeed; its output is in the failure message when it does not."""
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{' '.join(map(str, args))} exited {result.returncode}:\n{result.stderr}"
    return result


def clean_env(**overrides) -> dict:
    """This environment without what would leak the checkout or our plugin choice into the venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GRADSERVE_PLUGINS")}
    return {**env, **overrides}


@pytest.fixture(scope="session")
def plugin_venv(tmp_path_factory, gradserve_wheel) -> Path:
    """A fresh venv holding gradserve, gradserve-conv, a plugin that fails to import, and pytest; its bin/."""
    work = tmp_path_factory.mktemp("third_party")
    conv = work / "gradserve-conv"
    shutil.copytree(EXAMPLE, conv, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info", ".pytest*"))
    broken = work / "gradserve-broken"
    (broken / "src" / "gradserve_broken").mkdir(parents=True)
    (broken / "pyproject.toml").write_text(BROKEN_PYPROJECT)
    # A plugin whose own dependency is missing: the most common way a plugin fails in production.
    (broken / "src" / "gradserve_broken" / "__init__.py").write_text("import gradserve_missing_dependency\n")
    wheels = work / "wheels"
    pip = [sys.executable, "-m", "pip"]
    run(*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", wheels, conv, broken, cwd=work)
    # The one step that needs an index (or pip's cache): gradserve's and pytest's dependencies as wheels.
    run(*pip, "download", "-q", "-d", wheels, gradserve_wheel, "pytest", cwd=work)
    venv = work / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    run(*pip, "--python", venv / "bin" / "python", "install", "-q", "--no-compile", "--no-index", "--find-links",
        wheels, "gradserve-conv", "gradserve-broken", "pytest", cwd=work)
    return venv / "bin"


def gradserve_plugins(bin_dir: Path, **env) -> dict[str, dict]:
    """`gradserve plugins` run in the venv, parsed: {plugin name: its JSON object}."""
    out = run(bin_dir / "gradserve", "plugins", env=clean_env(**env), cwd=bin_dir).stdout
    return {item["name"]: item for item in json.loads(out)}


@pytest.fixture(scope="session")
def venv_server(plugin_venv):
    """`gradserve serve --port 0` from the venv, every installed plugin allowed."""
    with pytest.MonkeyPatch.context() as env:  # ServeProcess copies os.environ
        env.delenv("PYTHONPATH", raising=False)
        env.delenv("GRADSERVE_PLUGINS", raising=False)
        server = ServeProcess(command=[str(plugin_venv / "gradserve")])
    with server:
        yield server


def load_training_script():
    """The example's train_simple_convnet.py as a module, so the test trains exactly as its command does."""
    spec = importlib.util.spec_from_file_location("train_simple_convnet", EXAMPLE / "train_simple_convnet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_plugins_command_reports_the_installed_plugin(plugin_venv):
    """`gradserve plugins` lists the pip-installed plugin with name, distribution, version, layers and status."""
    conv = gradserve_plugins(plugin_venv)["conv"]
    assert conv == {"name": "conv", "distribution": "gradserve-conv", "version": "0.1.0", "status": "loaded",
                    "reason": "", "layers": CONV_LAYERS, "optimizers": []}


@pytest.mark.parametrize("allow, expected", [
    (None, {"builtin": "loaded", "conv": "loaded", "broken": "failed"}),
    ("gradserve-conv", {"builtin": "blocked", "conv": "loaded", "broken": "blocked"}),
    ("", {"builtin": "blocked", "conv": "blocked", "broken": "blocked"}),
], ids=["unset-all", "only-the-example", "empty-none"])
def test_gradserve_plugins_env_var(plugin_venv, allow, expected):
    """GRADSERVE_PLUGINS: unset loads every plugin, a list only those distributions, empty none."""
    env = {} if allow is None else {"GRADSERVE_PLUGINS": allow}
    plugins = gradserve_plugins(plugin_venv, **env)
    assert {name: p["status"] for name, p in plugins.items()} == expected
    for name, status in expected.items():
        if status == "blocked":
            assert plugins[name]["layers"] == [] and "GRADSERVE_PLUGINS" in plugins[name]["reason"]


def test_failing_plugin_is_reported_with_its_reason(plugin_venv):
    """A plugin that cannot import is `failed`, saying why, and the other plugins still load."""
    plugins = gradserve_plugins(plugin_venv)
    assert plugins["broken"]["distribution"] == "gradserve-broken"
    assert plugins["broken"]["reason"] == ("import failed: ModuleNotFoundError: "
                                           "No module named 'gradserve_missing_dependency'")
    assert "Mul" in plugins["builtin"]["layers"] and plugins["conv"]["layers"] == CONV_LAYERS


def test_server_stays_serving_beside_a_failed_plugin(venv_server):
    """The server starts and health is SERVING with the failure visible in its log and in ListLayers."""
    assert health_status(venv_server.target) == health_pb2.HealthCheckResponse.SERVING
    with gs.connect(venv_server.target) as client:
        listed = client.list_layers()
    broken = next(p for p in listed.plugins if p["name"] == "broken")
    assert broken["status"] == "failed" and "gradserve_missing_dependency" in broken["reason"]
    assert {"Mul", "Affine", *CONV_LAYERS} <= {layer.name for layer in listed.layers}
    assert "plugin broken (gradserve-broken 0.0.1) skipped" in venv_server.log()


def test_layers_command_shows_the_plugin_provenance(plugin_venv, venv_server):
    """`gradserve layers --json` shows Maxout and Snake with their plugin, and the failed plugin on stderr."""
    result = run(plugin_venv / "gradserve", "layers", "--target", venv_server.target, "--json", env=clean_env())
    layers = {layer["name"]: layer for layer in json.loads(result.stdout)}
    assert "plugin broken (gradserve-broken 0.0.1) is failed on the server: import failed" in result.stderr
    for name in CONV_LAYERS:
        assert (layers[name]["plugin"], layers[name]["distribution"], layers[name]["version"]) == \
            ("conv", "gradserve-conv", "0.1.0")
    assert layers["Snake"]["inputs"] == ["x", "alpha"]
    assert set(layers["Maxout"]["attributes"]) == {"pieces", "axis"}
    assert layers["Convolution"]["plugin"] == "builtin"


def test_example_tests_pass_with_the_installed_kit(plugin_venv, tmp_path):
    """The plugin's own tests (the conformance kit through its pytest plugin) pass in the venv."""
    tests = tmp_path / "gradserve-conv"
    shutil.copytree(EXAMPLE, tests, ignore=shutil.ignore_patterns("__pycache__", "src", ".pytest*"))
    result = run(plugin_venv / "pytest", "-q", "-p", "no:cacheprovider", cwd=tests,
                 env=clean_env(PYTHONDONTWRITEBYTECODE="1"))
    assert " passed" in result.stdout and "failed" not in result.stdout


def test_simple_convnet_trains_through_the_plugin(venv_server):
    """SimpleConvNet with the plugin's Snake and Maxout learns the digits (2 epochs here; the script reaches 0.95)."""
    script = load_training_script()
    with gs.connect(venv_server.target) as client:
        net, history = script.train(client, epochs=2, lr=0.005, log=lambda line: None)
    assert [node.op for node in net.graph.to_proto().nodes] == [
        "Convolution", "Snake", "Pooling", "Affine", "Maxout", "Affine", "SoftmaxWithLoss"]
    assert history.loss[1] < history.loss[0] / 2
    assert history.test_acc[-1] >= 0.85
    assert all(np.isfinite(p).all() for p in net.params.values())
