"""plot_features.py, bertlib/projection.py and bertlib/figures.py: valid pictures in each
format, Japanese labels drawn with a font that has their glyphs, stratified samples, and
bad input stopped with one clear message before anything is written."""

import subprocess
import sys
import warnings

import numpy as np
import pytest

import plot_features
from bertlib import figures, projection
from bertlib.errors import UsageError

from conftest import JAPANESE, ROOT, assert_picture, missing_glyph_warnings, write_features

def test_png_draws_japanese_labels_with_their_glyphs(tmp_path):
    import matplotlib
    source, picture = tmp_path / 'f.tsv', tmp_path / 'p.png'
    write_features(source)
    # From matplotlib's defaults, so that a font set by an earlier test cannot hide a
    # plot that no longer chooses one.
    with matplotlib.rc_context(), warnings.catch_warnings(record=True) as caught:
        matplotlib.rcdefaults()
        warnings.simplefilter('always')
        plot_features.main(['--input', str(source), '--output', str(picture)])
    assert_picture(picture, 'png')
    # matplotlib warns 'Glyph ... missing from font(s)' for each character drawn as a box.
    assert missing_glyph_warnings(caught) == []


def test_japanese_font_has_every_label_glyph():
    from matplotlib.font_manager import FontProperties, findfont
    from matplotlib.ft2font import FT2Font
    family = figures.use_japanese_font()
    assert family is not None, 'no Japanese font: pip install matplotlib-fontja'
    font = FT2Font(findfont(FontProperties(family=family), fallback_to_default=False))
    missing = [c for c in ''.join(JAPANESE) if font.get_char_index(ord(c)) == 0]
    assert missing == []


@pytest.mark.parametrize('kind', ['pdf', 'svg'])
def test_pdf_and_svg_follow_the_extension(tmp_path, kind):
    source, picture = tmp_path / 'f.tsv', tmp_path / ('p.' + kind.upper())
    write_features(source)
    plot_features.main(['--input', str(source), '--output', str(picture), '--method', 'pca',
                        '--title', 'タイトル'])
    assert_picture(picture, kind)


def test_samples_draws_a_stratified_subset(tmp_path, monkeypatch):
    source, picture = tmp_path / 'f.tsv', tmp_path / 'p.png'
    write_features(source)
    drawn = {}
    real = figures.scatter
    monkeypatch.setattr(figures, 'scatter',
                        lambda ax, xy, labels, title: (drawn.update(labels=labels,
                                                                    title=title),
                                                       real(ax, xy, labels, title)))
    plot_features.main(['--input', str(source), '--output', str(picture), '--method', 'pca',
                        '--samples', '30'])
    assert len(drawn['labels']) == 30
    assert [drawn['labels'].count(n) for n in JAPANESE] == [12, 9, 6, 3]
    # The default first line is the input file name; the second says what is drawn, and
    # whose scores these are (well-separated classes: 1.000).
    assert drawn['title'] == ('f.tsv\nPCA of 30 of 300 points (a stratified sample)   '
                              'precision@1 1.000   MAP@R 1.000 of the sample')


def test_stratified_sample_keeps_shares_and_every_class():
    labels = ['a'] * 900 + ['b'] * 95 + ['c'] * 5
    chosen = projection.stratified_sample(labels, 100, seed=3)
    picked = [labels[i] for i in chosen]
    assert len(chosen) == 100 and np.all(np.diff(chosen) > 0)
    assert (picked.count('a'), picked.count('b'), picked.count('c')) in {(90, 9, 1),
                                                                         (89, 10, 1)}
    assert (projection.stratified_sample(labels, 100, seed=3) == chosen).all()
    assert not (projection.stratified_sample(labels, 100, seed=4) == chosen).all()
    # Fewer points than classes cannot cover them all; every class while it can.
    assert len(set(labels[i] for i in projection.stratified_sample(labels, 3, 0))) == 3
    with pytest.raises(UsageError, match='larger than the data'):
        projection.stratified_sample(labels, 1001, 0)


