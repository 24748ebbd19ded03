"""Central differences, the numerical gradient shared by CheckGradients and the conformance kit."""

import numpy as np

from gradserve.plugins.numerical import central_differences


def test_matches_the_analytic_derivative_in_float64():
    """d/dx sum(sin x) = cos x, to central differences' O(eps^2) error, at every element in flat order."""
    x = np.linspace(-2, 2, 12).reshape(3, 4)
    numerical = central_differences(lambda a: np.sin(a).sum(), x, 1e-5)
    np.testing.assert_allclose(numerical, np.cos(x).reshape(-1), rtol=0, atol=1e-9)


def test_vector_loss_gives_one_row_per_loss_at_the_given_positions():
    """A loss returning a vector gives a row per entry, a column per requested flat position."""
    x = np.array([0.5, -1.0, 2.0, 3.0])
    positions = [3, 1]
    numerical = central_differences(lambda a: np.array([np.sum(a ** 2), np.sum(np.exp(a))]), x, 1e-6, positions)
    expected = np.array([2 * x[positions], np.exp(x[positions])])
    np.testing.assert_allclose(numerical, expected, rtol=1e-7)


def test_input_is_left_untouched():
    """The caller's array is never bumped: the differences work on a private copy."""
    x = np.arange(5.0)
    seen = []
    central_differences(lambda a: seen.append(a is x) or float(a.sum()), x, 0.1)
    assert np.array_equal(x, np.arange(5.0)) and not any(seen)
