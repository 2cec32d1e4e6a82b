"""Dropout with a cheaper CPU mask, drawn from a generator the training loop seeds.

Chainer's `F.dropout` draws a float64 uniform array per call with NumPy's legacy global
RandomState; on the CPU that was a tenth of a BERT training step. Here the mask comes
from a PCG64 `Generator` in float32. On a GPU it comes from CuPy's generator, which
training.seed_everything seeds from --seed: Chainer's own GPU dropout takes cuDNN's,
seeded from CHAINER_SEED or os.urandom, so GPU runs could not be repeated.

Data-parallel training (bertlib/distributed.py) encodes a slice of each batch on every
process; `rows(start, stop, total)` makes the masks of that slice the very numbers one
process would draw for those rows of the whole batch, so N processes train exactly as one.
"""

import contextlib

import chainer
import numpy as np

_generator = np.random.Generator(np.random.PCG64(0))
# (start, stop, total) while `rows` is active: inputs hold rows start:stop of `total`.
_window = None


def seed(value):
    """Re-seeds the CPU dropout masks (training.seed_everything calls it every epoch)."""
    global _generator
    _generator = np.random.Generator(np.random.PCG64(value))


@contextlib.contextmanager
def rows(start, stop, total):
    """Inside, every CPU dropout input holds rows start:stop of a batch of `total` rows
    (the batch axis first, any layout after it: (B, H), (B*T, H), (B, heads, T, T)).

    Each call then advances the generator exactly as drawing the mask of the whole batch
    would, and keeps that mask's rows start:stop. stop - start must divide the input's
    size; a process without rows of its own passes rows 0:1 of a stand-in sentence.
    """
    global _window
    if not 0 <= start < stop <= total:
        raise ValueError('rows %d:%d of a batch of %d' % (start, stop, total))
    previous, _window = _window, (start, stop, total)
    try:
        yield
    finally:
        _window = previous


def _skip(count):
    """Advances the generator as `count` float32 draws would, without drawing them.

    A float32 draw takes 32 bits, half of one 64-bit PCG64 step, and the generator keeps
    the other half for the next draw: use up a kept half first, jump whole steps, then
    draw a last odd one so the kept half is as it would be."""
    if count <= 0:
        return
    if _generator.bit_generator.state['has_uint32']:
        _generator.random(1, dtype=np.float32)
        count -= 1
    _generator.bit_generator.advance(count // 2)
    if count % 2:
        _generator.random(1, dtype=np.float32)


def _uniform(shape):
    """float32 uniforms of `shape`: this process's rows of the whole batch's draw."""
    if _window is None:
        return _generator.random(shape, dtype=np.float32)
    start, stop, total = _window
    size = int(np.prod(shape))
    per_row, remainder = divmod(size, stop - start)
    if remainder:
        raise ValueError('dropout input of shape %s does not hold %d whole rows'
                         % (shape, stop - start))
    _skip(start * per_row)
    values = _generator.random(shape, dtype=np.float32)
    _skip((total - stop) * per_row)
    return values


class Dropout(chainer.function_node.FunctionNode):
    """y = x * mask / (1 - ratio), mask ~ Bernoulli(1 - ratio), elementwise."""

    def __init__(self, ratio):
        self.ratio = ratio

    def forward_cpu(self, inputs):
        x, = inputs
        keep = _uniform(x.shape) >= self.ratio
        self.mask = np.multiply(keep, x.dtype.type(1.0 / (1.0 - self.ratio)), dtype=x.dtype)
        return x * self.mask,

    def forward_gpu(self, inputs):
        import cupy
        x, = inputs
        uniform = cupy.random.random(x.shape, dtype=cupy.float32)
        self.mask = _gpu_mask_kernel()(uniform, self.ratio, x.dtype.type(1.0 / (1.0 - self.ratio)))
        return x * self.mask,

    def backward(self, indexes, grad_outputs):
        gy, = grad_outputs
        return gy * self.mask,


_GPU_KERNELS = {}


def _gpu_mask_kernel():
    """mask = scale where uniform >= ratio, else 0, in the output's dtype."""
    if not _GPU_KERNELS:
        import cupy
        _GPU_KERNELS['mask'] = cupy.ElementwiseKernel(
            'float32 u, float32 ratio, T scale', 'T mask',
            'mask = u >= ratio ? scale : (T)0', 'bertlib_dropout_mask')
    return _GPU_KERNELS['mask']


def dropout(x, ratio):
    """Dropout in training mode, identity otherwise. x: Variable or array (NumPy or
    CuPy), any shape."""
    if not chainer.config.train or ratio == 0.0:
        return chainer.as_variable(x)
    y, = Dropout(ratio).apply((x,))
    return y
