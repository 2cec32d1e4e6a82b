"""Activation functions of BERT, with an exact GELU that is fast on the CPU.

BERT's GELU is x * Phi(x) = 0.5 x (1 + erf(x / sqrt(2))). Chainer's `F.erf` calls SciPy's
float32 `erf`, which took about a third of a forward pass on the CPU, and a NumPy
composition of a good approximation still costs twenty-odd passes over the activations.
Here one fused loop (compiled by Numba) evaluates erf as a rational function

    erf(z) = z P(z^2) / Q(z^2),   |z| <= 3.925   (erf rounds to +-1 in float32 beyond),

P and Q of degree 5, fitted for minimax relative error (1.9e-8; `tools/fit_erf.py`
re-derives them). It is evaluated in float64 and rounded once, so the float32 GELU is
within 7e-8 * max(1, |x|) of the exact value: float32 precision.
"""

import math

import chainer
import chainer.functions as F
import numpy as np
import scipy.special

from bertlib.compat import numba

_ERF_CLIP = 3.925
_ERF_P = (1.1283791458517229, 0.19059224404330241, 0.05276910458121363,
          0.0037724860267315144, 0.00028484222180930285, 2.0460413799023042e-06)
_ERF_Q = (1.0, 0.50224070964208445, 0.11418210184881918, 0.014983070913202707,
          0.0011638423875299155, 3.8047849525261406e-05)
_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)

p0, p1, p2, p3, p4, p5 = _ERF_P
q0, q1, q2, q3, q4, q5 = _ERF_Q


@numba.njit(cache=True, fastmath=False, inline='always')
def _erf(z):
    z = min(max(z, -_ERF_CLIP), _ERF_CLIP)
    s = z * z
    num = z * (((((p5 * s + p4) * s + p3) * s + p2) * s + p1) * s + p0)
    den = ((((q5 * s + q4) * s + q3) * s + q2) * s + q1) * s + q0
    return num / den


@numba.vectorize(['float32(float32)'], nopython=True, cache=True)
def _gelu_float32(x):
    xd = np.float64(x)
    return np.float32(0.5 * xd * (1.0 + _erf(xd * _SQRT_HALF)))


@numba.vectorize(['float32(float32, float32)'], nopython=True, cache=True)
def _gelu_grad_float32_with_pdf(x, pdf):
    xd = np.float64(x)
    return np.float32(0.5 * (1.0 + _erf(xd * _SQRT_HALF)) + xd * np.float64(pdf))


def _gelu_grad_float32(x):
    # NumPy's vectorised exp is several times faster than a scalar exp in the loop.
    pdf = np.multiply(x, x, dtype=np.float32)
    pdf *= np.float32(-0.5)
    np.exp(pdf, out=pdf)
    pdf *= np.float32(_INV_SQRT_2PI)
    return _gelu_grad_float32_with_pdf(x, pdf)


def _gelu_cpu(x):
    if x.dtype == np.float32 and numba.compiled:
        return _gelu_float32(x)
    return (x * scipy.special.ndtr(x)).astype(x.dtype, copy=False)


def _gelu_grad_cpu(x):
    if x.dtype == np.float32 and numba.compiled:
        return _gelu_grad_float32(x)
    pdf = np.exp(-0.5 * x * x) * _INV_SQRT_2PI
    return (scipy.special.ndtr(x) + x * pdf).astype(x.dtype, copy=False)


_GPU_KERNELS = {}


def _gpu_kernel(name):
    if not _GPU_KERNELS:
        import cupy
        _GPU_KERNELS['gelu'] = cupy.ElementwiseKernel(
            'T x', 'T y', 'y = x * normcdf(x)', 'bertlib_gelu')
        _GPU_KERNELS['gelu_grad'] = cupy.ElementwiseKernel(
            'T x', 'T y', 'y = normcdf(x) + x * exp(-0.5 * x * x) * %r' % _INV_SQRT_2PI,
            'bertlib_gelu_grad')
    return _GPU_KERNELS[name]


class GELU(chainer.function_node.FunctionNode):
    """y = x * Phi(x), the exact (erf) GELU of BERT, any shape."""

    def forward_cpu(self, inputs):
        x, = inputs
        self.retain_inputs((0,))
        return _gelu_cpu(x),

    def forward_gpu(self, inputs):
        x, = inputs
        self.retain_inputs((0,))
        return _gpu_kernel('gelu')(x),

    def backward(self, indexes, grad_outputs):
        x, = self.get_retained_inputs()
        gy, = grad_outputs
        if isinstance(x.array, np.ndarray):
            slope = _gelu_grad_cpu(x.array)
        else:
            slope = _gpu_kernel('gelu_grad')(x.array)
        return gy * slope,


def gelu(x):
    """Exact GELU: x * Phi(x). x: Variable or array of any shape."""
    y, = GELU().apply((x,))
    return y


def gelu_tanh(x):
    """The tanh approximation of GELU, for configs that ask for `gelu_new`."""
    return 0.5 * x * (1.0 + F.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


ACTIVATIONS = {
    'gelu': gelu,
    'gelu_new': gelu_tanh,
    'gelu_pytorch_tanh': gelu_tanh,
    'relu': F.relu,
    'tanh': F.tanh,
}
