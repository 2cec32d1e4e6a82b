"""bench/torch_supcon_loop.py, the PyTorch reference of train_dml.py's supcon recipe, on
the tiny random BERT: what it hands the PyTorch loop (token ids, batches, learning-rate
multipliers, initial head, training sample) is what train_dml.py itself uses, and, with
every dropout at 0 (the one thing the two cannot share), the PyTorch loop ends with the
features extruct_bert_metrics.py writes of train_dml.py's model. That one needs a Python
with torch and transformers (BERTLIB_TORCH_PYTHON, else build/torch-venv) and skips
without it."""

import os

import numpy as np
import pytest

import extruct_bert_metrics
import train_dml
from bertlib import dml, featurefile, optimization
from conftest import WORDS, model_flags, write_labelled, write_random_bert

import torch_supcon_loop as loop  # bench/, on pytest.ini's pythonpath

RECIPE = ['--loss', 'supcon', '--pooling', 'mean', '--sampling', 'random',
          '--temperature', '0.3', '--batchsize', '8', '--dim', '8', '--seed', '3',
          '--epoch', '2', '--noplot']


# A rate and a decay large enough that a step or a decay of the wrong size moves the
# features by more than the tolerance.
STRONG = ['--learnrate', '1e-3', '--weightdecay', '0.5']


def torch_python():
    python = os.environ.get('BERTLIB_TORCH_PYTHON') or str(loop.TORCH_PYTHON)
    if not os.path.exists(python):
        pytest.skip('%s is absent (make torch-venv)' % python)
    return python


def recorded_train_dml(monkeypatch, tmp_path, bert, *extra, head_dropout=None):
    """Runs train_dml.py in this process and returns what it used: its task, the initial
    head W, and [(batch rows, learning-rate multiplier)] of every step."""
    seen = {'steps': [], 'eta': None}
    schedule, loss, init = (optimization.schedule, dml.DMLTask.loss,
                            dml.DMLModel.__init__)

    def recording_schedule(*a):
        seen['eta'] = schedule(*a)
        return seen['eta']

    def recording_loss(task, batch):
        seen['task'] = task
        seen['steps'].append((np.array(batch), seen['eta']))  # schedule ran just before
        return loss(task, batch)

    def recording_init(model, *a, **k):
        init(model, *a, **k)
        seen.setdefault('head', model.output.W.array.copy())
        if head_dropout is not None:
            model.dropout = head_dropout

    monkeypatch.setattr(optimization, 'schedule', recording_schedule)
    monkeypatch.setattr(dml.DMLTask, 'loss', recording_loss)
    monkeypatch.setattr(dml.DMLModel, '__init__', recording_init)
    train_dml.main(['--train', str(tmp_path / 'train.txt'), '--eval',
                    str(tmp_path / 'eval.txt'), '--out', str(tmp_path / 'dml')]
                   + model_flags(bert) + RECIPE + list(extra))
    monkeypatch.undo()
    return seen


def loop_args(tmp_path, bert, *extra):
    return ['--train', str(tmp_path / 'train.txt'), '--eval', str(tmp_path / 'eval.txt'),
            '--model_dir', str(bert), '--out', str(tmp_path / 'torch'), '--temperature',
            '0.3', '--batchsize', '8', '--dim', '8', '--seed', '3', '--epoch', '2'] + list(extra)


@pytest.mark.parametrize('sampling', ['random', 'pk'])
def test_the_loop_gets_train_dml_s_ids_batches_schedule_head_and_sample(tmp_path,
                                                                        monkeypatch, sampling):
    bert = write_random_bert(tmp_path / 'bert', WORDS, hidden_size=16, num_hidden_layers=1,
                             intermediate_size=32)
    write_labelled(tmp_path, train=44)  # 6 batches an epoch, the last one short
    flags = ['--warmup', '0.25', '--sampling', sampling, '--samples_per_class', '4']
    seen = recorded_train_dml(monkeypatch, tmp_path, bert, *flags)
    args = loop.parse_args(loop_args(tmp_path, bert, *flags))
    config, tokenizer = loop.load_tokenizer(args)
    from bertlib import data
    train, _ = data.load_split(args.train, tokenizer, args.max_seq_length)
    task = seen['task']
    assert train.ids == task.train_split.ids
    assert np.array_equal(train.labels, task.train_split.labels)

    batches, etas, counts = loop.plan(train.labels, 2, 8, 3, 0.25, sampling, 4)
    assert len(batches) == len(seen['steps']) == sum(counts) == 12
    for mine, (theirs, eta), mine_eta in zip(batches, seen['steps'], etas):
        assert np.array_equal(mine, theirs)
        assert mine_eta == eta
    # 3 warm-up steps of 12, then the decay
    assert etas[0] < etas[1] < etas[2] == etas[3] == 1.0 > etas[4] > etas[-1] > 0
    assert not np.array_equal(batches[0], batches[6])  # each epoch draws its own

    head_w, head_b = loop.initial_head(16, 8, 3)
    assert np.array_equal(head_w, seen['head']) and not head_b.any()
    rows = dml.train_sample_rows(len(train), 3)
    assert [train.ids[i] for i in rows] == task.train_sample.ids


@pytest.mark.parametrize('freeze', [(), ('--freeze_word_embeddings',)])
def test_the_pytorch_loop_trains_what_train_dml_trains(tmp_path, monkeypatch, capsys, freeze):
    """Without dropout both are deterministic: the same features up to float32 rounding,
    though training moved them far; with the word embeddings frozen in both too."""
    python = torch_python()
    bert = write_random_bert(tmp_path / 'bert', WORDS, hidden_size=16, num_hidden_layers=1,
                             intermediate_size=32, hidden_dropout_prob=0.0,
                             attention_probs_dropout_prob=0.0)
    write_labelled(tmp_path, train=48, evaluation=16)
    recorded_train_dml(monkeypatch, tmp_path, bert, *STRONG, *freeze, head_dropout=0.0)
    features = tmp_path / 'dml.tsv'
    flags = ['--input', str(tmp_path / 'eval.txt'), '--output', str(features)] + model_flags(bert)
    extruct_bert_metrics.main(flags + ['--model', str(tmp_path / 'dml' / 'final.model'),
                                       '--label', str(tmp_path / 'dml' / 'labels.bin')])
    chainer_features = featurefile.read_features(str(features))[1]

    report = loop.measure(loop_args(tmp_path, bert, *STRONG, *freeze, '--dropout', '0',
                                    '--torch_python', python))
    with np.load(tmp_path / 'torch' / 'features.npz') as npz:
        torch_features, raw = npz['centred'], npz['raw']
    assert torch_features.shape == chainer_features.shape == (16, 8)
    assert report['steps'] == 12 and report['peak_mib'] > 0
    assert np.abs(torch_features - chainer_features).max() < 1e-4
    # The untrained model's features, centred as the loop centres them, are far away.
    start = loop.measure(loop_args(tmp_path, bert, '--learnrate', '1e-12', '--dropout', '0',
                                   '--torch_python', python))
    with np.load(tmp_path / 'torch' / 'features.npz') as npz:
        untrained = npz['centred']
    assert np.abs(untrained - chainer_features).max() > 0.1
    assert '| PyTorch supcon loop, centred |' in capsys.readouterr().out
    assert start['scores']['centred'] != report['scores']['centred']
