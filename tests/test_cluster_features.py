"""cluster_features.py and bertlib/clustering.py: one scores row per algorithm, NMI near 1
where the clusters are plain, every algorithm running, a timeout or failure marked while
the others still run, and bad input stopped before anything is written."""

import csv
import os
import time
import warnings

import numpy as np
import pytest

import cluster_features
from bertlib import clustering, figures
from bertlib.errors import UsageError

from conftest import JAPANESE, assert_picture, missing_glyph_warnings, write_features


def read_scores(path):
    with open(path, encoding='utf-8') as stream:
        return list(csv.DictReader(stream, delimiter='\t'))


def run(tmp_path, *flags, sizes=(60, 45, 30, 15)):
    """Runs cluster_features.py on well-separated Japanese-labelled features; returns the
    scores rows by algorithm and the caught warnings."""
    source = tmp_path / 'f.tsv'
    write_features(source, sizes=sizes)
    argv = ['--input', str(source), '--output', str(tmp_path / 'c.png')] + list(flags)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        cluster_features.main(argv)
    return {row['algorithm']: row for row in read_scores(tmp_path / 'c.tsv')}, caught


def test_picture_and_one_scores_row_per_algorithm(tmp_path):
    rows, caught = run(tmp_path, '--algorithms', 'MiniBatchKMeans,ward,DBSCAN', '--columns', '2')
    assert_picture(tmp_path / 'c.png', 'png')
    assert missing_glyph_warnings(caught) == []
    assert list(rows) == ['MiniBatchKMeans', 'Ward', 'DBSCAN']
    header = open(tmp_path / 'c.tsv', encoding='utf-8').readline().rstrip('\n').split('\t')
    assert header == ['algorithm', 'clusters', 'nmi', 'ari', 'homogeneity', 'completeness',
                      'v_measure', 'silhouette', 'seconds', 'status']
    kmeans = rows['MiniBatchKMeans']
    assert kmeans['status'] == 'ok' and kmeans['clusters'] == '4'
    assert float(kmeans['nmi']) > 0.95 and float(kmeans['ari']) > 0.95
    assert float(kmeans['silhouette']) > 0.5


def test_every_algorithm_runs(tmp_path):
    rows, _ = run(tmp_path, '--plots', '0', sizes=(40, 30, 20))
    assert list(rows) == list(clustering.ALGORITHMS)
    for name, row in rows.items():
        assert row['status'].startswith('ok'), (name, row['status'])
        assert 0.0 <= float(row['nmi']) <= 1.0
    assert not (tmp_path / 'c.png').exists()  # --plots 0: the table only
    for name in ('MiniBatchKMeans', 'SpectralClustering', 'Ward', 'Birch',
                 'GaussianMixture'):
        assert float(rows[name]['nmi']) > 0.95, name


def test_dim2_clusters_the_projection(tmp_path):
    rows, _ = run(tmp_path, '--dim2', '--algorithms', 'MeanShift,DBSCAN', '--columns', '3')
    assert_picture(tmp_path / 'c.png', 'png')
    assert float(rows['MeanShift']['nmi']) > 0.9
    assert rows['DBSCAN']['status'] == 'ok'


def _slow_or_broken(name, X, n_clusters, seed):
    if name == 'Birch':
        time.sleep(60)
    if name == 'DBSCAN':
        raise MemoryError('Unable to allocate 9 GiB')
    return REAL_FIT_PREDICT(name, X, n_clusters, seed)


REAL_FIT_PREDICT = clustering.fit_predict


def test_timeout_and_failure_are_marked_and_the_others_run(tmp_path, monkeypatch):
    # The children are forked, so they run the patched function.
    monkeypatch.setattr(clustering, 'fit_predict', _slow_or_broken)
    start = time.time()
    rows, _ = run(tmp_path, '--algorithms', 'Birch,DBSCAN,MiniBatchKMeans', '--timeout', '2',
                  '--columns', '2', '--samples', '100')
    assert time.time() - start < 30
    assert rows['Birch']['status'] == 'timeout' and rows['Birch']['nmi'] == ''
    assert rows['DBSCAN']['status'] == 'failed: Unable to allocate 9 GiB'
    assert rows['MiniBatchKMeans']['status'] == 'ok'
    assert float(rows['MiniBatchKMeans']['nmi']) > 0.95
    assert_picture(tmp_path / 'c.png', 'png')


