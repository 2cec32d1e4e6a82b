"""evaluate_features.py and the features-file reader behind it."""

import numpy as np
import pytest

import evaluate_features
from bertlib import evaluation, featurefile, metrics
from bertlib.errors import UsageError
from bertlib.features import format_row


def write_features(path, labels, x):
    with open(path, 'w', encoding='utf-8') as f:
        for label, row in zip(labels, x):
            f.write(format_row(label, np.asarray(row, dtype=np.float32)))
    return path


def clusters(n_per_class, names, dim=8, spread=0.05, seed=0):
    """Well separated classes: one random direction each, plus a little noise."""
    rng = np.random.RandomState(seed)
    centres = rng.standard_normal((len(names), dim))
    labels = [name for name in names for _ in range(n_per_class)]
    x = np.repeat(centres, n_per_class, axis=0) + spread * rng.standard_normal(
        (len(labels), dim))
    return labels, x.astype(np.float32)


def test_reader_round_trips_what_extraction_writes(tmp_path):
    labels, x = clusters(5, ['a', '', '陸運'])
    path = write_features(tmp_path / 'f.tsv', labels, x)
    got_labels, got = featurefile.read_features(str(path))
    assert got_labels == labels
    np.testing.assert_allclose(got, x, atol=5e-7)


@pytest.mark.parametrize('text, message', [
    ('a\t1\t2\nb\t1\t2\t3\n', 'f.tsv, line 2: 3 feature columns, but line 1 has 2'),
    ('a\t1\t2\nb\t1\tx\n', "f.tsv, line 2, column 3: 'x' is not a number"),
    ('a\t1\tnan\n', 'f.tsv, line 1, column 3: nan is not a finite number'),
    ('a\tinf\t1\n', 'f.tsv, line 1, column 2: inf is not a finite number'),
    ('a 1 2\n', 'f.tsv, line 1: no features'),
    ('\n\n', 'f.tsv: no features (the file is empty)'),
])
def test_reader_names_file_and_line_of_bad_rows(tmp_path, text, message):
    path = tmp_path / 'f.tsv'
    path.write_text(text, encoding='utf-8')
    with pytest.raises(UsageError) as e:
        featurefile.read_features(str(path))
    assert message in str(e.value)


def test_scores_separate_good_features_from_noise():
    labels, good = clusters(40, ['a', 'b', 'c'])
    noise = np.random.RandomState(1).standard_normal(good.shape).astype(np.float32)
    good_scores = evaluation.score_features(labels, good, train=(labels, good))
    noise_scores = evaluation.score_features(labels, noise)
    for key in ('precision_at_1', 'map_at_r', 'r_precision', 'kmeans_nmi', 'kmeans_ari',
                'probe_accuracy'):
        assert good_scores[key] == pytest.approx(1.0), key
    assert good_scores['silhouette'] > 0.9
    assert noise_scores['map_at_r'] < 0.6 and noise_scores['kmeans_ari'] < 0.3
    # The retrieval columns are bertlib's, the training log's acc1 / acc2.
    expected = metrics.retrieval_metrics(noise, labels)
    assert noise_scores['map_at_r'] == expected['map_at_r']


def test_script_writes_one_row_per_file_and_a_grid(tmp_path, capsys):
    labels, good = clusters(30, ['正', '負'])
    noise = np.random.RandomState(2).standard_normal(good.shape)
    a = write_features(tmp_path / 'dml.tsv', labels, good)
    b = write_features(tmp_path / 'embed.tsv', labels, noise)
    grid = tmp_path / 'grid.png'
    evaluate_features.main([str(a), str(b), '--names', 'DML', 'Pre-trained',
                            '--train_features', str(a), str(b), '--grid', str(grid)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith('| features | P@1 | MAP@R | R-prec | KMeans NMI')
    assert lines[0].endswith('probe acc |')
    assert lines[2].startswith('| DML | 1.000 | 1.000 | 1.000 | 1.000 | 1.000 |')
    assert lines[3].startswith('| Pre-trained |') and len(lines) == 4
    assert grid.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_bad_input_is_one_clear_error_and_writes_nothing(tmp_path):
    labels, x = clusters(5, ['a', 'b'])
    good = write_features(tmp_path / 'good.tsv', labels, x)
    single = write_features(tmp_path / 'single.tsv', ['a'] * 10, x)
    out = tmp_path / 'table.md'
    with pytest.raises(UsageError, match='single.tsv: only one label'):
        evaluate_features.main([str(good), str(single), '--output', str(out)])
    assert not out.exists()
    with pytest.raises(UsageError, match='2 --train_features for 1 feature files'):
        evaluate_features.main([str(good), '--train_features', str(good), str(good)])
    with pytest.raises(UsageError, match='does not exist or is not writable'):
        evaluate_features.main([str(good), '--grid', str(tmp_path / 'no' / 'g.png')])
    few = write_features(tmp_path / 'few.tsv', ['a', 'b'], x[:2])
    with pytest.raises(UsageError, match='2 points for 2 labels'):
        evaluate_features.main([str(few)])


def test_grid_of_identical_rows_keeps_the_table_and_names_the_file(tmp_path):
    """--max_seq_length 2 features (every row alike): the table is written first, then
    one clear error instead of a t-SNE segmentation fault."""
    labels = ['a', 'b'] * 10
    same = write_features(tmp_path / 'same.tsv', labels, np.tile([[0.5, -1.0, 2.0]], (20, 1)))
    out, grid = tmp_path / 'table.md', tmp_path / 'grid.png'
    with pytest.raises(UsageError, match='same.tsv: all 20 feature rows are the same point'):
        evaluate_features.main([str(same), '--output', str(out), '--grid', str(grid)])
    assert out.read_text().splitlines()[2].startswith('| same |')
    assert not grid.exists()