def test_project_2d_shapes_and_small_inputs():
    rng = np.random.default_rng(0)
    assert projection.project_2d(rng.normal(size=(40, 5)), 'pca').shape == (40, 2)
    # perplexity 30 is clipped below 12 points instead of failing
    assert projection.project_2d(rng.normal(size=(12, 3)), 'tsne').shape == (12, 2)
    assert projection.project_2d(rng.normal(size=(10, 1)), 'pca').shape == (10, 2)


BAD_ROWS = [
    ('エンジン\t1.0\t2.0\n制動装置\t1.0\n', 'line 2'),
    ('エンジン\t1.0\t2.0\n制動装置\t1.0\tabc\n', 'line 2, column 3'),
    ('エンジン\t1.0\tnan\n', 'line 1, column 3'),
    ('エンジン\t1.0\t2.0\n\n制動装置\tinf\t2.0\n', 'line 3, column 2'),
    ('', 'empty'),
]


@pytest.mark.parametrize('text, where', BAD_ROWS)
def test_bad_rows_name_file_and_line_and_write_nothing(tmp_path, text, where):
    source, picture = tmp_path / 'bad.tsv', tmp_path / 'p.png'
    source.write_text(text, encoding='utf-8')
    with pytest.raises(UsageError, match=where) as error:
        plot_features.main(['--input', str(source), '--output', str(picture)])
    assert 'bad.tsv' in str(error.value)
    assert list(tmp_path.iterdir()) == [source]


@pytest.mark.parametrize('flags, message', [
    (['--samples', '1'], '--samples must be at least 2'),
    (['--output', 'PLACE/p.gif'], 'picture format'),
    (['--output', 'PLACE/missing/p.png'], 'does not exist'),
    (['--perplexity', '0'], 'perplexity'),
])
def test_bad_flags_are_usage_errors(tmp_path, flags, message):
    source = tmp_path / 'f.tsv'
    write_features(source)
    flags = [f.replace('PLACE', str(tmp_path)) for f in flags]
    argv = ['--input', str(source), '--output', str(tmp_path / 'p.png')] + flags
    with pytest.raises(UsageError, match=message):
        plot_features.main(argv)
    assert list(tmp_path.iterdir()) == [source]