def _exit_hard():
    os._exit(3)


def test_run_guarded_reports_each_way_a_child_ends():
    assert clustering.run_guarded(sum, ([1, 2],), timeout=30).value == 3
    assert clustering.run_guarded(time.sleep, (30,), timeout=0.5).status == 'timeout'
    assert clustering.run_guarded(int, ('x',), timeout=30).status.startswith(
        "failed: invalid literal for int() with base 10: 'x'")
    assert clustering.run_guarded(_exit_hard, (), timeout=30).status == \
        'failed: the process exited with status 3'


def test_clustering_space_centres_and_normalises():
    X = 12.6 + 1e-4 * np.random.default_rng(0).normal(size=(50, 8))  # a collapsed run
    Z = clustering.clustering_space(X)
    assert np.allclose(np.linalg.norm(Z, axis=1), 1.0)
    assert abs(Z.mean(axis=0)).max() < 0.5 and Z.std(axis=0).min() > 0.1


@pytest.mark.parametrize('text, flags, message', [
    (None, ['--columns', '0'], '--columns must be at least 1'),
    (None, ['--clusters', '200'], '150 points are fewer than the 200 clusters'),
    (None, ['--algorithms', 'KMeans'], "unknown algorithm 'KMeans'"),
    (None, ['--output', 'PLACE/no/c.png'], 'does not exist'),
    (None, ['--output', 'PLACE/c.jpg'], 'picture format'),
    (None, ['--output', 'PLACE/bad.png'], 'scores table of --output .* is also an input'),
    ('エンジン\t1\t2\nエンジン\t3\t4\n', [], 'same label'),
    ('エンジン\t1\t2\n制動装置\t3\n', [], 'bad.tsv, line 2'),
    ('エンジン\t1\t2\n制動装置\t3\t-inf\n', [], 'bad.tsv, line 2, column 3'),
    ('', [], 'bad.tsv: no features'),
])
def test_bad_input_is_a_usage_error_and_writes_nothing(tmp_path, text, flags, message):
    source = tmp_path / 'bad.tsv'
    if text is None:
        write_features(source, sizes=(60, 50, 40))
    else:
        source.write_text(text, encoding='utf-8')
    flags = [f.replace('PLACE', str(tmp_path)) for f in flags]
    argv = ['--input', str(source), '--output', str(tmp_path / 'c.png')] + flags
    with pytest.raises(UsageError, match=message):
        cluster_features.main(argv)
    assert list(tmp_path.iterdir()) == [source]


def test_clusters_are_numbered_by_size_and_coloured_apart_from_the_labels():
    """Cluster k is the k-th largest in every panel, and no cluster colour can be taken
    for one of the first 20 label colours (RGB distance at least 0.12 of 1.73)."""
    from matplotlib.colors import to_rgba
    predicted = clustering.by_size(np.array([5] * 3 + [2] * 6 + [-1] + [7]))
    assert predicted.tolist() == [1] * 3 + [0] * 6 + [-1, 2]
    colours = figures.cluster_colors(predicted)
    palette = np.array([to_rgba(c) for c in figures.CLUSTER_PALETTE])
    assert np.allclose(colours[3], palette[0]) and np.allclose(colours[0], palette[1])
    assert np.allclose(colours[9], figures.NOISE_COLOR)
    assert np.allclose(figures.cluster_colors([len(palette) + 3]),
                       figures.SMALL_CLUSTERS_COLOR)
    labels = figures.label_colors(20)[:, :3]
    gaps = np.linalg.norm(palette[:, None, :3] - labels[None], axis=2)
    assert gaps.min() > 0.12


