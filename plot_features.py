#!/usr/bin/env python
"""A 2-D picture of sentence features: t-SNE (or PCA) of a features TSV, points coloured
by label, with a legend of the label names (or of their --label_names names), titled with
the method, the points drawn and their precision@1 and MAP@R. Japanese labels are drawn
with IPAexGothic.

The input is the `label<TAB>f1<TAB>f2...` file that the extraction scripts write. The
picture format (png, pdf or svg) follows the --output extension (default: result.png,
as in the original BERT-DML). One summary line goes to stdout, as the original printed
it: `# input: N, class: K, labels: {label: id, ...}` (ids in order of first appearance);
logs go to stderr.

Example:
    python plot_features.py --input features/mlit-dml-04-test.txt \\
        --output results/plot_mlit-dml-04-test.png
"""

import argparse
import logging
import os
import time

from bertlib import bert_loading, figures, flags, labelnames, metrics, process, projection
from bertlib.featurefile import read_features

logger = logging.getLogger(__name__)


def main(argv=None):
    args = parse_args(argv)
    names = check_args(args)
    start = time.time()
    labels, features = read_features(args.input)
    logger.info('%s: %d points x %d features, %d labels (%.1f s)', args.input,
                len(labels), features.shape[1], len(set(labels)), time.time() - start)
    print(summary_line(labels), flush=True)
    show = labelnames.display(names, labels, args.label_names)
    total = len(labels)
    labels, features = subsample(labels, features, args.samples, args.seed)
    # Scored on the points drawn: with --samples, a quick picture of a large file stays
    # quick (retrieval is quadratic: 20,000 x 512 features take 34 s on 2 cores).
    start = time.time()
    scores = metrics.retrieval_metrics(features, labels)
    logger.info('precision@1 %.3f, MAP@R %.3f of the %d points drawn (%.1f s)',
                scores['precision_at_1'], scores['map_at_r'], len(labels),
                time.time() - start)
    start = time.time()
    xy = projection.project_2d(features, method=args.method, perplexity=args.perplexity,
                               seed=args.seed, source=args.input)
    logger.info('%s of %d points: %.1f s', args.method, len(xy), time.time() - start)
    draw(xy, [show[label] for label in labels], picture_title(args, len(xy), total, scores), args)


def picture_title(args, drawn, total, scores):
    """Two lines: --title (the input file name by default), then the projection, the
    points drawn (of `total`), and precision@1 and MAP@R of their features."""
    points = ('%d points' % drawn if drawn == total
              else '%d of %d points (a stratified sample)' % (drawn, total))
    line = '%s of %s   %s' % (projection.METHOD_NAMES[args.method], points,
                              figures.scores_line(scores['precision_at_1'],
                                                  scores['map_at_r']))
    if drawn < total:
        line += ' of the sample'
    return '%s\n%s' % (args.title, line)


def summary_line(labels):
    """'# input: N, class: K, labels: {...}', the original's stdout line."""
    ids = {}
    for label in labels:
        ids.setdefault(label, len(ids))
    return '# input: %d, class: %d, labels: %s' % (len(labels), len(ids), ids)


def subsample(labels, features, samples, seed):
    """A stratified sample of at most `samples` points (all when None or when there are
    no more than that): (labels, (n, D) array)."""
    if samples is None or samples >= len(labels):
        return labels, features
    chosen = projection.stratified_sample(labels, samples, seed)
    logger.info('stratified sample of %d of %d points (--samples, --seed %d)',
                samples, len(labels), seed)
    return [labels[i] for i in chosen], features[chosen]


def draw(xy, labels, title, args):
    """Draws the (N, 2) points with their N (display) labels and writes the picture to
    --output."""
    from matplotlib.figure import Figure
    start = time.time()
    figures.use_japanese_font()
    many = len(set(labels)) > 10
    figure = Figure(figsize=(10 if many else 8, 7))
    figures.scatter(figure.subplots(), xy, labels, title)
    figures.save_figure(figure, args.output)
    logger.info('wrote %s (%.1f s)', args.output, time.time() - start)


def check_args(args):
    """Every flag and path is checked here, before the slow work. Returns the
    --label_names mapping ({} without one)."""
    bert_loading.check_file(args.input, 'features file')
    figures.figure_format(args.output)
    flags.check_output(args, args.output)
    if args.title is None:
        args.title = os.path.basename(args.input)
    return labelnames.read(args.label_names)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--input', '-i', required=True,
                        help='features file, label<TAB>f1<TAB>f2...')
    parser.add_argument('--output', '-o', default='result.png',
                        help='picture to write; .png, .pdf or .svg (default: result.png)')
    parser.add_argument('--method', choices=projection.METHODS, default='tsne',
                        help='projection: t-SNE (scikit-learn, on the first 50 principal '
                             'components) or PCA (default: tsne)')
    parser.add_argument('--perplexity', type=flags.real('--perplexity', 0, above=True),
                        default=30.0,
                        help='t-SNE perplexity; clipped to (N - 1) / 3 for small inputs '
                             '(default: 30)')
    parser.add_argument('--samples', type=flags.integer('--samples', 2), default=None,
                        help='plot at most N points: a stratified sample, each label '
                             'keeping its share, when there are more (default: all points)')
    flags.add_seed_argument(parser, 'seed of the sample and of t-SNE (default: 0)')
    parser.add_argument('--title', default=None,
                        help='first line of the picture title; the second names the '
                             'projection, the points and their precision@1 and MAP@R '
                             '(default: the input file name)')
    labelnames.add_argument(parser)
    return parser.parse_args(argv)


if __name__ == '__main__':
    process.run(main)
