"""Convolution and Pooling compute what their definitions say, checked against direct loops."""

import numpy as np
import pytest

from gradserve_conv import Convolution, Pooling
from gradserve_conv.im2col import col2im, im2col

rng = np.random.default_rng(1)


def run(layer_cls, *inputs, **attrs):
    return layer_cls(**layer_cls.bind_attributes(attrs)).forward(*inputs)


def loop_convolution(x, W, b, stride, pad):
    x = np.pad(x, [(0, 0), (0, 0), (pad, pad), (pad, pad)])
    n, _, h, w = x.shape
    fn, _, fh, fw = W.shape
    out = np.zeros((n, fn, (h - fh) // stride + 1, (w - fw) // stride + 1))
    for i in range(out.shape[2]):
        for j in range(out.shape[3]):
            window = x[:, :, i * stride:i * stride + fh, j * stride:j * stride + fw]
            out[:, :, i, j] = np.tensordot(window, W, axes=([1, 2, 3], [1, 2, 3])) + b
    return out


@pytest.mark.parametrize("stride, pad", [(1, 0), (1, 1), (2, 1), (3, 2)])
def test_convolution_matches_loops(stride, pad):
    """Convolution equals the sum over each window of x times each filter, plus the filter's bias."""
    x, W, b = rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((4, 3, 3, 2)), rng.standard_normal(4)
    np.testing.assert_allclose(run(Convolution, x, W, b, stride=stride, pad=pad),
                               loop_convolution(x, W, b, stride, pad), rtol=1e-12, atol=1e-12)


def test_pooling_takes_the_max_of_each_window():
    """2x2 max pooling with stride 2 keeps each block's largest value, channel by channel."""
    x = rng.standard_normal((2, 3, 4, 6))
    expected = x.reshape(2, 3, 2, 2, 3, 2).max(axis=(3, 5))
    np.testing.assert_array_equal(run(Pooling, x, pool_h=2, pool_w=2, stride=2), expected)


def test_pooling_padding_never_wins():
    """With padding, a window of negative values still gives its largest value, not the padding."""
    x = -np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    out = run(Pooling, x, pool_h=2, pool_w=2, stride=2, pad=1)
    np.testing.assert_array_equal(out[0, 0], [[-1.0, -2.0], [-4.0, -5.0]])


def test_float32_stays_float32():
    """im2col keeps x's dtype, so float32 requests compute in float32."""
    x = rng.standard_normal((1, 2, 5, 5)).astype(np.float32)
    W, b = rng.standard_normal((3, 2, 3, 3)).astype(np.float32), np.zeros(3, np.float32)
    assert run(Convolution, x, W, b, pad=1).dtype == np.float32
    assert run(Pooling, x, pool_h=2, pool_w=2).dtype == np.float32


def test_col2im_is_the_adjoint_of_im2col():
    """<im2col(x), c> == <x, col2im(c)>: col2im sums exactly what im2col copied, which backward relies on."""
    x = rng.standard_normal((2, 3, 6, 5))
    col = im2col(x, 3, 2, stride=2, pad=1)
    c = rng.standard_normal(col.shape)
    assert np.isclose(np.sum(col * c), np.sum(x * col2im(c, x.shape, 3, 2, stride=2, pad=1)))


@pytest.mark.parametrize("attrs, message", [
    ({"pool_h": 2, "pool_w": 2, "pad": 2}, "pad < the window size"),
    ({"pool_h": 9, "pool_w": 2}, "does not fit"),
])
def test_pooling_rejects_bad_windows(attrs, message):
    """Settings that leave a window without image pixels are a ValueError saying what to change."""
    with pytest.raises(ValueError, match=message):
        run(Pooling, rng.standard_normal((1, 1, 4, 4)), **attrs)


def test_convolution_rejects_mismatched_channels():
    """Filters with another channel count than x are a ValueError naming the shapes."""
    with pytest.raises(ValueError, match=r"W of shape \(FN, C=3"):
        run(Convolution, rng.standard_normal((1, 3, 4, 4)), rng.standard_normal((2, 2, 3, 3)), np.zeros(2))