def outcome_of(sizes, noise=0, nmi=0.5, ari=0.25):
    """An Outcome as clustering.evaluate returns it, of clusters of `sizes` (largest
    first) and `noise` noise points."""
    predicted = np.concatenate([np.full(size, k) for k, size in enumerate(sizes)]
                               + [np.full(noise, -1)]).astype(int)
    scores = {'clusters': len(sizes), 'nmi': nmi, 'ari': ari, 'sizes': list(sizes),
              'noise': noise}
    return clustering.Outcome('ok', (predicted, 0.25, scores), 0.3)


def test_panel_titles_show_sizes_noise_and_plain_numbers():
    title = figures.panel_title('Ward', outcome_of([399, 1], ari=-0.001), 60)
    assert title == 'Ward\n2 clusters: 399 + 1 points\n0.2 s   NMI 0.50   ARI 0.00'
    assert '1 cluster: 400 points' in figures.panel_title('OPTICS', outcome_of([400]), 60)
    assert '1 cluster: 397 points, 3 noise' in figures.panel_title(
        'DBSCAN', outcome_of([397], noise=3), 60)
    assert 'no cluster, 5 noise' in figures.panel_title('DBSCAN', outcome_of([], 5), 60)
    many = figures.panel_title('MeanShift', outcome_of([20, 19, 18, 9, 5]), 60)
    assert '5 clusters: 20, 19, 18 \u2026 5 points' in many
    assert figures.fixed(-0.004) == '0.00' and figures.fixed(-0.006) == '-0.01'
    assert figures.fixed(float('nan')) == 'n/a'


def test_grid_legend_says_what_the_colours_mean_and_titles_are_legible():
    from matplotlib.figure import Figure
    labels = [JAPANESE[0]] * 30 + [JAPANESE[1]] * 20
    xy = np.random.default_rng(0).normal(size=(50, 2))
    results = [('Ward', outcome_of([49, 1])),
               ('MeanShift', outcome_of([5] * 8 + [2] * 5)),
               ('DBSCAN', outcome_of([30, 10], noise=10))]
    figure = Figure(figsize=(13.8, 10.6))
    figures.draw_grid(figure, xy, labels, results, 3, 60, 'title')
    axes = figure.axes
    texts = [t.get_text() for t in axes[4].get_legend().get_texts()]
    assert texts[:3] == ['ground truth panel: label', JAPANESE[0], JAPANESE[1]]
    assert texts[4:7] == ['other panels: cluster, numbered by size', 'cluster 1 (largest)',
                          'cluster 2']
    assert 'cluster 10' in texts and 'clusters 11 and smaller' in texts
    assert any(t.startswith('noise: in no cluster') for t in texts)
    assert 'colour = label' in axes[0].get_title()
    assert all(ax.title.get_fontsize() >= 12 for ax in axes[:4])


def test_original_samples_and_plots_cap_and_draw_that_many_points(tmp_path, monkeypatch):
    """The original scikit-clustering.py's `--samples 3000 --plots 300` on fewer points:
    all 150 points are clustered, 120 of them drawn in every panel, and the picture has
    at most as many columns as panels whatever --columns says."""
    drawn = {}
    original = figures.draw_grid

    def spy(figure, xy, labels, results, columns, timeout, title):
        drawn.update(points=len(xy), labels=len(labels), columns=columns, title=title,
                     assignments=[len(o.value[0]) for _, o in results if o.value])
        return original(figure, xy, labels, results, columns, timeout, title)
    monkeypatch.setattr(figures, 'draw_grid', spy)
    rows, _ = run(tmp_path, '--algorithms', 'MiniBatchKMeans,Ward', '--samples', '3000',
                  '--plots', '120', '--columns', '300', sizes=(60, 50, 40))
    assert rows['Ward']['status'] == 'ok'
    assert drawn['points'] == drawn['labels'] == 120
    assert drawn['assignments'] == [120, 120]
    assert drawn['columns'] == 3  # ground truth + two algorithms
    assert '150 points clustered' in drawn['title'] and '120 drawn' in drawn['title']
    from PIL import Image
    width, height = Image.open(tmp_path / 'c.png').size
    assert width < 2000 and height < 1000


