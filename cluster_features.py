#!/usr/bin/env python
"""The original BERT-DML's clustering comparison: ten scikit-learn clustering algorithms
on sentence features, scored against the labels, in one picture and one table.

The picture (png, pdf or svg, from the --output extension) holds the ground truth and one
panel per algorithm, all drawn on the t-SNE coordinates of the same points, each titled
with the sizes of the clusters it found (and its noise), its run time and its NMI and
ARI; clusters are numbered by size and coloured apart from the labels, and one legend
says what the colours mean. The scores are also written
as TSV next to the picture (--output with the extension .tsv): algorithm, clusters, NMI,
ARI, homogeneity, completeness, V-measure, silhouette, seconds and status.

Clustering runs on the features, centred and L2-normalised (cosine geometry), or with
--dim2 on the standardised 2-D t-SNE coordinates. Each algorithm runs in a child process:
one that fails or runs past --timeout is marked 'failed: reason' or 'timeout' in the
picture and the table, and the others still run. Logs go to stderr.

Parameters follow scikit-learn's example, with these data-driven choices (all in
bertlib/clustering.py): a 10-nearest-neighbour graph for Spectral, Ward and average
linkage; DBSCAN's eps is the median distance to the 10th nearest neighbour, with
min_samples 10; MeanShift's bandwidth is estimate_bandwidth over the nearest
1/(2 x clusters) of 1,000 points, climbing from 300 seed points; AffinityPropagation
takes the smallest similarity as preference and finds its exemplars on at most 2,500
points; Birch's threshold is half the median nearest-neighbour distance; GaussianMixture
has diagonal covariances above 16 dimensions. NMI, ARI, homogeneity, completeness and
V-measure count DBSCAN/OPTICS noise as one more cluster; the silhouette leaves it out and
uses at most 6,000 points.

--samples and --plots mean what they meant in the original BERT-DML's
scikit-clustering.py: --samples N caps the points clustered (all of them when there are
fewer), --plots N is the number of points drawn in each panel. The scores table is
written before any picture, so a picture that fails still leaves the scores.

Example (the original's command line runs as it was):
    python cluster_features.py --input features/rt-embed-04-test.txt --samples 3000 \\
        --plots 300 --output results/plot_rt-embed-04-test.png
"""

import argparse
import logging
import os
import time

import numpy as np

from bertlib import bert_loading, clustering, figures, flags, labelnames, process, projection
from bertlib.errors import UsageError
from bertlib.featurefile import read_features
from bertlib.fileio import atomic_write

logger = logging.getLogger(__name__)

# Larger inputs are clustered on a stratified sample of this many points: it keeps
# OPTICS's N x N distance matrix within 0.5 GB and the whole grid within 10 minutes on
# 2 cores (bench/plot_cluster_speed.py: 5,197 x 512 features take 1-3 minutes, 8,000 x
# 768 about 3). AffinityPropagation has its own, smaller sample (clustering.py).
DEFAULT_SAMPLES = 8000
# The longest --timeout, in seconds (11.6 days): the clock cannot wait 1e300 s
# (OverflowError), and a real limit is minutes.
MAX_TIMEOUT = 1e6


def main(argv=None):
    args = parse_args(argv)
    algorithms, names = check_args(args)
    started = time.time()
    labels, features = read_features(args.input)
    logger.info('%s: %d points x %d features, %d labels', args.input, len(labels),
                features.shape[1], len(set(labels)))
    show = labelnames.display(names, labels, args.label_names)
    labels, features = subsample(labels, features, args)
    n_clusters = check_clusters(labels, args.clusters)
    xy = tsne(features, args) if args.dim2 else None
    X = clustering.clustering_space(features, xy)
    logger.info('clustering %d points in %d dimensions (%s) into %d clusters', len(X),
                X.shape[1], '2-D t-SNE, --dim2' if args.dim2 else 'centred, L2-normalised',
                n_clusters)
    results = run_all(algorithms, X, labels, n_clusters, args)
    write_scores(results, scores_path(args.output))
    if args.plots != 0:
        xy = tsne(features, args) if xy is None else xy
        draw(xy, labels, show, results, args, X.shape[1])
    logger.info('done in %.1f s', time.time() - started)


