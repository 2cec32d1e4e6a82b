"""train_dml.py and extruct_bert_metrics.py on a tiny random BERT."""

import json
import os
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest

import extruct_bert_metrics
import train_dml
from bertlib import checkpoints
from bertlib.errors import UsageError
from conftest import ROOT, final_arrays, model_flags, train_args

@pytest.mark.parametrize('loss', ['triplet', 'batch_hard', 'multi_similarity', 'arcface',
                                  'supcon'])
def test_every_loss_trains_and_writes_the_original_outputs(tmp_path, tiny, loss, capsys):
    out = tmp_path / 'out'
    train_dml.main(train_args(tmp_path, tiny, out, '--epoch', '2', '--loss', loss,
                              '--triplets', '16', '--samples_per_class', '4'))
    printed = capsys.readouterr().out
    assert json.loads(printed[:printed.index('\n}') + 2])['loss'] == loss
    assert '# train: 40, eval: 12,' in printed
    assert "# class: 2, labels: {'pos': 0, 'neg': 1}" in printed
    assert '# vocab: 20' in printed
    assert 'saving final model at epoch 2' in printed
    assert 'saving early-stopped model (loss) at epoch 1' in printed
    assert 'saving early-stopped model (map) at epoch 1' in printed
    for name in ('final.model', 'final.state', 'labels.bin', 'early_stopped-loss.model',
                 'early_stopped-map.model', 'log.jsonl'):
        assert (out / name).is_file(), name
    log = [json.loads(line) for line in (out / 'log.jsonl').read_text().splitlines()]
    assert [r['epoch'] for r in log] == [1, 2]
    assert all(0.0 <= r['D/acc1'] <= 1.0 and np.isfinite(r['T/loss']) for r in log)
    assert checkpoints.load_labels(str(out / 'labels.bin')) == {'pos': 0, 'neg': 1}
    arrays = final_arrays(out)
    assert arrays['output/W'].shape == (8, 16)
    assert ('loss/W' in arrays) == (loss == 'arcface')


def test_each_loss_is_the_one_trained(tmp_path, tiny):
    """The same data, seed and model give five different training losses: --loss picks
    the function that is optimised, not only a name in the log."""
    first = {}
    for loss in ('triplet', 'batch_hard', 'multi_similarity', 'arcface', 'supcon'):
        out = tmp_path / loss
        train_dml.main(train_args(tmp_path, tiny, out, '--epoch', '1', '--loss', loss,
                                  '--triplets', '16', '--samples_per_class', '4'))
        first[loss] = json.loads((out / 'log.jsonl').read_text().splitlines()[0])['T/loss']
    assert len({round(value, 6) for value in first.values()}) == 5, first


def test_log_line_has_the_original_format(tmp_path, tiny, caplog):
    caplog.set_level('INFO')
    train_dml.main(train_args(tmp_path, tiny, tmp_path / 'out', '--epoch', '1',
                              '--triplets', '8'))
    line = [r.getMessage() for r in caplog.records if r.getMessage().startswith('[')][0]
    # The original BERT-DML's columns, in its order, six decimals each.
    number = r'(-?\d+\.\d{6})'
    match = re.fullmatch(r'\[  1\] T/loss=%s T/acc1=%s T/acc2=%s T/sec= %s D/loss=%s '
                         r'D/acc1=%s D/acc2=%s D/sec= %s lr=%s eta=%s' % ((number,) * 10), line)
    assert match, line
    # As in the original's log: eta is the learning rate, lr Adam's bias correction.
    record = json.loads((tmp_path / 'out' / 'log.jsonl').read_text().splitlines()[0])
    fields = dict(part.split('=') for part in line.split() if '=' in part)
    for key in ('T/loss', 'T/acc1', 'T/acc2', 'D/loss', 'D/acc1', 'D/acc2'):
        assert float(fields[key]) == pytest.approx(record[key], abs=1e-6), key
    assert record['T/loss'] > 0 and 0 <= record['D/acc1'] <= 1 and 0 <= record['D/acc2'] <= 1
    assert float(fields['eta']) == pytest.approx(record['lr'], abs=1e-6)
    assert 0 < record["lr"] <= 5e-5
    steps = 1  # 8 triplets at batch size 8
    assert float(fields['lr']) == pytest.approx((1 - 0.999 ** steps) ** 0.5 / (1 - 0.9 ** steps),
                                                abs=1e-6)
    # An epoch shows its progress before its log line (on a pipe: every 30 s, the first
    # batch included).
    messages = [r.getMessage() for r in caplog.records]
    progress = [i for i, m in enumerate(messages) if m.startswith('epoch 1: 1/')]
    assert progress and progress[0] < messages.index(line), messages
    assert 'batches' in messages[progress[0]]


