import chainer
import chainer.gradient_check
import numpy as np
import pytest
import scipy.special

from bertlib import activations


def exact_gelu(x):
    x = x.astype(np.float64)
    return x * scipy.special.ndtr(x)


def test_gelu_float32_is_exact_to_float32_precision():
    x = np.concatenate([np.linspace(-30, 30, 600001), [0.0, -0.0, 1e-30, -1e-30, 5.55, -5.55]])
    x = x.astype(np.float32)
    y = activations.gelu(x).array
    assert y.dtype == np.float32
    error = np.abs(y - exact_gelu(x)) / np.maximum(1.0, np.abs(x))
    # float32 epsilon is 1.19e-7: the error is below one unit in the last place of max(1, |x|).
    assert error.max() < 1.19e-7


def test_gelu_keeps_shape_and_special_points():
    x = np.array([[0.0, 1.0], [-1.0, 40.0]], dtype=np.float32)
    y = activations.gelu(x).array
    assert y.shape == (2, 2)
    assert y[0, 0] == 0.0
    assert y[1, 1] == 40.0
    assert abs(y[0, 1] - 0.8413447) < 1e-7
    assert abs(y[1, 0] + 0.1586553) < 1e-7


@pytest.mark.parametrize('dtype', [np.float32, np.float64])
def test_gelu_gradient(dtype):
    rng = np.random.RandomState(0)
    x = (rng.randn(3, 5) * 2).astype(dtype)
    gy = rng.randn(3, 5).astype(dtype)
    tolerance = {'atol': 1e-3, 'rtol': 1e-3} if dtype == np.float32 else {}
    chainer.gradient_check.check_backward(activations.gelu, x, gy, dtype=np.float64,
                                          **tolerance)


def test_gelu_gradient_matches_formula():
    x = np.linspace(-8, 8, 1001).astype(np.float32)
    v = chainer.Variable(x)
    y = activations.gelu(v)
    y.grad = np.ones_like(x)
    y.backward()
    xd = x.astype(np.float64)
    expected = scipy.special.ndtr(xd) + xd * np.exp(-0.5 * xd * xd) / np.sqrt(2 * np.pi)
    assert np.abs(v.grad - expected).max() < 2e-7
