"""Optimizers are plugins: registered through register_optimizers with provenance, checked by the kit, listed."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import gradserve.client as gs
from gradserve.client.network import TwoLayerNet
from gradserve.plugins import Optimizer
from gradserve.plugins.builtin.optimizers import OPTIMIZERS
from gradserve.proto import gradserve_pb2 as pb
from gradserve.proto import gradserve_pb2_grpc as pb_grpc
from gradserve.server.rpc.server import start_server
from gradserve.server.service.registry import PluginConflictError, load_registry
from gradserve.testing import ConformanceError, check_optimizer

from test_plugins import make_distribution, site, statuses  # noqa: F401 - site is a fixture

SIGN_PLUGIN = """
import numpy as np
from gradserve.plugins import Optimizer, hookimpl

class {name}(Optimizer):
    \"\"\"Steps by the gradient's sign: W <- W - lr * sign(dW).\"\"\"
    settings = {{"lr": 0.1}}
    def update(self, param, grad, state, step):
        param -= self.lr * np.sign(grad)

@hookimpl
def register_optimizers(register):
    register({name})
"""

BROKEN_PLUGIN = """
from gradserve.plugins import Optimizer, hookimpl

class NoUpdate(Optimizer):
    \"\"\"Forgets to implement update.\"\"\"

@hookimpl
def register_optimizers(register):
    register(NoUpdate)
