"""train_classifier.py, test_classifier.py and extruct_bert_classified.py on a tiny BERT."""

import json
import pickle

import numpy as np
import pytest

import extruct_bert_classified
import test_classifier
import train_classifier
from bertlib import checkpoints, classifier
from bertlib.errors import UsageError
from conftest import final_arrays, model_flags


def train_args(tmp_path, tiny, out, *extra):
    return (['--train', str(tmp_path / 'train.txt'), '--eval', str(tmp_path / 'eval.txt'),
             '--out', str(out), '--batchsize', '8', '--noplot']
            + model_flags(tiny) + list(extra))


@pytest.fixture
def trained(tmp_path, tiny, capsys):
    out = tmp_path / 'out'
    train_classifier.main(train_args(tmp_path, tiny, out, '--epoch', '30',
                                     '--learnrate', '5e-3'))
    return out, capsys.readouterr().out


def test_outputs_and_final_report(trained):
    out, printed = trained
    for name in ('final.model', 'final.state', 'labels.bin', 'early_stopped-loss.model',
                 'early_stopped-uar.model', 'log.jsonl'):
        assert (out / name).is_file(), name
    assert '# class: 2, labels: {\'pos\': 0, \'neg\': 1}' in printed
    assert '== final model: final.model on' in printed
    assert '== early-stopped model (best D/loss): early_stopped-loss.model on' in printed
    assert '== early-stopped model (best D/UAR): early_stopped-uar.model on' in printed
    assert 'confusion matrix (rows: true, columns: predicted), counts:' in printed
    assert 'UAR: ' in printed and 'precision' in printed and 'recall' in printed
    log = [json.loads(l) for l in (out / 'log.jsonl').read_text().splitlines()]
    assert [r['epoch'] for r in log] == list(range(1, 31))
    assert final_arrays(out)['output/W'].shape == (2, 16)


def test_separable_toy_data_is_learnt(trained):
    out, printed = trained
    log = [json.loads(l) for l in (out / 'log.jsonl').read_text().splitlines()]
    assert log[-1]['D/acc1'] >= 0.9  # positive and negative words never overlap


def test_scoring_with_unknown_labels(trained, tmp_path, tiny, capsys):
    out, _ = trained
    (tmp_path / 'test.txt').write_text('pos\tthe film was good\nneg\tthe film was bad\n'
                                       'mixed\tthe film was dull\n')
    test_classifier.main(['--input', str(tmp_path / 'test.txt'), '--model',
                          str(out / 'final.model'), '--label', str(out / 'labels.bin')]
                         + model_flags(tiny))
    printed = capsys.readouterr().out
    assert 'accuracy: 1.0000' in printed
    assert 'counting the 1 lines with unknown labels as errors: 0.6667' in printed


def test_predict(trained, tmp_path, tiny, capsys):
    out, _ = trained
    (tmp_path / 'new.txt').write_text('the film was great\nthe film was awful\n')
    test_classifier.main(['--input', str(tmp_path / 'new.txt'), '--predict', '--model',
                          str(out / 'final.model'), '--label', str(out / 'labels.bin')]
                         + model_flags(tiny))
    rows = [line.split('\t') for line in capsys.readouterr().out.splitlines()]
    assert [r[0] for r in rows] == ['pos', 'neg']
    assert all(0.5 < float(r[1]) <= 1.0 for r in rows)
    assert [r[2] for r in rows] == ['the film was great', 'the film was awful']


def test_extruct_bert_classified(trained, tmp_path, tiny, capsys):
    out, _ = trained
    (tmp_path / 'in.txt').write_text('pos\tgood film\nbare line\n')
    extruct_bert_classified.main(['--input', str(tmp_path / 'in.txt'), '--model',
                                  str(out / 'early_stopped-uar.model'), '--label',
                                  str(out / 'labels.bin')] + model_flags(tiny))
    rows = [line.split('\t') for line in capsys.readouterr().out.splitlines()]
    assert [r[0] for r in rows] == ['pos', '']
    assert all(len(r) == 1 + 16 for r in rows)  # the pooled output, hidden 16
    (tmp_path / 'three.bin').write_bytes(pickle.dumps({'a': 0, 'b': 1, 'c': 2}, protocol=2))
    with pytest.raises(UsageError, match='has 3 labels but .* trained on 2 classes'):
        extruct_bert_classified.main(['--input', str(tmp_path / 'in.txt'), '--model',
                                      str(out / 'final.model'), '--label',
                                      str(tmp_path / 'three.bin')] + model_flags(tiny))


