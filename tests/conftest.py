"""Paths shared by the tests: the project root, the demo model and the real data sets."""

import os
import pathlib

import pytest

import bertlib  # noqa: F401  before any test imports Chainer: applies bertlib/compat.py

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


def write_tiny_bert(folder, words, seed=0, **shape):
    """A random BERT as the three files the scripts take: vocab.txt (the special tokens,
    then `words`), bert_config.json (`shape` overrides a 2-layer, hidden-8 default) and
    arrays_bert_model.ckpt.npz. Returns `folder`."""
    import numpy as np
    from bertlib import modeling
    folder.mkdir(parents=True, exist_ok=True)
    vocab = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'] + list(words)
    (folder / 'vocab.txt').write_text('\n'.join(vocab) + '\n', encoding='utf-8')
    settings = dict(hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=16, max_position_embeddings=128, type_vocab_size=2)
    settings.update(shape)
    config = modeling.BertConfig(vocab_size=len(vocab), **settings)
    (folder / 'bert_config.json').write_text(config.to_json_string())
    np.random.seed(seed)
    modeling.save_pretrained(modeling.BertModel(config),
                             str(folder / 'arrays_bert_model.ckpt.npz'))
    return folder


def model_flags(model_dir):
    return ['--vocab_file', os.fspath(model_dir / 'vocab.txt'),
            '--bert_config_file', os.fspath(model_dir / 'bert_config.json'),
            '--init_checkpoint', os.fspath(model_dir / 'arrays_bert_model.ckpt.npz')]


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