"""


def test_the_books_six_are_built_in_with_provenance():
    """SGD, Momentum, Nesterov, AdaGrad, RMSprop and Adam come through our entry point, found by any case."""
    registry = load_registry(environ={})
    names = sorted(entry.cls.name for entry in registry.optimizers.values())
    assert names == ["AdaGrad", "Adam", "Momentum", "Nesterov", "RMSprop", "SGD"]
    entry = registry.optimizer("ADAM")
    assert (entry.plugin, entry.distribution) == ("builtin", "gradserve")
    assert entry.cls.settings == {"lr": 0.001, "beta1": 0.9, "beta2": 0.999} and entry.cls.state == ("m", "v")
    assert statuses(registry)["builtin"].optimizers == ["SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam"]


def test_a_third_party_optimizer_trains_a_stream(site, registry):
    """An optimizer from an installed distribution is registered with its provenance and a Train stream uses it."""
    make_distribution(site, "gsplug-sign", "1.2", "gsplug_sign", SIGN_PLUGIN.format(name="SignSGD"))
    with_plugin = load_registry()
    entry = with_plugin.optimizer("signsgd")
    assert (entry.plugin, entry.distribution, entry.version) == ("gsplug_sign", "gsplug-sign", "1.2")
    running = start_server("127.0.0.1:0", with_plugin)
    try:
        with gs.connect(f"127.0.0.1:{running.port}") as client:
            net = TwoLayerNet(3, 2, 2, dtype="float64", seed=0, client=client)
            x, t = np.ones((2, 3)), np.array([0, 1])
            grads = net.forward_backward(x, t).grads
            with net.trainer("SignSGD", lr=0.25) as trainer:
                trainer.step(net.batch_feeds(x, t))
                final = trainer.close()
    finally:
        running.stop(None)
    np.testing.assert_array_equal(final["W1"], net.params["W1"] - 0.25 * np.sign(grads["W1"]))


def test_two_plugins_claiming_one_optimizer_name_is_an_error_naming_both(site):
    """Optimizer names clash whatever their case; the error names both plugins and how to exclude one."""
    make_distribution(site, "gsplug-one", "1.0", "gsplug_one", SIGN_PLUGIN.format(name="Lion"))
    make_distribution(site, "gsplug-two", "2.0", "gsplug_two", SIGN_PLUGIN.format(name="LION"))
    with pytest.raises(PluginConflictError) as raised:
        load_registry()
    message = str(raised.value)
    assert "optimizer 'LION' is registered by two plugins: 'gsplug_one'" in message and "'gsplug_two'" in message
    assert "GRADSERVE_PLUGINS" in message


def test_a_broken_optimizer_plugin_is_skipped_and_reported(site):
    """An optimizer class without update fails its plugin, with the reason; the built-ins still load."""
    make_distribution(site, "gsplug-broken", "0.1", "gsplug_broken", BROKEN_PLUGIN)
    registry = load_registry()
    status = statuses(registry)["gsplug_broken"]
    assert status.status == "failed" and "does not implement update()" in status.reason
    assert registry.optimizer("adam") is not None and registry.optimizer("NoUpdate") is None


def test_list_layers_and_gradserve_plugins_show_the_optimizers(target):
    """ListLayers lists every optimizer with its doc, settings, state and provenance; `gradserve plugins` too."""
    import grpc

    with grpc.insecure_channel(target) as channel:
        response = pb_grpc.GradServeStub(channel).ListLayers(pb.ListLayersRequest(), timeout=30)
    adam = next(o for o in response.optimizers if o.name == "Adam")
    assert dict(adam.settings) == {"lr": 0.001, "beta1": 0.9, "beta2": 0.999} and list(adam.state) == ["m", "v"]
    assert (adam.plugin, adam.distribution) == ("builtin", "gradserve") and "bias correction" in adam.doc
    assert "Nesterov" in next(p for p in response.plugins if p.name == "builtin").optimizers
    done = subprocess.run([sys.executable, "-m", "gradserve.server.cli", "plugins"], capture_output=True, text=True,
                          timeout=60, check=True)
    builtin = next(p for p in json.loads(done.stdout) if p["name"] == "builtin")
    assert builtin["optimizers"] == ["SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam"]


@pytest.mark.parametrize("optimizer", OPTIMIZERS, ids=lambda cls: cls.name)
def test_every_built_in_optimizer_passes_the_kit(optimizer):
    """Each built-in passes check_optimizer with its defaults and with other settings."""
    report = check_optimizer(optimizer)
    assert report.checks[-1] == "descent" and set(report.params) == {"float32", "float64"}
    check_optimizer(optimizer, {"lr": 0.5})


class MutatesGrad(Optimizer):
    """Scales the gradient in place before using it."""

    settings = {"lr": 0.1}

    def update(self, param, grad, state, step):
        grad *= self.lr
        param -= grad


class Rebinds(Optimizer):
    """Rebinds param instead of updating it."""

    settings = {"lr": 0.1}

    def update(self, param, grad, state, step):
        param = param - self.lr * grad  # noqa: F841 - the bug under test


class Random(Optimizer):
    """Adds noise of its own."""

    settings = {"lr": 0.1}

    def update(self, param, grad, state, step):
        param -= self.lr * grad * np.random.default_rng().random()


class WidensState(Optimizer):
    """Replaces its state with a float64 array."""

    settings = {"lr": 0.1}
    state = ("v",)

    def update(self, param, grad, state, step):
        state["v"] = state["v"].astype(np.float64) + grad
        param -= self.lr * state["v"].astype(param.dtype)


class Ascends(Optimizer):
    """Climbs the gradient."""

    settings = {"lr": 0.1}

    def update(self, param, grad, state, step):
        param += self.lr * grad


@pytest.mark.parametrize("optimizer,check", [
    (MutatesGrad, "grad mutation"), (Rebinds, "update"), (Random, "determinism"), (WidensState, "state shape"),
    (Ascends, "descent"),
])
def test_the_kit_catches_a_broken_optimizer(optimizer, check):
    """check_optimizer names the check a broken optimizer fails."""
    with pytest.raises(ConformanceError) as raised:
        check_optimizer(optimizer)
    assert raised.value.check == check, str(raised.value)


def test_the_kit_refuses_unknown_settings():
    """check_optimizer with a setting the class does not declare fails "optimizer schema", naming it."""
    with pytest.raises(ConformanceError, match="no setting 'momentum'"):
        check_optimizer(OPTIMIZERS[0], {"momentum": 0.9})