def test_a_dml_model_is_not_a_classifier(tmp_path, tiny, capsys):
    import train_dml
    out = tmp_path / 'dml'
    train_dml.main(['--train', str(tmp_path / 'train.txt'), '--eval',
                    str(tmp_path / 'eval.txt'), '--out', str(out), '--batchsize', '8',
                    '--dim', '4', '--noplot', '--epoch', '1', '--triplets', '8']
                   + model_flags(tiny))
    (tmp_path / 'in.txt').write_text('pos\tgood film\n')
    with pytest.raises(UsageError, match='is a dml model, not a classifier one'):
        extruct_bert_classified.main(['--input', str(tmp_path / 'in.txt'), '--model',
                                      str(out / 'final.model'), '--label',
                                      str(out / 'labels.bin')] + model_flags(tiny))


def test_class_weights_and_uar():
    labels = np.array([0, 0, 0, 1], dtype=np.int32)
    assert classifier.class_weights(labels, 2, 'none') is None
    assert np.allclose(classifier.class_weights(labels, 2, 'balanced'), [4 / 6, 4 / 2])
    assert classifier.unweighted_average_recall(np.array([0, 0, 1, 1]),
                                                np.array([0, 1, 1, 1]), 2) == 0.75


def test_balanced_class_weight_trains(tmp_path, tiny, capsys):
    """On 3:1 data 'balanced' weighs the losses (1/3 of the lines weigh 2, the rest 2/3):
    the same seed trains to another loss and other weights than without weights."""
    lines = (tmp_path / 'train.txt').read_text().splitlines()
    (tmp_path / 'train.txt').write_text('\n'.join(
        line for i, line in enumerate(lines) if line.startswith('pos') or i % 6 == 1) + '\n')
    logs, weights = {}, {}
    for mode in ('none', 'balanced'):
        out = tmp_path / mode
        train_classifier.main(train_args(tmp_path, tiny, out, '--epoch', '1',
                                         '--class_weight', mode))
        assert checkpoints.load_labels(str(out / 'labels.bin')) == {'pos': 0, 'neg': 1}
        logs[mode] = json.loads((out / 'log.jsonl').read_text().splitlines()[0])
        weights[mode] = final_arrays(out)
    assert logs['none']['T/loss'] != pytest.approx(logs['balanced']['T/loss'], rel=1e-4)
    assert logs['none']['D/loss'] != pytest.approx(logs['balanced']['D/loss'], rel=1e-4)
    assert not all(np.array_equal(weights['none'][k], weights['balanced'][k])
                   for k in weights['none'])


def test_curves_and_confusion_pictures_land_beside_out(tmp_path, tiny, capsys, monkeypatch):
    """Where the original BERT-DML put them: <out>.png and <out>-cm-<model>.png next to
    the --out folder, not inside it; the curves name the run and their scores."""
    from PIL import Image
    from bertlib import figures
    drawn = []
    real = figures.plot_curves
    monkeypatch.setattr(figures, 'plot_curves', lambda records, path, names, title: (
        drawn.append((names, title)), real(records, path, names, title)))
    out = tmp_path / 'results_clsed-rt'
    args = [a for a in train_args(tmp_path, tiny, out, '--epoch', '2') if a != '--noplot']
    train_classifier.main(args)
    assert drawn[-1] == (('accuracy', 'UAR'),
                         'results_clsed-rt: classifier, softmax cross-entropy loss')
    assert Image.open(tmp_path / 'results_clsed-rt.png').size[0] > 300
    for name in ('final', 'early_stopped-loss', 'early_stopped-uar'):
        picture = tmp_path / ('results_clsed-rt-cm-%s.png' % name)
        assert Image.open(picture).format == 'PNG', name
    assert not list(out.glob('*.png'))


def test_confusion_ticks_run_across_while_the_names_fit(monkeypatch):
    from bertlib import figures
    caught = []
    monkeypatch.setattr(figures, 'save_figure', lambda figure, path, dpi: caught.append(figure))
    classifier.draw_confusion(np.array([0, 1]), np.array([0, 1]), ['negative', 'positive'],
                              'cm.png', 'title')
    many = ['電動機(モーター)%d' % k for k in range(16)]
    classifier.draw_confusion(np.arange(16), np.arange(16), many, 'cm.png', 'title')
    (two,), (sixteen,) = caught[0].axes[:1], caught[1].axes[:1]
    assert [t.get_text() for t in two.get_xticklabels()] == ['negative', 'positive']
    assert {t.get_rotation() for t in two.get_xticklabels()} == {0.0}
    assert {t.get_rotation() for t in sixteen.get_xticklabels()} == {90.0}


