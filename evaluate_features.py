#!/usr/bin/env python
"""Compares feature files side by side: one Markdown table row per file, on stdout.

Each file is a features TSV (`label<TAB>f1<TAB>f2...`, as the extruct_bert_*.py scripts
write). Columns: precision@1, MAP@R and R-precision of leave-one-out cosine retrieval
(the training log's acc1/acc2), NMI and ARI of k-means (k = number of labels) against the
labels, the labels' silhouette under cosine distance (on a seeded sample of
--silhouette_samples points when there are more) and, with --train_features, the accuracy
of a logistic-regression probe fitted on the training features of the same kind.
--grid draws one t-SNE panel per file in a row, titled with its name and precision@1.

Example:
    python evaluate_features.py features/rt-dml-04-test.txt \\
        features/rt-classified-04-test.txt features/rt-embed-04-test.txt \\
        --names DML Classified Pre-trained --grid results/comparison.png
"""

import argparse
import logging
import os

import numpy as np

from bertlib import cli, evaluation, featurefile, figures, projection
from bertlib.errors import UsageError
from bertlib.fileio import atomic_write

logger = logging.getLogger(__name__)


def main(argv=None):
    args = parse_args(argv)
    names = check_args(args)
    rows, panels = [], []
    for index, (name, path) in enumerate(zip(names, args.features)):
        logger.info('%s: reading %s', name, path)
        labels, features = featurefile.read_features(path)
        train = None
        if args.train_features:
            train = featurefile.read_features(args.train_features[index])
        try:
            scores = evaluation.score_features(
                labels, features, seed=args.seed,
                silhouette_samples=args.silhouette_samples, train=train)
        except UsageError as e:
            raise UsageError('%s: %s' % (path, e))
        rows.append((name, scores))
        logger.info('%s: %d points, precision@1 %.3f, MAP@R %.3f', name, scores['count'],
                    scores['precision_at_1'], scores['map_at_r'])
        if args.grid:
            panels.append((name, path, labels, features, scores))
    table = evaluation.markdown_table(rows)
    if args.output == '-':
        print(table, end='', flush=True)
    else:
        with atomic_write(args.output) as f:
            f.write(table)
    if args.grid:
        draw_grid(panels, args)


def draw_grid(panels, args):
    """One t-SNE panel per feature set in a row, as in the original BERT-DML's
    README."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    figures.use_japanese_font()
    figures.check_picture_size(5 * len(panels), 5, 100, args.grid)
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 5), squeeze=False)
    for ax, (name, path, labels, features, scores) in zip(axes[0], panels):
        chosen = np.arange(len(labels))
        if args.grid_samples and len(labels) > args.grid_samples:
            chosen = projection.stratified_sample(labels, args.grid_samples, args.seed)
        xy = projection.project_2d(features[chosen], method='tsne', seed=args.seed,
                                   source=path)
        figures.scatter(ax, xy, [labels[i] for i in chosen],
                           '%s (P@1 %.3f)' % (name, scores['precision_at_1']))
    figure.tight_layout()
    figures.save_figure(figure, args.grid, dpi=100)
    plt.close(figure)
    logger.info('comparison picture: %s', args.grid)


def check_args(args):
    """Checks every file and flag before the slow work; returns the row names."""
    for path in args.features + (args.train_features or []):
        cli.check_file(path, 'features file')
    names = args.names or [os.path.splitext(os.path.basename(p))[0] for p in args.features]
    if len(names) != len(args.features):
        raise UsageError('%d --names for %d feature files' % (len(names), len(args.features)))
    if args.train_features and len(args.train_features) != len(args.features):
        raise UsageError('%d --train_features for %d feature files: give one training '
                         'file per feature file, in the same order'
                         % (len(args.train_features), len(args.features)))
    for path, what in ((args.output, '--output'), (args.grid, '--grid')):
        cli.check_output(args, path, what)
    if args.grid:
        figures.figure_format(args.grid)
    if args.silhouette_samples < 2:
        raise UsageError('--silhouette_samples must be at least 2')
    return names


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('features', nargs='+', help='features TSV files to compare')
    parser.add_argument('--names', nargs='+',
                        help='row names, one per file (default: the file names)')
    parser.add_argument('--train_features', nargs='+',
                        help='training features for the logistic-regression probe, one '
                             'per feature file, in the same order')
    parser.add_argument('--output', '-o', default='-',
                        help="Markdown table; '-' (default) is standard output")
    parser.add_argument('--grid', help='also draw the t-SNE panels into this picture '
                                       '(.png, .pdf or .svg)')
    parser.add_argument('--grid_samples', type=int, default=3000,
                        help='points per t-SNE panel, a stratified sample (default: 3000; '
                             '0: all)')
    parser.add_argument('--silhouette_samples', type=int, default=10000,
                        help='points the silhouette is computed on (default: 10000)')
    parser.add_argument('--seed', type=int, default=0, help='seed of k-means, samples '
                                                           'and t-SNE (default: 0)')
    return parser.parse_args(argv)


if __name__ == '__main__':
    cli.run(main)
