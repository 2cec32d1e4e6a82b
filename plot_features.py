#!/usr/bin/env python
"""A 2-D picture of sentence features: t-SNE (or PCA) of a features TSV, points coloured
by label, with a legend of the label names. Japanese labels are drawn with IPAexGothic.

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

from bertlib import cli, figures, projection
from bertlib.errors import UsageError
from bertlib.featurefile import read_features

logger = logging.getLogger(__name__)


def main(argv=None):
    args = parse_args(argv)
    check_args(args)
    start = time.time()
    labels, features = read_features(args.input)
    logger.info('%s: %d points x %d features, %d labels (%.1f s)', args.input,
                len(labels), features.shape[1], len(set(labels)), time.time() - start)
    print(summary_line(labels), flush=True)
    labels, features = subsample(labels, features, args.samples, args.seed)
    start = time.time()
    xy = projection.project_2d(features, method=args.method, perplexity=args.perplexity,
                               seed=args.seed, source=args.input)
    logger.info('%s of %d points: %.1f s', args.method, len(xy), time.time() - start)
    draw(xy, labels, args)


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


def draw(xy, labels, args):
    """Draws the (N, 2) points and writes the picture to --output."""
    from matplotlib.figure import Figure
    start = time.time()
    figures.use_japanese_font()
    many = len(set(labels)) > 10
    figure = Figure(figsize=(10 if many else 8, 7))
    figures.scatter(figure.subplots(), xy, labels, args.title)
    figures.save_figure(figure, args.output)
    logger.info('wrote %s (%.1f s)', args.output, time.time() - start)


def check_args(args):
    """Every flag and path is checked here, before the slow work."""
    cli.check_file(args.input, 'features file')
    figures.figure_format(args.output)
    cli.check_output(args, args.output)
    if args.perplexity <= 0:
        raise UsageError('--perplexity must be positive, got %g' % args.perplexity)
    if args.samples is not None and args.samples < 2:
        raise UsageError('--samples must be at least 2, got %d' % args.samples)
    if args.title is None:
        args.title = os.path.basename(args.input)


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
    parser.add_argument('--perplexity', type=float, default=30.0,
                        help='t-SNE perplexity; clipped to (N - 1) / 3 for small inputs '
                             '(default: 30)')
    parser.add_argument('--samples', type=int, default=None,
                        help='plot at most N points: a stratified sample, each label '
                             'keeping its share, when there are more (default: all points)')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the sample and of t-SNE (default: 0)')
    parser.add_argument('--title', default=None,
                        help='picture title (default: the input file name)')
    return parser.parse_args(argv)


if __name__ == '__main__':
    cli.run(main)
