"""Dropout with a cheaper CPU mask, drawn from a generator the training loop seeds.

Chainer's `F.dropout` draws a float64 uniform array per call with NumPy's legacy global
RandomState; on the CPU that was a tenth of a BERT training step. Here the mask comes
from a PCG64 `Generator` in float32. On a GPU, Chainer's own dropout is used.
"""

import chainer
import chainer.functions as F
import numpy as np

_generator = np.random.Generator(np.random.PCG64(0))


def seed(value):
    """Re-seeds the CPU dropout masks (training.seed_everything calls it every epoch)."""
    global _generator
    _generator = np.random.Generator(np.random.PCG64(value))


class Dropout(chainer.function_node.FunctionNode):
    """y = x * mask / (1 - ratio), mask ~ Bernoulli(1 - ratio), elementwise."""

    def __init__(self, ratio):
        self.ratio = ratio

    def forward_cpu(self, inputs):
        x, = inputs
        keep = _generator.random(x.shape, dtype=np.float32) >= self.ratio
        self.mask = np.multiply(keep, x.dtype.type(1.0 / (1.0 - self.ratio)), dtype=x.dtype)
        return x * self.mask,

    def backward(self, indexes, grad_outputs):
        gy, = grad_outputs
        return gy * self.mask,


def dropout(x, ratio):
    """Dropout in training mode, identity otherwise. x: Variable or array, any shape."""
    if not chainer.config.train or ratio == 0.0:
        return chainer.as_variable(x)
    if not isinstance(getattr(x, 'array', x), np.ndarray):
        return F.dropout(x, ratio)
    y, = Dropout(ratio).apply((x,))
    return y
