"""Both layers pass gradserve's conformance kit (schema, mutation, shapes, numerical gradients, determinism)."""

import numpy as np
import pytest

import gradserve_conv
from gradserve.testing import Case, plugin_cases

rng = np.random.default_rng(0)


def spread(*shape):
    """Distinct values (a random permutation of a grid), so no group of Maxout ties for its max."""
    return rng.permutation(np.linspace(-2, 2, int(np.prod(shape)))).reshape(shape)


CASES = {
    "Maxout": [
        Case({"x": spread(2, 6, 3, 3)}, id="channels"),
        Case({"x": spread(4, 6)}, {"pieces": 3}, id="features"),
        Case({"x": spread(2, 3, 4)}, {"pieces": 4, "axis": -1}, id="last-axis"),
    ],
    "Snake": [
        Case({"x": rng.standard_normal((2, 3, 4, 4)), "alpha": rng.uniform(0.5, 2.0, 3)}, id="per-channel"),
        Case({"x": rng.standard_normal((5, 4)), "alpha": rng.uniform(0.5, 2.0, 4)}, id="features"),
        Case({"x": rng.standard_normal((2, 3, 5)), "alpha": rng.uniform(0.5, 2.0, (1, 1, 5))}, id="broadcast"),
    ],
}


@pytest.mark.parametrize("case", plugin_cases(gradserve_conv, CASES), ids=str)
def test_layer_conforms(case):
    """Every case of every layer the plugin registers passes check_layer."""
    case.check()


def test_check_layer_fixture(check_layer):
    """The pytest plugin's fixture is the kit's check_layer, for one-off checks."""
    report = check_layer(gradserve_conv.Maxout, {"x": spread(1, 4, 2, 2)})
    assert report.outputs["out"].shape == (1, 2, 2, 2)