@pytest.mark.parametrize('extra', [(), ('--freeze_word_embeddings', '--ema', '0.9')],
                         ids=['trained', 'frozen-word-embeddings'])
def test_resume_ends_with_the_same_weights(tmp_path, tiny, monkeypatch, capsys, extra):
    common = ('--epoch', '3', '--loss', 'batch_hard', '--samples_per_class', '4',
              '--seed', '3') + extra
    whole, part = tmp_path / 'whole', tmp_path / 'part'
    train_dml.main(train_args(tmp_path, tiny, whole, *common))

    # Interrupt the second run once epoch 1 is complete, then resume it.
    from bertlib import training
    save_epoch = training.save_epoch

    def save_then_stop(*args):
        save_epoch(*args)
        raise KeyboardInterrupt
    monkeypatch.setattr(training, 'save_epoch', save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train_dml.main(train_args(tmp_path, tiny, part, *common))
    monkeypatch.setattr(training, 'save_epoch', save_epoch)
    assert checkpoints.read_meta(str(part / 'final.model'))['epoch'] == 1
    train_dml.main(train_args(tmp_path, tiny, part, *common) + ['--resume', str(part)])

    a, b = final_arrays(whole), final_arrays(part)
    assert sorted(a) == sorted(b)
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    log = [json.loads(line) for line in (part / 'log.jsonl').read_text().splitlines()]
    assert [r['epoch'] for r in log] == [1, 2, 3]


def test_frozen_word_embeddings_train_the_rest_and_save_the_whole_table(tmp_path, tiny):
    """--freeze_word_embeddings: the table is saved unchanged (extraction of any text
    still has it), the other weights train, final.state holds no moments for it (nor
    --ema's average), and a resume must say the flag again."""
    out = tmp_path / 'out'
    train_dml.main(train_args(tmp_path, tiny, out, '--epoch', '2', '--triplets', '8',
                              '--ema', '0.9', '--freeze_word_embeddings'))
    with np.load(tiny / 'arrays_bert_model.ckpt.npz') as initial:
        initial = {k: initial[k] for k in initial.files}
    final = final_arrays(out)
    word = 'bert/word_embeddings/W'
    assert np.array_equal(final[word], initial[word])
    key = 'bert/encoder/layer_0/attention/key/W'
    assert not np.array_equal(final[key], initial[key])
    with np.load(out / 'final.state') as state:
        names = set(state.files)
    assert word + '/t' in names
    assert not {word + '/m', word + '/v', 'ema/' + word} & names
    assert {key + '/m', key + '/v', 'ema/' + key} <= names
    assert checkpoints.read_meta(str(out / 'final.model'))['freeze_word_embeddings'] is True
    with pytest.raises(UsageError, match='trained with --freeze_word_embeddings True, '
                                         'not False'):
        train_dml.main(train_args(tmp_path, tiny, tmp_path / 'again', '--epoch', '3',
                                  '--triplets', '8', '--ema', '0.9', '--resume', str(out)))


def test_nan_loss_stops_without_touching_the_last_good_model(tmp_path, tiny, monkeypatch):
    out = tmp_path / 'out'
    train_dml.main(train_args(tmp_path, tiny, out, '--epoch', '1', '--triplets', '8'))
    before = (out / 'final.model').read_bytes()
    from bertlib import losses
    monkeypatch.setattr(losses, 'triplet_loss',
                        lambda a, p, n, margin: (a * float('nan')).__getitem__(0)[0])
    with pytest.raises(UsageError, match='loss became nan at epoch 1'):
        train_dml.main(train_args(tmp_path, tiny, out, '--epoch', '1', '--triplets', '8'))
    assert (out / 'final.model').read_bytes() == before


@pytest.mark.parametrize('content, message', [
    ('pos\tthe film\npos\tgood film\n', 'at least two classes'),
    ('pos the film\n', 'expected "label<TAB>text"'),
])
def test_bad_training_files(tmp_path, tiny, content, message):
    (tmp_path / 'train.txt').write_text(content)
    with pytest.raises(UsageError, match=message):
        train_dml.main(train_args(tmp_path, tiny, tmp_path / 'out', '--epoch', '1'))


@pytest.mark.parametrize('loss', ['triplet', 'supcon', 'arcface'])
def test_eval_classes_unseen_in_training_are_scored(tmp_path, tiny, loss, caplog):
    """Disjoint classes (deep metric learning's protocol): eval labels outside labels.bin
    get their own ids, precision@1 and MAP@R use them, and the log counts them."""
    caplog.set_level('INFO')
    eval_lines = ['pos\tgood film', 'pos\tnice film', 'mixed\tgood bad', 'mixed\tgreat dull',
                  'other\tthe plot', 'other\tthe plot was']
    (tmp_path / 'eval.txt').write_text('\n'.join(eval_lines) + '\n')
    out = tmp_path / 'out'
    train_dml.main(train_args(tmp_path, tiny, out, '--epoch', '1', '--loss', loss,
                              '--triplets', '8', '--samples_per_class', '2'))
    assert 'eval.txt: 3 classes, 2 of them unseen in training (mixed, other)' in caplog.text
    records = [json.loads(line) for line in (out / 'log.jsonl').read_text().splitlines()]
    # Every eval sentence has a same-class neighbour, so the scores are real numbers.
    assert 0.0 <= records[0]['D/acc1'] <= 1.0 and 0.0 <= records[0]['D/acc2'] <= 1.0
    if loss == 'arcface':
        # Only 'pos' has a trained proxy: one class cannot make a D/loss.
        assert np.isnan(records[0]['D/loss'])
    else:
        assert np.isfinite(records[0]['D/loss'])
    # labels.bin keeps the training classes only; the model is still a 2-class one.
    assert checkpoints.load_labels(str(out / 'labels.bin')) == {'pos': 0, 'neg': 1}


def test_single_sentence_class_is_a_warning(tmp_path, tiny, caplog):
    with open(tmp_path / 'train.txt', 'a') as f:
        f.write('odd\tthe plot\n')
    (tmp_path / 'eval.txt').write_text('pos\tgood\nneg\tbad\npos\tnice\nneg\tdull\n')
    train_dml.main(train_args(tmp_path, tiny, tmp_path / 'out', '--epoch', '1',
                              '--triplets', '8'))
    assert 'single sentence cannot be anchors' in caplog.text and 'odd' in caplog.text


def test_resume_errors(tmp_path, tiny):
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(UsageError, match='final.model is missing'):
        train_dml.main(train_args(tmp_path, tiny, tmp_path / 'out', '--epoch', '2',
                                  '--resume', str(empty)))
    out = tmp_path / 'out'
    train_dml.main(train_args(tmp_path, tiny, out, '--epoch', '1', '--triplets', '8'))
    with pytest.raises(UsageError, match='trained with --dim 8, not 4'):
        train_dml.main(train_args(tmp_path, tiny, out, '--epoch', '2', '--resume', str(out))
                       + ['--dim', '4'])


def test_check_args_returns_where_to_start_and_leaves_the_flags_alone(tmp_path, tiny):
    """The epoch and step to resume at come back from launch.check_args; the parsed
    flags (printed, and compared with the resumed model's) stay as the user gave them."""
    from bertlib import launch
    out = tmp_path / 'out'
    train_dml.main(train_args(tmp_path, tiny, out, '--epoch', '1', '--triplets', '8'))
    step = checkpoints.read_meta(str(out / 'final.model'))['step']
    args = train_dml.parse_args(train_args(tmp_path, tiny, tmp_path / 'next', '--epoch', '3',
                                           '--resume', str(out)))
    before = dict(vars(args))
    assert launch.check_args(args, 'dml') == (2, step) and step > 0
    assert vars(args) == before and args.start_epoch is None
    args.start_epoch = 3  # another epoch than the saved one's next: its step is counted
    assert launch.check_args(args, 'dml') == (3, None)
    args = train_dml.parse_args(train_args(tmp_path, tiny, tmp_path / 'new', '--epoch', '2'))
    assert launch.check_args(args, 'dml') == (1, None)


def test_labels_bin_is_read_without_running_code(tmp_path):
    class Boom(object):
        def __reduce__(self):
            return (os.system, ('echo pwned > %s' % (tmp_path / 'pwned'),))
    (tmp_path / 'labels.bin').write_bytes(pickle.dumps({'a': 0, 'b': Boom()}))
    with pytest.raises(UsageError, match='not a labels.bin file'):
        checkpoints.load_labels(str(tmp_path / 'labels.bin'))
    assert not (tmp_path / 'pwned').exists()
    (tmp_path / 'ok.bin').write_bytes(pickle.dumps({'0': 0, '1': 1}, protocol=2))
    assert checkpoints.load_labels(str(tmp_path / 'ok.bin')) == {'0': 0, '1': 1}


def test_extruct_bert_metrics(tmp_path, tiny, capsys):
    out = tmp_path / 'out'
    train_dml.main(train_args(tmp_path, tiny, out, '--epoch', '1', '--loss', 'arcface',
                              '--samples_per_class', '4'))
    capsys.readouterr()
    (tmp_path / 'in.txt').write_text('pos\tgood film\n\nbare text line\nneg\tbad\n')
    extruct_bert_metrics.main(['--input', str(tmp_path / 'in.txt'),
                               '--model', str(out / 'final.model'),
                               '--label', str(out / 'labels.bin')] + model_flags(tiny))
    rows = [line.split('\t') for line in capsys.readouterr().out.splitlines()]
    assert [r[0] for r in rows] == ['pos', '', 'neg']
    assert all(len(r) == 1 + 8 for r in rows)

    (tmp_path / 'three.bin').write_bytes(pickle.dumps({'a': 0, 'b': 1, 'c': 2}, protocol=2))
    with pytest.raises(UsageError, match='has 3 labels but .* trained on 2 classes'):
        extruct_bert_metrics.main(['--input', str(tmp_path / 'in.txt'),
                                   '--model', str(out / 'final.model'),
                                   '--label', str(tmp_path / 'three.bin')] + model_flags(tiny))


def test_help_of_both_scripts():
    for script, flags in (('train_dml.py', ['--gpu', '-g', '--batchsize', '-b', '--learnrate',
                                            '-l', '--weightdecay', '--epoch', '-e', '--train',
                                            '--eval', '--out', '-o', '--resume',
                                            '--start_epoch', '--noplot', '--seed', '--loss',
                                            '--pooling', '--dim', '--triplets']),
                          ('extruct_bert_metrics.py', ['--input', '--model', '--label',
                                                      '--gpu', '--batchsize', '--max_length',
                                                      '--join_ellipsis'])):
        result = subprocess.run([sys.executable, str(ROOT / script), '--help'],
                                capture_output=True, text=True, cwd=str(ROOT))
        assert result.returncode == 0
        for flag in flags:
            assert flag in result.stdout, (script, flag)


def test_curves_go_to_out_png_beside_out_and_name_the_run_and_its_scores(tmp_path, tiny,
                                                                        monkeypatch):
    from bertlib import figures
    drawn = []
    real = figures.plot_curves
    monkeypatch.setattr(figures, 'plot_curves', lambda records, path, names, title: (
        drawn.append((names, title)), real(records, path, names, title)))
    out = tmp_path / 'results_dml-rt'
    args = [a for a in train_args(tmp_path, tiny, out, '--epoch', '1', '--triplets', '8',
                                  '--loss', 'triplet')
            if a != '--noplot']
    train_dml.main(args)
    assert (tmp_path / 'results_dml-rt.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert not list(out.glob('*.png'))
    assert drawn == [(('precision@1', 'MAP@R'),
                      'results_dml-rt: metric learning, triplet loss')]