def test_a_picture_too_large_to_open_is_refused_before_drawing(tmp_path):
    from matplotlib.figure import Figure
    with pytest.raises(UsageError, match='too large to open'):
        figures.save_figure(Figure(figsize=(1300, 5)), str(tmp_path / 'big.png'), dpi=100)
    assert not (tmp_path / 'big.png').exists()


def test_identical_rows_write_the_scores_then_a_clear_error(tmp_path):
    """What --max_seq_length 2 produces: every row the same point. t-SNE used to kill the
    process (segmentation fault) before the scores table was written."""
    source = tmp_path / 'same.tsv'
    source.write_text(''.join('%s\t0.5\t-1.25\t2.0\n' % ('a' if i % 2 else 'b')
                              for i in range(40)), encoding='utf-8')
    argv = ['--input', str(source), '--output', str(tmp_path / 'c.png'),
            '--algorithms', 'MiniBatchKMeans']
    with pytest.raises(UsageError, match='same.tsv: all 40 feature rows are the same point'):
        cluster_features.main(argv)
    assert [r['algorithm'] for r in read_scores(tmp_path / 'c.tsv')] == ['MiniBatchKMeans']
    assert not (tmp_path / 'c.png').exists()


def test_small_clusters_are_drawn_over_large_ones():
    """A single point of cluster 2 sits where cluster 1's points are: drawn last, on top."""
    from matplotlib.figure import Figure
    predicted = np.array([0] * 20 + [1] + [-1] * 3)
    ax = Figure().subplots()
    figures.draw_points(ax, np.zeros((24, 2)), figures.cluster_colors(predicted),
                        layers=predicted)
    drawn = ax.collections[0].get_facecolors()[:, :3]  # in drawing order; alpha aside
    assert np.allclose(drawn[-1], figures.cluster_colors([1])[0][:3])
    assert np.allclose(drawn[:3], figures.NOISE_COLOR[:3])


@pytest.mark.parametrize('columns', [3, 4, 5])
def test_panels_are_evenly_spaced_whatever_the_legend(columns):
    """A legend wider and taller than its slot (16 long label names, 13 cluster entries)
    grows into the figure's margins: every panel keeps the same size and the same gap to
    its neighbours. Centred in its slot it used to widen that column's margins, leaving
    an empty gap before the last column."""
    from matplotlib.figure import Figure
    labels = ['a rather long label name %d' % k for k in range(16) for _ in range(10)]
    xy = np.random.default_rng(0).normal(size=(160, 2))
    results = ([('Ward %d' % i, outcome_of([10] * 16)) for i in range(9)]
               + [('DBSCAN', outcome_of([100, 50], noise=10))])
    panels = len(results) + 1
    rows = -(-panels // columns)
    figure = Figure(figsize=(4.6 * columns, 5.0 * rows + 0.6), layout='constrained')
    figures.draw_grid(figure, xy, labels, results, columns, 60, 'title')
    figure.draw_without_rendering()  # runs the constrained layout
    boxes = np.array([ax.get_position().extents for ax in figure.axes[:panels]])
    lefts = np.unique(boxes[:, 0].round(4))
    bottoms = np.unique(boxes[:, 1].round(4))
    assert len(lefts) == columns and len(bottoms) == rows
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert np.allclose(widths, widths[0], atol=1e-3)
    assert np.allclose(heights, heights[0], atol=1e-3)
    assert np.allclose(np.diff(lefts), np.diff(lefts)[0], atol=1e-3)
    assert np.allclose(np.diff(bottoms), np.diff(bottoms)[0], atol=1e-3)
    texts = [t.get_text() for t in figure.axes[panels].get_legend().get_texts()]
    assert texts[0] == 'ground truth panel: label' and 'cluster 10' in texts