def run_all(algorithms, X, labels, n_clusters, args):
    """Each algorithm in its own child process; a list of (name, Outcome)."""
    _, truth = np.unique(labels, return_inverse=True)
    silhouette = clustering.silhouette_distances(X, args.seed)
    if 'AffinityPropagation' in algorithms and len(X) > clustering.AFFINITY_POINTS:
        logger.info('AffinityPropagation finds its exemplars on a random sample of %d of '
                    'the %d points (its N x N matrices would take minutes), then every '
                    'point joins its nearest exemplar', clustering.AFFINITY_POINTS, len(X))
    if len(X) > clustering.SILHOUETTE_POINTS:
        logger.info('silhouettes are computed on a random sample of %d points',
                    clustering.SILHOUETTE_POINTS)
    results = []
    for name in algorithms:
        outcome = clustering.run_guarded(
            clustering.evaluate, (name, X, n_clusters, args.seed, truth, silhouette),
            args.timeout or None)
        logger.info('%s', describe(name, outcome))
        results.append((name, outcome))
    return results


def describe(name, outcome):
    """One log line of an algorithm's result."""
    if outcome.value is None:
        return '%-24s %s (%.1f s)' % (name, outcome.status, outcome.seconds)
    _, seconds, s = outcome.value
    return ('%-24s %6.1f s  %12s  NMI %.3f  ARI %.3f  silhouette %.3f  %s'
            % (name, seconds, figures.count(s['clusters'], 'cluster'), s['nmi'], s['ari'],
               s['silhouette'], outcome.status))


def tsne(features, args):
    """(N, 2) t-SNE coordinates of the (N, D) features."""
    start = time.time()
    xy = projection.project_2d(features, method='tsne', seed=args.seed, source=args.input)
    logger.info('t-SNE of %d points: %.1f s', len(features), time.time() - start)
    return xy


def subsample(labels, features, args):
    """The points to cluster: a stratified sample when --samples (or its default) is
    smaller than the data, all of them otherwise (--samples is a cap, as in the original
    BERT-DML). Returns (labels, (n, D) features)."""
    total = len(labels)
    if args.samples is None:
        if total <= DEFAULT_SAMPLES:
            return labels, features
        count = DEFAULT_SAMPLES
        logger.info('clustering a stratified sample of %d of the %d points: the --samples '
                    'default keeps the N x N distance matrices within 0.5 GB and the grid '
                    'within about 10 minutes on 2 cores (--samples 0: all points)',
                    count, total)
    elif args.samples == 0 or args.samples >= total:
        return labels, features
    else:
        count = args.samples
        logger.info('clustering a stratified sample of %d of the %d points (--seed %d)',
                    count, total, args.seed)
    chosen = projection.stratified_sample(labels, count, args.seed)
    return [labels[i] for i in chosen], features[chosen]


def check_clusters(labels, clusters):
    """The number of clusters: --clusters, or the number of labels; UsageError when the
    scores would mean nothing."""
    distinct = len(set(labels))
    if distinct < 2:
        raise UsageError('all %d points have the same label (%r): scoring clusters needs '
                         'at least two labels' % (len(labels), labels[0]))
    n_clusters = clusters or distinct
    if len(labels) < n_clusters:
        raise UsageError('%d points are fewer than the %d clusters asked for'
                         % (len(labels), n_clusters))
    return n_clusters


def scores_path(output):
    return os.path.splitext(output)[0] + '.tsv'


# The scores' columns are clustering.SCORE_COLUMNS; this table adds a name, time and status.
TSV_HEADER = ('algorithm',) + clustering.SCORE_COLUMNS + ('seconds', 'status')


def write_scores(results, path):
    """The scores table, one row per algorithm; empty cells where there is no score."""
    with atomic_write(path) as stream:
        stream.write('\t'.join(TSV_HEADER) + '\n')
        for name, outcome in results:
            stream.write('\t'.join([name] + score_cells(outcome) + [outcome.status]) + '\n')
    logger.info('wrote %s', path)


def score_cells(outcome):
    """The clusters..seconds cells of one row."""
    if outcome.value is None:
        return [''] * (len(clustering.SCORE_COLUMNS)) + ['%.2f' % outcome.seconds]
    _, seconds, s = outcome.value
    cells = [str(s['clusters'])]
    cells += ['' if np.isnan(s[key]) else '%.4f' % s[key]
              for key in clustering.SCORE_COLUMNS[1:]]
    return cells + ['%.2f' % seconds]


