"""Layer normalisation whose CPU forward pass is one fused loop.

Chainer's `F.layer_normalization` makes about ten NumPy passes over the activations; on
the CPU that cost BERT inference 15% of its time. `LayerNormalization` here keeps the
Chainer link's parameters (`gamma`, `beta`, so checkpoints are unchanged) and on the CPU
computes the forward pass row by row in one compiled loop. CuPy arrays take Chainer's own
implementation.
"""

import math

import chainer
import chainer.links as L
import numpy as np

from bertlib.compat import numba


@numba.njit(cache=True, fastmath=True)
def _forward_rows(x, gamma, beta, eps, y, mean, inv_std):
    """x, y: (N, D) float32; writes y = (x - mean) / std * gamma + beta per row."""
    n, d = x.shape
    for i in range(n):
        total = 0.0
        for j in range(d):
            total += x[i, j]
        m = total / d
        square = 0.0
        for j in range(d):
            t = x[i, j] - m
            square += t * t
        r = 1.0 / math.sqrt(square / d + eps)
        mean[i] = m
        inv_std[i] = r
        for j in range(d):
            y[i, j] = (x[i, j] - m) * r * gamma[j] + beta[j]


class LayerNormalizationFunction(chainer.function_node.FunctionNode):
    """y = (x - mean(x)) / sqrt(var(x) + eps) * gamma + beta over the last axis of (N, D)."""

    def __init__(self, eps):
        self.eps = eps

    def forward_cpu(self, inputs):
        x, gamma, beta = inputs
        x = np.ascontiguousarray(x)
        y = np.empty_like(x)
        self.mean = np.empty(x.shape[0], dtype=np.float64)
        self.inv_std = np.empty(x.shape[0], dtype=np.float64)
        _forward_rows(x, gamma, beta, self.eps, y, self.mean, self.inv_std)
        self.retain_inputs((0, 1))
        return y,

    def backward(self, indexes, grad_outputs):
        x, gamma = self.get_retained_inputs()
        gy, = grad_outputs
        dtype = x.dtype
        mean = self.mean.astype(dtype)[:, None]
        inv_std = self.inv_std.astype(dtype)[:, None]
        gy_array = gy.array
        x_hat = (x.array - mean) * inv_std
        g = gy_array * gamma.array
        gx = inv_std * (g - g.mean(axis=1, keepdims=True)
                        - x_hat * (g * x_hat).mean(axis=1, keepdims=True))
        ggamma = (gy_array * x_hat).sum(axis=0)
        gbeta = gy_array.sum(axis=0)
        return (chainer.Variable(gx.astype(dtype, copy=False)),
                chainer.Variable(ggamma.astype(dtype, copy=False)),
                chainer.Variable(gbeta.astype(dtype, copy=False)))


class LayerNormalization(L.LayerNormalization):
    """`L.LayerNormalization` (same parameters) with the fused CPU forward pass."""

    def forward(self, x):
        if self.gamma.array is None:
            self._initialize_params(x.size // x.shape[0])
        if (isinstance(getattr(x, 'array', x), np.ndarray) and x.dtype == np.float32
                and numba.compiled):
            y, = LayerNormalizationFunction(self.eps).apply((x, self.gamma, self.beta))
            return y
        return super(LayerNormalization, self).forward(x)
