"""bertlib/compat.py: Chainer 7.8.1 imports and trains on NumPy 2, Python 3.12+ and
setuptools 81+ (simulated here on whatever NumPy this environment has)."""

import subprocess
import sys

import chainer
import numpy as np
import pytest

from bertlib import compat, optimization
from conftest import ROOT

# A fresh interpreter in which the three pieces are gone, as on NumPy 2 / Python 3.12 /
# setuptools 81: np.sctypes deleted, the two modules made unimportable.
WITHOUT_THEM = '''
import sys
import numpy as np
if hasattr(np, 'sctypes'):
    del np.sctypes
for name in ('numpy.distutils', 'numpy.distutils.system_info', 'pkg_resources'):
    sys.modules[name] = None  # import raises ImportError
import bertlib
import chainer, chainer.functions as F
x = chainer.Variable(np.arange(6, dtype=np.float32))
y = F.as_strided(x, (2, 2), (2, 1))  # reads np.sctypes at import and in backward
F.sum(y * y).backward()
print(sorted(bertlib.compat.applied), x.grad.tolist())
'''


def test_chainer_imports_and_runs_without_the_numpy1_pieces():
    result = subprocess.run([sys.executable, '-c', WITHOUT_THEM], capture_output=True,
                            text=True, cwd=str(ROOT), timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "%s [0.0, 2.0, 4.0, 6.0, 0.0, 0.0]" % (
        sorted(['numpy.sctypes', 'numpy.distutils', 'pkg_resources']),)
    assert 'pkg_resources is deprecated' not in result.stderr


def test_apply_is_idempotent_and_changes_nothing_that_exists():
    before = np.sctypes
    assert compat.apply() == ()  # conftest applied it already
    assert np.sctypes is before
    if int(np.__version__.split('.')[0]) < 2:
        assert compat.applied == ()  # nothing was missing on NumPy 1.26 with Python 3.11


def test_sctypes_are_numpy1s():
    assert np.sctypes['int'] == [np.int8, np.int16, np.int32, np.int64]
    assert np.float32 in np.sctypes['float'] and np.float64 in np.sctypes['float']
    assert np.uint8 in np.sctypes['uint'] and np.complex64 in np.sctypes['complex']


def test_pkg_resources_stand_in_finds_distributions():
    assert compat._distribution_name('cupy-cuda12x>=7.7.0,<8.0.0') == 'cupy-cuda12x'
    assert compat._require('numpy>=1.0')[0].version == np.__version__
    with pytest.raises(compat.DistributionNotFound):
        compat._require('no-such-distribution-bertlib>=1')


def test_a_clipped_adamw_step_keeps_float32():
    """NEP 50: a NumPy float64 scalar meeting a float32 array promotes it on NumPy 2.
    Gradient clipping (norm > 1 here) and the AdamW update must leave every parameter,
    gradient and moment float32."""
    link = chainer.links.Linear(4, 3, initialW=np.ones((3, 4), np.float32))
    optimizer = optimization.make_optimizer(link, 1e-3, 0.01)
    optimizer.eta = np.float64(0.5)  # as a schedule computed with NumPy would give it
    x = np.full((2, 4), 10.0, np.float32)
    loss = chainer.functions.sum(link(x) ** 2)
    link.cleargrads()
    loss.backward()
    optimizer.update()
    for name, param in link.namedparams():
        assert param.array.dtype == np.float32, name
        assert param.grad.dtype == np.float32, name
        for key, moment in param.update_rule.state.items():
            assert moment.dtype == np.float32, (name, key)
    assert np.isfinite(link.W.array).all() and not (link.W.array == 1).all()


NUMBA_PATHS = '''
import sys
if sys.argv[1] == 'without':
    sys.modules['numba'] = None  # import raises ImportError, as where it is not installed
import bertlib, chainer, numpy as np
from bertlib import activations, compat, normalization, optimization
rng = np.random.RandomState(0)
x = chainer.Variable((rng.randn(6, 8) * 2).astype(np.float32))
link = normalization.LayerNormalization(8, eps=1e-12)
y = link(activations.gelu(x))
optimizer = optimization.make_optimizer(link, 1e-2, 0.01)
optimizer.eta = 1.0
link.cleargrads()  # Chainer fills a new parameter's gradient with NaN
chainer.functions.sum(y * y).backward()
optimizer.update()
print(compat.numba.compiled)
np.save(sys.stdout.buffer, np.concatenate([y.array.ravel(), x.grad.ravel(), link.gamma.array]))
'''


def test_cpu_kernels_without_numba_give_the_same_numbers():
    """Where Numba does not import, GELU, layer norm and AdamW take NumPy/Chainer paths."""
    import io
    outputs = {}
    for case in ('with', 'without'):
        result = subprocess.run([sys.executable, '-c', NUMBA_PATHS, case], capture_output=True,
                                cwd=str(ROOT), timeout=120)
        assert result.returncode == 0, result.stderr.decode()
        flag, _, data = result.stdout.partition(b'\n')
        outputs[case] = (flag, np.load(io.BytesIO(data)))
    assert outputs['with'][0] == b'True' and outputs['without'][0] == b'False'
    np.testing.assert_allclose(outputs['without'][1], outputs['with'][1], atol=1e-5)
