#!/usr/bin/env python
"""Compares feature files side by side: one Markdown table row per file, on stdout.

Each file is a features TSV (`label<TAB>f1<TAB>f2...`, as the extruct_bert_*.py scripts
write). Columns: precision@1, MAP@R and R-precision of leave-one-out cosine retrieval
(the training log's acc1/acc2), NMI and ARI of k-means (k = number of labels) against the
labels, the labels' silhouette under cosine distance (on a seeded stratified sample of
--silhouette_samples points when there are more) and, with --train_features, the accuracy
of a logistic-regression probe fitted on the training features of the same kind.
--grid draws one t-SNE panel per file in a row, titled with its name, precision@1 and
MAP@R, under a title naming the projection and the points drawn; --label_names shows
names instead of the labels in its legends.

Example:
    python evaluate_features.py features/rt-dml-04-test.txt \\
        features/rt-classified-04-test.txt features/rt-embed-04-test.txt \\
        --names DML Classified Pre-trained --grid results/comparison.png
"""

import argparse
import logging
import os

import numpy as np

from bertlib import (bert_loading, evaluation, featurefile, figures, flags, labelnames, process,
                     projection)
from bertlib.errors import UsageError
from bertlib.fileio import atomic_write

logger = logging.getLogger(__name__)


def main(argv=None):
    args = parse_args(argv)
    names, label_names = check_args(args)
    rows, panels = [], []
    for index, (name, path) in enumerate(zip(names, args.features)):
        logger.info('%s: reading %s', name, path)
        labels, features = featurefile.read_features(path)
        show = labelnames.display(label_names, labels, args.label_names)
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
            panels.append((name, path, labels, show, features, scores))
    table = evaluation.markdown_table(rows)
    if args.output == '-':
        print(table, end='', flush=True)
    else:
        with atomic_write(args.output) as f:
            f.write(table)
    if args.grid:
        draw_grid(panels, args)


def draw_grid(panels, args):
    """One t-SNE panel per feature set in a row, as in the original BERT-DML's README,
    each titled with its name, precision@1 and MAP@R (of all its points), under one title.

    panels: (name, path, N labels, {label: shown name}, (N, D) features, scores) per
    feature set."""
    from matplotlib.figure import Figure
    figures.use_japanese_font()
    figures.check_picture_size(5 * len(panels), 5.6, 100, args.grid)
    figure = Figure(figsize=(5 * len(panels), 5.6), layout='constrained')
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    drawn = []
    for ax, (name, path, labels, show, features, scores) in zip(axes, panels):
        chosen = np.arange(len(labels))
        if args.grid_samples and len(labels) > args.grid_samples:
            chosen = projection.stratified_sample(labels, args.grid_samples, args.seed)
        xy = projection.project_2d(features[chosen], method='tsne', seed=args.seed,
                                   source=path)
        figures.scatter(ax, xy, [show[labels[i]] for i in chosen], '%s\n%s' % (
            name, figures.scores_line(scores['precision_at_1'], scores['map_at_r'])))
        drawn.append((len(chosen), len(labels)))
    figure.suptitle(grid_title(drawn), fontsize='x-large')
    figures.save_figure(figure, args.grid, dpi=100)
    logger.info('comparison picture: %s', args.grid)


def grid_title(drawn):
    """The comparison picture's title: the method and the points each panel draws.
    drawn: (points drawn, points of the file) per panel."""
    counts = sorted(set(drawn))
    if len(counts) == 1:
        shown, total = counts[0]
        points = ('%d points each' % total if shown == total else
                  'a stratified sample of %d of the %d points each' % (shown, total))
    else:
        points = ', '.join(str(shown) for shown, _ in drawn) + ' points'
    return ('t-SNE of each feature set: %s, coloured by label\nprecision@1 and MAP@R: '
            "leave-one-out cosine retrieval over all of a file's points" % points)


def check_args(args):
    """Checks every file and flag before the slow work; returns the row names and the
    --label_names mapping ({} without one)."""
    for path in args.features + (args.train_features or []):
        bert_loading.check_file(path, 'features file')
    names = args.names or [os.path.splitext(os.path.basename(p))[0] for p in args.features]
    if len(names) != len(args.features):
        raise UsageError('%d --names for %d feature files' % (len(names), len(args.features)))
    if args.train_features and len(args.train_features) != len(args.features):
        raise UsageError('%d --train_features for %d feature files: give one training '
                         'file per feature file, in the same order'
                         % (len(args.train_features), len(args.features)))
    for path, what in ((args.output, '--output'), (args.grid, '--grid')):
        flags.check_output(args, path, what)
    if args.grid:
        figures.figure_format(args.grid)
    return names, labelnames.read(args.label_names)


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
    parser.add_argument('--grid_samples', default=3000,
                        type=flags.integer('--grid_samples', 0, note=' (0: all)'),
                        help='points per t-SNE panel, a stratified sample (default: 3000; '
                             '0: all)')
    parser.add_argument('--silhouette_samples', type=flags.integer('--silhouette_samples', 3),
                        default=10000,
                        help='points the silhouette is computed on (default: 10000)')
    flags.add_seed_argument(parser, 'seed of k-means, samples and t-SNE (default: 0)')
    labelnames.add_argument(parser)
    return parser.parse_args(argv)


if __name__ == '__main__':
    process.run(main)
