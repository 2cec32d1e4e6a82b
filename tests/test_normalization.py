import chainer
import chainer.functions as F
import chainer.gradient_check
import numpy as np

from bertlib.normalization import LayerNormalization, LayerNormalizationFunction


def test_forward_matches_chainer_layer_normalization():
    rng = np.random.RandomState(0)
    x = (rng.randn(50, 24) * 3 + 1).astype(np.float32)
    gamma = rng.randn(24).astype(np.float32)
    beta = rng.randn(24).astype(np.float32)
    ours, = LayerNormalizationFunction(1e-12).apply((x, gamma, beta))
    theirs = F.layer_normalization(x, gamma, beta, eps=1e-12)
    assert np.abs(ours.array - theirs.array).max() < 1e-5


def test_gradients():
    rng = np.random.RandomState(1)
    x = rng.randn(6, 8).astype(np.float32)
    gamma = rng.randn(8).astype(np.float32)
    beta = rng.randn(8).astype(np.float32)
    gy = rng.randn(6, 8).astype(np.float32)

    def f(x, gamma, beta):
        y, = LayerNormalizationFunction(1e-5).apply((x, gamma, beta))
        return y
    chainer.gradient_check.check_backward(f, (x, gamma, beta), gy, dtype=np.float64,
                                          atol=1e-3, rtol=1e-3)


def test_link_keeps_chainer_parameter_names():
    link = LayerNormalization(8, eps=1e-12)
    assert sorted(name for name, _ in link.namedparams()) == ['/beta', '/gamma']
    y = link(np.ones((2, 8), np.float32) * np.arange(8, dtype=np.float32))
    assert y.shape == (2, 8)
    assert abs(float(y.array.mean())) < 1e-6
