"""What the scripts trust, round 3 (issue 26, items 9-12): feature files, labels drawn in
pictures, the size of pictures, flag ranges, closed standard streams and
test_classifier.py's inputs. Each hostile value is one UsageError (one `error:` line,
exit 2) or, where the README says so, a result."""

import subprocess
import sys

import numpy as np
import pytest

import cluster_features
import evaluate_features
import plot_features
import test_classifier
import train_classifier
import train_dml
from bertlib import checkpoints, evaluation, featurefile, figures
from bertlib.errors import UsageError
from conftest import ROOT, WORDS, model_flags, write_features, write_labelled, \
    write_random_bert


@pytest.fixture(scope='module')
def world(tmp_path_factory):
    """A tiny BERT, train.txt / eval.txt (40 / 12 lines, pos and neg) and a classifier
    trained one epoch on them ('cls')."""
    root = tmp_path_factory.mktemp('trust_files')
    bert = write_random_bert(root / 'bert', WORDS, hidden_size=16, num_hidden_layers=1,
                             intermediate_size=32)
    write_labelled(root)
    world = {'root': root, 'bert': bert}
    train_classifier.main(training_args(world, root / 'cls'))
    return world


def training_args(world, out, *extra, train=None):
    root = world['root']
    return (['--train', str(train or root / 'train.txt'), '--eval', str(root / 'eval.txt'),
             '--out', str(out), '--batchsize', '8', '--noplot', '--epoch', '1']
            + model_flags(world['bert']) + list(extra))


def classifier_args(world, path, *extra):
    cls = world['root'] / 'cls'
    return (['--input', str(path), '--model', str(cls / 'final.model'),
             '--label', str(cls / 'labels.bin')] + model_flags(world['bert']) + list(extra))


# --- 9. feature files and labels ---------------------------------------------------------

def test_a_byte_order_mark_is_dropped_from_a_features_file(tmp_path):
    path = tmp_path / 'f.tsv'
    path.write_bytes('\ufeffa\t1\t2\nb\t3\t4\na\t5\t6\n'.encode('utf-8'))
    labels, features = featurefile.read_features(str(path))
    assert labels == ['a', 'b', 'a'] and features.shape == (3, 2)


def test_a_single_feature_column_is_refused_by_every_map(tmp_path):
    path = tmp_path / 'one.tsv'
    path.write_text('a\t1\nb\t2\na\t3\nb\t4\n')
    with pytest.raises(UsageError, match=r'one\.tsv, line 1: one feature column'):
        plot_features.main(['-i', str(path), '-o', str(tmp_path / 'p.png')])
    with pytest.raises(UsageError, match='one feature column'):
        cluster_features.main(['-i', str(path), '-o', str(tmp_path / 'c.png')])
    assert not list(tmp_path.glob('*.png')) and not list(tmp_path.glob('c.tsv'))


def test_labels_are_drawn_as_literal_text(tmp_path):
    """'$\\foo$' is parsed as math text by matplotlib unless escaped: it raised
    ParseFatalException in every picture, and at the end of train_classifier.py."""
    assert figures.literal('$\\foo$') == '\\$\\foo\\$'
    assert figures.literal('x' * 100) == 'x' * 39 + '\u2026'
    path = tmp_path / 'math.tsv'
    write_features(path, sizes=(20, 20), names=['$\\foo$', '$x^{$'])
    plot_features.main(['-i', str(path), '-o', str(tmp_path / 'p.png'), '--method', 'pca',
                        '--title', '$\\bar$'])
    assert (tmp_path / 'p.png').stat().st_size > 0
    figures.draw_confusion(np.eye(2, dtype=int), np.eye(2), ['$\\foo$', 'b'],
                           str(tmp_path / 'cm.png'), '$\\alpha$ run')
    assert (tmp_path / 'cm.png').stat().st_size > 0


