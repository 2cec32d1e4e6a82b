"""What Chainer 7.8.1 still needs from NumPy 1, numpy.distutils and pkg_resources.

Chainer 7.8.1 (2020) predates NumPy 2, Python 3.12 and setuptools 81, and `import
chainer` fails on any of them. `apply()` puts back exactly the pieces it uses, before
Chainer is first imported (bertlib/__init__.py and tests/conftest.py call it), and does
nothing where the piece is already there, as on NumPy 1.26 with Python 3.11:

- `numpy.sctypes` (removed in NumPy 2): chainer/functions/array/as_strided.py reads
  `np.sctypes['int']` at import time and `np.sctypes['float']` in its backward.
- `numpy.distutils` (gone from Python 3.12's NumPy, deprecated before): chainer's
  `_environment_check` imports `numpy.distutils.system_info`, only to call `get_info`
  on macOS. A stand-in module answers {} ("no BLAS information").
- `pkg_resources` (removed from setuptools 81): the same check calls
  `pkg_resources.require` for CuPy and iDeep to warn about version mismatches. A
  stand-in built on importlib.metadata finds installed distributions and does no
  version checks (Chainer's own specifiers predate every CuPy that runs today).

Two more differences between environments live here: CuPy 14's import-time warning
about a missing NCCL is silenced (`_quiet_cupy_without_nccl`), and `numba` is Numba, or
a stand-in where it does not import (`_WithoutNumba`).

A scan of Chainer 7.8.1 and ChainerMN for the other names NumPy 2 removed (np.float_,
np.product, np.find_common_type, np.cast, np.in1d, ...) found only `numpy.float`
in resize_images (gone since NumPy 1.24, not used here) and `numpy.core` named in a
comment. NEP 50 (NumPy 2 keeps a float32 array float32 when a Python float meets it,
but a NumPy float64 scalar now promotes it to float64) matters in one Chainer path
this project uses: the optimizer's gradient clipping multiplies float32 gradients in
place by a scalar, where the in-place cast keeps them float32. tests/test_compat.py
checks the dtypes of a training step on both NumPy lines.
"""

import importlib.machinery
import importlib.metadata
import sys
import types
import warnings

import numpy as np

# NumPy 1.26's np.sctypes, by kind, built from the types that still exist.
_SCTYPES = {
    'int': ['int8', 'int16', 'int32', 'int64'],
    'uint': ['uint8', 'uint16', 'uint32', 'uint64'],
    'float': ['float16', 'float32', 'float64', 'longdouble'],
    'complex': ['complex64', 'complex128', 'clongdouble'],
    'others': ['bool_', 'object_', 'bytes_', 'str_', 'void'],
}


def _restore_sctypes():
    if hasattr(np, 'sctypes'):
        return False
    np.sctypes = {kind: [getattr(np, name) for name in names]
                  for kind, names in _SCTYPES.items()}
    return True


def _module(name, **attributes):
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    module.__dict__.update(attributes)
    module.__doc__ = 'Stand-in installed by bertlib.compat for Chainer 7.8.1.'
    return module


def _importable(name):
    try:
        with warnings.catch_warnings():
            # setuptools 67-80 warn that pkg_resources is deprecated, on every script's
            # stderr: Chainer imports it only for a start-up check.
            warnings.simplefilter('ignore')
            __import__(name)
    except Exception:  # ImportError, or numpy.distutils' own errors on Python 3.12+
        return False
    return True


def _restore_numpy_distutils():
    if _importable('numpy.distutils.system_info'):
        return False
    system_info = _module('numpy.distutils.system_info', get_info=lambda name, notfound_action=0: {})
    package = _module('numpy.distutils', system_info=system_info)
    package.__path__ = []
    sys.modules['numpy.distutils'] = package
    sys.modules['numpy.distutils.system_info'] = system_info
    return True


class DistributionNotFound(Exception):
    """pkg_resources.DistributionNotFound."""


class VersionConflict(Exception):
    """pkg_resources.VersionConflict (never raised: no version checks)."""


def _distribution_name(requirement):
    """'cupy-cuda12x>=7.7.0,<8.0.0' -> 'cupy-cuda12x'."""
    for index, char in enumerate(requirement):
        if char in '<>=!~;[ ':
            return requirement[:index]
    return requirement


def _get_distribution(requirement):
    name = _distribution_name(requirement)
    try:
        version = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        raise DistributionNotFound(name)
    return types.SimpleNamespace(project_name=name, version=version)


def _require(requirement):
    return [_get_distribution(requirement)]


def _restore_pkg_resources():
    if _importable('pkg_resources'):
        return False
    sys.modules['pkg_resources'] = _module(
        'pkg_resources', require=_require, get_distribution=_get_distribution,
        DistributionNotFound=DistributionNotFound, VersionConflict=VersionConflict)
    return True


class _WithoutNumba(object):
    """Where Numba does not import (not installed, as on a GPU machine set up for
    PyTorch, whose llvmlite alone is 60 MB; or built for an older NumPy): its decorators
    leave the Python function as it is and `compiled` is False, so bertlib's CPU code
    takes its NumPy and Chainer paths instead of those loops. GPU code never uses Numba."""

    compiled = False

    @staticmethod
    def njit(*args, **kwargs):
        if len(args) == 1 and callable(args[0]) and not kwargs:
            return args[0]
        return lambda function: function

    vectorize = njit


def _load_numba():
    try:
        import numba as real
    except Exception:  # ImportError, or Numba refusing a NumPy newer than it knows
        return _WithoutNumba()
    return types.SimpleNamespace(njit=real.njit, vectorize=real.vectorize, compiled=True)


# The fused CPU kernels' compiler (bertlib/activations.py, normalization.py,
# optimization.py): Numba, or the stand-in above.
numba = _load_numba()

applied = ()  # names of the patches the last apply() installed


def _quiet_cupy_without_nccl():
    """CuPy 14 warns at import, so at `import chainer` in every script, CPU runs too,
    when NCCL is not installed. Only --communicator pure_nccl needs NCCL, and it says so
    when it cannot start (bertlib/distributed.py)."""
    warnings.filterwarnings('ignore', message=r'\s*nccl library could not be loaded',
                            category=UserWarning)


def apply():
    """Installs what is missing (idempotent); returns the names of the patches it
    installed this time, () where nothing was missing."""
    global applied
    _quiet_cupy_without_nccl()
    done = []
    for name, patch in (('numpy.sctypes', _restore_sctypes),
                        ('numpy.distutils', _restore_numpy_distutils),
                        ('pkg_resources', _restore_pkg_resources)):
        if patch():
            done.append(name)
    applied = tuple(done) or applied
    return tuple(done)