def draw(xy, labels, show, results, args, dims):
    """The picture: the (N, 2) t-SNE points of the N clustered `labels`, each shown as
    show[label] (--label_names), --plots of them (a stratified sample) in each panel,
    --columns panels a row."""
    from matplotlib.figure import Figure
    figures.use_japanese_font()
    shown = shown_points(labels, args.plots, args.seed)
    panels = len(results) + 1
    columns = min(args.columns, panels)
    rows = -(-panels // columns)
    figure = Figure(figsize=(4.6 * columns, 5.0 * rows + 0.6), layout='constrained')
    space = '2-D t-SNE (--dim2)' if args.dim2 else '%d-D features' % dims
    title = '%s: %d points clustered on the %s' % (os.path.basename(args.input), len(xy),
                                                   space)
    if len(shown) < len(xy):
        title += ', %d drawn' % len(shown)
    figures.draw_grid(figure, xy[shown], [show[labels[i]] for i in shown],
                         [(name, shown_outcome(outcome, shown)) for name, outcome in results],
                         columns, args.timeout, title)
    figures.save_figure(figure, args.output, dpi=100)
    logger.info('wrote %s', args.output)


def shown_points(labels, plots, seed):
    """Indices of the points drawn in each panel: a stratified sample of `plots`, or all
    of them when --plots is None or not smaller than the data."""
    if plots is None or plots >= len(labels):
        return np.arange(len(labels))
    return projection.stratified_sample(labels, plots, seed)


def shown_outcome(outcome, shown):
    """An algorithm's Outcome with only the cluster assignments of the `shown` points."""
    if outcome.value is None:
        return outcome
    assignments, seconds, scores = outcome.value
    return outcome._replace(value=(np.asarray(assignments)[shown], seconds, scores))


def check_args(args):
    """Every flag and path is checked here, before the slow work. Returns the algorithm
    names to run and the --label_names mapping ({} without one)."""
    bert_loading.check_file(args.input, 'features file')
    figures.figure_format(args.output)
    flags.check_output(args, args.output)
    flags.check_output(args, scores_path(args.output), 'the scores table of --output')
    return parse_algorithms(args.algorithms), labelnames.read(args.label_names)


def parse_algorithms(text):
    """'ward,DBSCAN' -> ['Ward', 'DBSCAN'] in the order given; UsageError for unknowns."""
    known = {name.lower(): name for name in clustering.ALGORITHMS}
    chosen = []
    for word in filter(None, (w.strip() for w in text.split(','))):
        if word.lower() not in known:
            raise UsageError('--algorithms: unknown algorithm %r; choose from %s'
                             % (word, ', '.join(clustering.ALGORITHMS)))
        if known[word.lower()] not in chosen:
            chosen.append(known[word.lower()])
    if not chosen:
        raise UsageError('--algorithms names no algorithm')
    return chosen


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--input', '-i', required=True,
                        help='features file, label<TAB>f1<TAB>f2...')
    parser.add_argument('--output', '-o', required=True,
                        help='picture to write (.png, .pdf or .svg); the scores go to the '
                             'same name with .tsv')
    parser.add_argument('--dim2', action='store_true',
                        help='cluster the 2-D t-SNE coordinates instead of the features')
    parser.add_argument('--samples', type=flags.integer('--samples', 0, note=' (0: all points)'),
                        default=None,
                        help='cluster at most N points: a stratified sample, each label '
                             'keeping its share, when the data hold more, else all of '
                             'them; 0: all points (default: all up to %d points, else a '
                             'sample of %d)' % (DEFAULT_SAMPLES, DEFAULT_SAMPLES))
    parser.add_argument('--plots', type=flags.integer('--plots', 0, note=' (0: no picture)'),
                        default=None,
                        help='points drawn in each panel of the picture: a stratified '
                             'sample of the clustered points when they are more; 0: no '
                             'picture, only the scores table (and no t-SNE unless --dim2) '
                             '(default: all clustered points)')
    parser.add_argument('--columns', type=flags.integer('--columns', 1), default=4,
                        help='panels a row of the picture, at most the number of panels '
                             '(default: 4)')
    flags.add_seed_argument(parser, 'seed of the sample, t-SNE and the algorithms (default: 0)')
    parser.add_argument('--timeout', type=flags.real('--timeout', 0, MAX_TIMEOUT,
                                                 note=' (0: no limit)'),
                        default=120.0,
                        help='seconds each algorithm may run before it is stopped and '
                             'marked timeout; 0: no limit (default: 120)')
    parser.add_argument('--algorithms', default=','.join(clustering.ALGORITHMS),
                        help='comma-separated subset of: %s (default: all)'
                             % ', '.join(clustering.ALGORITHMS))
    parser.add_argument('--clusters', type=flags.integer('--clusters', 2), default=None,
                        help='clusters to ask for, where the algorithm takes a number '
                             '(default: the number of labels)')
    labelnames.add_argument(parser)
    return parser.parse_args(argv)


if __name__ == '__main__':
    process.run(main)