def test_labels_that_differ_only_by_normalisation_are_refused(world, tmp_path):
    composed, decomposed = 'caf\u00e9', 'cafe\u0301'
    path = tmp_path / 'f.tsv'
    path.write_text('%s\t1\t2\n%s\t3\t4\n' % (composed, decomposed), encoding='utf-8')
    with pytest.raises(UsageError, match=r'f\.tsv:2: label .* \(line 1\) differ only by '
                                         r'Unicode normalisation'):
        featurefile.read_features(str(path))
    train = tmp_path / 'train.txt'
    train.write_text('%s\tgood film\n%s\tbad plot\n%s\tnice film\n%s\tpoor plot\n'
                     % (composed, decomposed, composed, decomposed), encoding='utf-8')
    with pytest.raises(UsageError, match='differ only by Unicode normalisation'):
        train_dml.main(training_args(world, tmp_path / 'out', '--batchsize', '2',
                                     '--loss', 'supcon', '--samples_per_class', '2',
                                     train=train))


def test_a_training_file_without_a_pair_of_one_class_is_refused(world, tmp_path):
    train = tmp_path / 'train.txt'
    train.write_text('a\tgood film\nb\tbad plot\nc\tthe film\nd\tvery nice\n')
    with pytest.raises(UsageError, match='no class has two sentences'):
        train_dml.main(training_args(world, tmp_path / 'out', '--batchsize', '4',
                                     '--loss', 'supcon', '--samples_per_class', '2',
                                     train=train))


# --- 10. pictures too large ---------------------------------------------------------------

def png_size(path):
    data = path.read_bytes()
    return int.from_bytes(data[16:20], 'big'), int.from_bytes(data[20:24], 'big')


def test_many_or_long_labels_keep_the_picture_small(tmp_path):
    """3,000 labels made a 1517 x 39116 picture and two 100,000-character labels one
    1,100,101 pixels wide; the legend is bounded and labels are cut."""
    rng = np.random.default_rng(0)
    many, long = tmp_path / 'many.tsv', tmp_path / 'long.tsv'
    many.write_text(''.join('l%d\t%f\t%f\n' % (i, *rng.normal(size=2)) for i in range(500)))
    long.write_text(''.join('%s\t%f\t%f\n' % ('AB'[i % 2] * 100000, *rng.normal(size=2))
                            for i in range(20)))
    for path in (many, long):
        picture = tmp_path / (path.stem + '.png')
        plot_features.main(['-i', str(path), '-o', str(picture), '--method', 'pca'])
        assert max(png_size(picture)) <= 2000


def test_the_final_size_is_checked_before_drawing(tmp_path):
    from matplotlib.figure import Figure
    figure = Figure(figsize=(4, 4))
    ax = figure.subplots()
    ax.text(50, 0.5, 'fifty axes to the right', transform=ax.transAxes)
    with pytest.raises(UsageError, match='too large to open'):
        figures.save_figure(figure, str(tmp_path / 'p.png'))
    assert not list(tmp_path.iterdir())


# --- 11. flags and standard streams -------------------------------------------------------

@pytest.mark.parametrize('script, flags, message', [
    (plot_features, ['--perplexity', 'nan'], '--perplexity must be a number above 0'),
    (plot_features, ['--seed', '-1'], '--seed must be between 0 and 4294967295'),
    (plot_features, ['--seed', '99999999999'], '--seed must be between 0 and'),
    (cluster_features, ['--timeout', 'nan'], '--timeout must be a number of at least 0'),
    (cluster_features, ['--timeout', 'inf'], '--timeout must be a number of at least 0'),
    (cluster_features, ['--timeout', '1e300'], '--timeout must be .* at most 1e\\+06'),
    (evaluate_features, ['--silhouette_samples', '2'], '--silhouette_samples must be at'),
])
def test_analysis_flags_are_range_checked(tmp_path, script, flags, message):
    path = tmp_path / 'f.tsv'
    write_features(path, sizes=(10, 10))
    where = [str(path)] if script is evaluate_features else ['-i', str(path), '-o',
                                                              str(tmp_path / 'p.png')]
    with pytest.raises(UsageError, match=message):
        script.main(where + flags)
    assert not list(tmp_path.glob('p.*'))