def test_script_reports_one_line_and_exit_status_2(tmp_path):
    source = tmp_path / 'bad.tsv'
    source.write_text('a\t1\t2\nb\t1\n', encoding='utf-8')
    result = subprocess.run([sys.executable, str(ROOT / 'plot_features.py'), '--input',
                             str(source), '--output', str(tmp_path / 'p.png')],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith('error: %s, line 2' % source)
    assert 'Traceback' not in result.stderr
    assert not (tmp_path / 'p.png').exists()


def test_original_stdout_line_default_output_and_samples_cap(tmp_path):
    """As the original plot script: a summary line on stdout (users tee it into logs),
    result.png when no --output is given, and --samples larger than the data plots all."""
    source = tmp_path / 'f.tsv'
    write_features(source, sizes=(20, 10))
    result = subprocess.run([sys.executable, str(ROOT / 'plot_features.py'), '--input',
                             str(source), '--samples', '3000', '--method', 'pca'],
                            capture_output=True, text=True, cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "# input: 30, class: 2, labels: {'%s': 0, '%s': 1}\n" % (
        JAPANESE[0], JAPANESE[1])
    assert_picture(tmp_path / 'result.png', 'png')


def test_identical_rows_are_a_clear_error_not_a_crash(tmp_path):
    """Features of --max_seq_length 2 (all rows alike) killed t-SNE with a segmentation
    fault (exit 139); now one error line and exit 2."""
    source = tmp_path / 'same.tsv'
    source.write_text(''.join('%s\t0.5\t-1.25\n' % 'ab'[i % 2] for i in range(30)))
    result = subprocess.run([sys.executable, str(ROOT / 'plot_features.py'), '--input',
                             str(source), '--output', str(tmp_path / 'p.png')],
                            capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[-1].startswith(
        'error: %s: all 30 feature rows are the same point' % source)
    assert 'Traceback' not in result.stderr
    assert not (tmp_path / 'p.png').exists()


def drawn_curves(monkeypatch, records, names, title='run: metric learning, triplet loss'):
    """The figure plot_curves draws of `records`, caught before it is written."""
    caught = []
    monkeypatch.setattr(figures, 'save_figure', lambda figure, path, dpi: caught.append(figure))
    figures.plot_curves(records, 'curves.png', names, title)
    return caught[0]


def curve_record(epoch, loss, acc1, acc2):
    return {'epoch': epoch, 'T/loss': loss, 'D/loss': loss * 1.01, 'T/acc1': acc1,
            'D/acc1': acc1 - 0.1, 'T/acc2': acc2, 'D/acc2': acc2 - 0.1}


def test_curves_name_their_scores_in_words_and_the_run(monkeypatch):
    records = [curve_record(1, 4.04, 0.86, 0.74), curve_record(2, 3.92, 0.9, 0.83)]
    figure = drawn_curves(monkeypatch, records, ('precision@1', 'MAP@R'))
    loss_axis, score_axis = figure.axes
    assert [t.get_text() for t in score_axis.get_legend().get_texts()] == [
        'train precision@1', 'train MAP@R', 'eval precision@1', 'eval MAP@R']
    assert figure.get_suptitle() == 'run: metric learning, triplet loss'
    # A 3% drop is drawn on an axis from zero, and its range is written above it.
    assert loss_axis.get_ylim()[0] == 0
    assert loss_axis.get_title() == ('loss: train 4.04 \u2192 3.92, '
                                     'eval 4.08 \u2192 3.959')


def test_coinciding_curves_say_so_instead_of_hiding_one(monkeypatch):
    """On balanced data accuracy and UAR agree to the third decimal: one legend entry
    says the two lines are one; the eval ones, 0.02 apart, keep an entry each."""
    records = [curve_record(e, 0.7 - 0.1 * e, 0.6 + 0.1 * e, 0.6 + 0.1 * e + 0.002)
               for e in (1, 2)]
    for record in records:
        record['D/acc2'] += 0.02
    figure = drawn_curves(monkeypatch, records, ('accuracy', 'UAR'))
    texts = [t.get_text() for t in figure.axes[1].get_legend().get_texts()]
    assert texts == ['train accuracy = UAR (within 0.005: one line)', 'eval accuracy',
                     'eval UAR']
    # The one line is drawn once: no hollow-marked copy over it, unlike its legend entry.
    lines = figure.axes[1].get_lines()
    assert len(lines) == 3 and lines[0].get_linestyle() == '-'


def test_negative_losses_keep_their_own_range(monkeypatch):
    records = [curve_record(1, -2.0, 0.5, 0.4), curve_record(2, -3.0, 0.6, 0.5)]
    loss_axis = drawn_curves(monkeypatch, records, ('precision@1', 'MAP@R')).axes[0]
    assert loss_axis.get_ylim()[0] < -3.0


def test_a_nan_loss_leaves_the_other_curves_drawn(monkeypatch):
    records = [curve_record(1, 2.0, 0.5, 0.4), curve_record(2, 1.5, 0.6, 0.5)]
    for record in records:
        record['D/loss'] = float('nan')
    loss_axis = drawn_curves(monkeypatch, records, ('precision@1', 'MAP@R')).axes[0]
    assert loss_axis.get_ylim() == (0, pytest.approx(2.2))
    assert loss_axis.get_title() == 'loss: train 2 \u2192 1.5, eval nan \u2192 nan'
