"""Maxout and Snake compute what their definitions say, checked against direct loops and formulas."""

import numpy as np
import pytest

from gradserve_conv import Maxout, Snake

rng = np.random.default_rng(1)


def run(layer_cls, *inputs, **attrs):
    return layer_cls(**layer_cls.bind_attributes(attrs)).forward(*inputs)


def test_maxout_takes_the_max_of_each_channel_group():
    """Output channel c is the max of input channels c*pieces ... c*pieces + pieces - 1, pixel by pixel."""
    x = rng.standard_normal((2, 6, 3, 4))
    out = run(Maxout, x, pieces=3)
    for c in range(2):
        np.testing.assert_array_equal(out[:, c], x[:, 3 * c:3 * c + 3].max(axis=1))


def test_maxout_gradient_goes_to_the_first_maximum():
    """With a tie, the whole gradient goes to the first channel of the group, as argmax picks it."""
    layer = Maxout(**Maxout.bind_attributes({}))
    layer.forward(np.array([[1.0, 1.0, 0.0, 2.0]]))
    (dx,) = layer.backward(np.array([[5.0, 7.0]]))
    np.testing.assert_array_equal(dx, [[5.0, 0.0, 0.0, 7.0]])


def test_snake_is_its_formula_per_channel():
    """Snake(x, alpha) = x + sin(alpha_c x)^2 / alpha_c with channel c's alpha."""
    x, alpha = rng.standard_normal((2, 3, 4)), np.array([0.5, 1.0, 3.0])
    out = run(Snake, x, alpha)
    for c in range(3):
        np.testing.assert_allclose(out[:, c], x[:, c] + np.sin(alpha[c] * x[:, c]) ** 2 / alpha[c], rtol=1e-14)


def test_float32_stays_float32():
    """float32 inputs compute in float32."""
    x = rng.standard_normal((1, 4, 3)).astype(np.float32)
    assert run(Maxout, x).dtype == np.float32
    assert run(Snake, x, np.ones(4, np.float32)).dtype == np.float32


@pytest.mark.parametrize("attrs, message", [
    ({"pieces": 4}, "divide into groups of pieces=4"),
    ({"pieces": 0}, "pieces >= 1"),
    ({"axis": 5}, "out of range"),
])
def test_maxout_rejects_bad_groups(attrs, message):
    """Groups that do not divide the channels are a ValueError saying what to change."""
    with pytest.raises(ValueError, match=message):
        run(Maxout, rng.standard_normal((1, 6, 2)), **attrs)


def test_snake_rejects_an_alpha_per_wrong_channel_count():
    """A 1-D alpha must have one value per channel of x."""
    with pytest.raises(ValueError, match=r"alpha of shape \(3,\), one per channel"):
        run(Snake, rng.standard_normal((2, 3, 4)), np.ones(4))
