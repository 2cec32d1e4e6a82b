"""Paths shared by the tests: the project root, the demo model and the real data sets."""

import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEMO_MODEL = ROOT / 'BERT' / 'all-MiniLM-L6-v2'
DATASETS = ROOT.parent / 'shared' / 'datasets'


@pytest.fixture
def demo_model():
    """The converted demo model folder (`make model`); skips the test when absent."""
    if not (DEMO_MODEL / 'arrays_bert_model.ckpt.npz').exists():
        pytest.skip('demo model not converted: run `make model`')
    return DEMO_MODEL


@pytest.fixture
def datasets():
    """../shared/datasets; skips the test when absent."""
    if not DATASETS.is_dir():
        pytest.skip('%s is absent' % DATASETS)
    return DATASETS


def model_flags(model_dir):
    return ['--vocab_file', os.fspath(model_dir / 'vocab.txt'),
            '--bert_config_file', os.fspath(model_dir / 'bert_config.json'),
            '--init_checkpoint', os.fspath(model_dir / 'arrays_bert_model.ckpt.npz')]