def test_a_silhouette_sample_keeps_every_label():
    rng = np.random.default_rng(0)
    labels = ['a'] * 95 + ['b'] * 5
    scores = evaluation.score_features(labels, rng.normal(size=(100, 4)),
                                       silhouette_samples=3)
    assert np.isfinite(scores['silhouette'])
    with pytest.raises(UsageError, match='not more than the 2 labels'):
        evaluation.score_features(labels, rng.normal(size=(100, 4)), silhouette_samples=2)


@pytest.mark.parametrize('flags, message', [
    (['--batchsize', '1000000000'], '--batchsize must be between 1 and 65536'),
    (['--samples_per_class', '1000000000', '--loss', 'supcon'], '--samples_per_class must'),
    (['--triplets', '1000000000'], '--triplets must be between 0 and'),
    (['--memory_size', '1000000000', '--loss', 'supcon'], '--memory_size must be between'),
    (['--dim', '1000000000'], '--dim must be between 1 and 65536'),
    (['--samples_per_class', '16', '--loss', 'supcon'], 'is more than --batchsize 8'),
    (['--memory_size', '41', '--loss', 'supcon'], '--memory_size 41 is more than the 40'),
])
def test_training_sizes_are_bounded(world, tmp_path, flags, message):
    out = tmp_path / 'out'
    with pytest.raises(UsageError, match=message):
        train_dml.main(training_args(world, out, *flags))
    assert not (out / 'final.model').exists()


def test_a_batch_larger_than_the_training_set_is_the_whole_set(world, tmp_path, caplog):
    # The README's walk through trains on 36 sentences with --batchsize 64: one batch of
    # all of them, not batches of 64 drawn with repeats, and not a refusal.
    out = tmp_path / 'out'
    with caplog.at_level('WARNING'):
        train_dml.main(training_args(world, out, '--batchsize', '64', '--loss', 'supcon',
                                     '--sampling', 'random'))
    assert '--batchsize 64 is more than the 40 sentences' in caplog.text
    assert '(--batchsize 40)' in caplog.text
    assert checkpoints.read_meta(str(out / 'final.model'))['step'] == 1  # one batch


@pytest.mark.parametrize('redirect, message', [
    ('<&-', '-: standard input is closed'),
    ('>&-', 'standard output is closed'),
])
def test_a_closed_standard_stream_is_one_error_line(world, redirect, message):
    command = '%s extruct_bert_embed.py --input - %s %s' % (
        sys.executable, ' '.join(model_flags(world['bert'])), redirect)
    result = subprocess.run(['bash', '-c', command], cwd=ROOT, stdin=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, timeout=120)
    errors = [line for line in result.stderr.splitlines() if ' - INFO - ' not in line]
    assert result.returncode == 2 and len(errors) == 1
    assert errors[0].startswith('error: ') and message in errors[0]


# --- 12. test_classifier.py ---------------------------------------------------------------

def test_classifier_refuses_a_file_of_blank_lines(world, tmp_path):
    path = tmp_path / 'blank.txt'
    path.write_text('\n\n  \n')
    with pytest.raises(UsageError, match='blank.txt: no sentences'):
        test_classifier.main(classifier_args(world, path))


def test_classifier_counts_unknown_labels_as_errors(world, tmp_path, capsys):
    path = tmp_path / 'unknown.txt'
    path.write_text('zzz\tgood film\nyyy\tbad plot\n')
    test_classifier.main(classifier_args(world, path))
    out = capsys.readouterr().out
    assert 'no confusion matrix' in out
    assert 'accuracy counting the 2 lines with unknown labels as errors: 0.0000' in out


def test_classifier_honours_max_length(world, capsys):
    test_classifier.main(classifier_args(world, world['root'] / 'eval.txt', '--max_length',
                                         '3'))
    assert 'accuracy: ' in capsys.readouterr().out
    test_classifier.main(classifier_args(world, world['root'] / 'eval.txt', '--max_length',
                                         '3', '--predict'))
    assert len(capsys.readouterr().out.splitlines()) == 3
