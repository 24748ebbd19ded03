"""Both layers pass gradserve's conformance kit (schema, mutation, shapes, numerical gradients, determinism)."""

import numpy as np
import pytest

import gradserve_conv
from gradserve.testing import Case, plugin_cases

rng = np.random.default_rng(0)


def conv_inputs(n=2, c=3, size=5, filters=4, kernel=3):
    return {"x": rng.standard_normal((n, c, size, size)), "W": rng.standard_normal((filters, c, kernel, kernel)),
            "b": rng.standard_normal(filters)}


CASES = {
    "Convolution": [
        Case(conv_inputs(), id="valid"),
        Case(conv_inputs(), {"pad": 1}, id="same"),
        Case(conv_inputs(size=6, kernel=2), {"stride": 2, "pad": 1}, id="strided"),
        Case(conv_inputs(n=1, c=1, size=4, filters=1, kernel=4), id="one-position"),
    ],
    "Pooling": [
        Case({"x": rng.standard_normal((2, 3, 4, 4))}, {"pool_h": 2, "pool_w": 2, "stride": 2}, id="2x2"),
        Case({"x": rng.standard_normal((2, 2, 5, 5))}, {"pool_h": 3, "pool_w": 3, "stride": 1}, id="overlapping"),
        Case({"x": -rng.uniform(1, 2, (1, 2, 5, 5))}, {"pool_h": 2, "pool_w": 2, "stride": 2, "pad": 1},
             id="padded-negative"),
    ],
}


@pytest.mark.parametrize("case", plugin_cases(gradserve_conv, CASES), ids=str)
def test_layer_conforms(case):
    """Every case of every layer the plugin registers passes check_layer."""
    case.check()


def test_check_layer_fixture(check_layer):
    """The pytest plugin's fixture is the kit's check_layer, for one-off checks."""
    report = check_layer(gradserve_conv.Convolution, conv_inputs(n=1, c=1, size=3, filters=2, kernel=2))
    assert report.outputs["out"].shape == (1, 2, 2, 2)