def test_confusion_picture_colours_the_rates(tmp_path):
    from PIL import Image
    path = tmp_path / 'cm.png'
    classifier.draw_confusion(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 1]),
                              ['エンジン', '制動装置'], str(path), 'title')
    pixels = np.asarray(Image.open(path).convert('RGB'), dtype=np.float64)
    # A dark cell (rate 1.0: true エンジン) and a pale one (rate 0.0) are both there.
    assert (pixels.sum(axis=2) < 200).any() and (pixels.sum(axis=2) > 700).any()


def test_a_missing_early_stopped_model_skips_its_report(tmp_path, tiny, capsys, monkeypatch,
                                                        caplog):
    """When no epoch ever improved D/loss (e.g. it was never finite), there is no
    early_stopped-loss.model: the run still ends with the other reports."""
    monkeypatch.setattr(classifier.ClassifierTask, 'early_stopping',
                        {'uar': ('D/acc2', 'max')})
    out = tmp_path / 'out'
    train_classifier.main(train_args(tmp_path, tiny, out, '--epoch', '1'))
    printed = capsys.readouterr().out
    assert not (out / 'early_stopped-loss.model').exists()
    assert '== final model: final.model on' in printed
    assert '== early-stopped model (best D/UAR): early_stopped-uar.model on' in printed
    assert 'early_stopped-loss.model on' not in printed
    assert 'early_stopped-loss.model was not written' in caplog.text


def test_frozen_word_embeddings_stay_as_loaded(tmp_path, tiny, capsys):
    out = tmp_path / 'out'
    train_classifier.main(train_args(tmp_path, tiny, out, '--epoch', '2',
                                     '--learnrate', '5e-3', '--freeze_word_embeddings'))
    with np.load(tiny / 'arrays_bert_model.ckpt.npz') as initial:
        table = initial['bert/word_embeddings/W']
        types = initial['bert/token_type_embeddings/W']
    final = final_arrays(out)
    assert np.array_equal(final['bert/word_embeddings/W'], table)
    assert not np.array_equal(final['bert/token_type_embeddings/W'], types)


def test_confusion_pictures_show_the_label_names(tmp_path, tiny, capsys, monkeypatch):
    """--label_names reaches the confusion matrices' ticks (the label it leaves out is
    shown as it is) and nowhere else: the printed report keeps the labels."""
    from bertlib import figures
    ticks = {}
    real = figures.save_figure

    def spy(figure, path, dpi=150):
        if '-cm-' in path:
            ax = figure.axes[0]
            ticks[path] = ([t.get_text() for t in ax.get_xticklabels()],
                           [t.get_text() for t in ax.get_yticklabels()])
        return real(figure, path, dpi)
    monkeypatch.setattr(figures, 'save_figure', spy)
    names = tmp_path / 'names.tsv'
    names.write_text('pos\tpositive\n', encoding='utf-8')
    out = tmp_path / 'out'
    args = [a for a in train_args(tmp_path, tiny, out, '--epoch', '1') if a != '--noplot']
    train_classifier.main(args + ['--label_names', str(names)])
    assert len(ticks) == 3
    order = checkpoints.load_labels(str(out / 'labels.bin'))  # {label: id}
    shown = [{'pos': 'positive'}.get(label, label) for label in sorted(order, key=order.get)]
    for x, y in ticks.values():
        assert x == y == shown
    assert 'positive' not in capsys.readouterr().out


@pytest.mark.parametrize('text, message', [
    ('pos\n', r"names.tsv:1: expected 'label<TAB>name'"),
    ('pos\tneg\n', r"label 'pos' is named 'neg', which is also a label of the data")])
def test_bad_label_names_stop_before_training(tmp_path, tiny, text, message):
    names = tmp_path / 'names.tsv'
    names.write_text(text, encoding='utf-8')
    out = tmp_path / 'out'
    with pytest.raises(UsageError, match=message):
        train_classifier.main(train_args(tmp_path, tiny, out, '--label_names', str(names)))
    assert not (out / 'log.jsonl').exists() and not (out / 'final.model').exists()
