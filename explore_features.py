#!/usr/bin/env python
"""An interactive page of sentence features, and a TensorBoard Projector export.

Reads a features TSV (`label<TAB>f1<TAB>f2...`, as the extraction scripts write it) and
the text file it was extracted from (same order; empty lines are skipped as the
extractors skip them), and writes one self-contained HTML page that works offline:

  - the 2-D t-SNE or PCA map of plot_features.py, coloured by label; the label table
    shows or hides each label and lists precision@1 per label, worst first;
  - hovering a point shows its label and sentence; clicking it lists its k nearest
    neighbours in the full feature space (cosine, as the retrieval metrics), each with
    its similarity, label and whether the label matches; a search box finds sentences;
  - precision@1 and MAP@R of the whole file; the points whose nearest neighbour has
    another label, and each point's precision@k, as colours, filters and a list of the
    worst points with their wrong neighbours;
  - box or lasso selection, listed and downloadable as TSV (made in the page).

Two or three features files of the same sentences (--input A B C) make one page that
compares them: each set's map and figures, and a sentence's neighbours under each side
by side.

With --projector DIR it also writes DIR/tensors.tsv, DIR/metadata.tsv (label and
sentence) and DIR/projector_config.pbtxt: `tensorboard --logdir DIR` then shows the
vectors in its Projector tab. Logs go to stderr.

Example:
    python explore_features.py --input features/rt-dml-test.txt \\
        --text samples/rt-polarity/test.txt --output results/explore_rt-dml-test.html \\
        --projector results/projector/rt-dml-test
"""

import argparse
import logging
import os
import time

from bertlib import (bert_loading, explorer, flags, labelnames, metrics, process, progress,
                     projection)
from bertlib.errors import UsageError
from bertlib.featurefile import read_features

logger = logging.getLogger(__name__)

# Side by side neighbour lists fit the page up to three sets.
MAX_SETS = 3


def main(argv=None):
    args = parse_args(argv)
    names = check_args(args)
    start = time.time()
    feature_sets, labels, texts = [], None, None
    for path in args.input:
        set_labels, features = read_features(path)
        # Every set is checked against the text file, so all hold the same sentences.
        set_texts = explorer.read_texts(args.text, path, set_labels)
        if labels is None:
            labels, texts = set_labels, set_texts
        feature_sets.append(features)
    for path, features in zip(args.input, feature_sets):
        logger.info('%s: %d points x %d features, %d labels, sentences from %s', path,
                    len(labels), features.shape[1], len(set(labels)), args.text)
    # From here on a label is what the page shows (--label_names): a one-to-one renaming
    # leaves the neighbours and scores as they are.
    show = labelnames.display(names, labels, args.label_names)
    labels = [show[label] for label in labels]
    if len(labels) < 2:
        raise UsageError('%s: a map and neighbours need at least 2 points, got %d'
                         % (args.input[0], len(labels)))
    if args.projector:
        explorer.write_projector(args.projector, args.title, labels, feature_sets[0], texts)
        logger.info('wrote the projector files to %s: tensorboard --logdir %s',
                    args.projector, args.projector)
    if args.output:
        write_page(args, labels, feature_sets, texts)
    logger.info('done in %.1f s', time.time() - start)


def write_page(args, labels, feature_sets, texts):
    sets = []
    for path, features in zip(args.input, feature_sets):
        name = set_name(path)
        start = time.time()
        what = '%s: nearest neighbours of %d points' % (name, len(labels))
        with progress.still_running(what):
            scores, neighbours, similarities = metrics.retrieval_and_neighbours(
                features, labels, args.neighbours)
        summary = explorer.summarise(labels, scores, neighbours)
        logger.info('%s: %d nearest neighbours of %d points, precision@1 %s, MAP@R %s '
                    '(%.1f s)', name, neighbours.shape[1], len(labels),
                    _fixed(summary['precision_at_1']), _fixed(summary['map_at_r']),
                    time.time() - start)
        start = time.time()
        what = '%s: %s of %d points' % (name, projection.METHOD_NAMES[args.method], len(labels))
        with progress.still_running(what):
            xy = projection.project_2d(features, method=args.method,
                                       perplexity=args.perplexity, seed=args.seed, source=path)
        logger.info('%s: %.1f s', what, time.time() - start)
        sets.append({'name': name, 'method': args.method, 'xy': xy, 'neighbours': neighbours,
                     'similarities': similarities, 'summary': summary})
    page = explorer.page_data(labels, texts, sets, args.title)
    size = explorer.write_page(args.output, page)
    logger.info('wrote %s (%.1f MB)', args.output, size / 1e6)


def set_name(path):
    """A feature set's name on the page: its file name without the extension."""
    return os.path.splitext(os.path.basename(path))[0]


def _fixed(value):
    return 'n/a' if value is None else '%.3f' % value


def check_args(args):
    """Every flag and path is checked here, before the slow work. Returns the
    --label_names mapping ({} without one)."""
    for path in args.input:
        bert_loading.check_file(path, 'features file')
    bert_loading.check_file(args.text, 'text file')
    if len(args.input) > MAX_SETS:
        raise UsageError('--input: at most %d feature sets in one page, got %d'
                         % (MAX_SETS, len(args.input)))
    names = [set_name(path) for path in args.input]
    if len(set(names)) < len(names):
        raise UsageError('--input: two feature files have the same name %r; the page names '
                         'each set by its file name' % next(
                             n for n in names if names.count(n) > 1))
    if args.projector and len(args.input) > 1:
        raise UsageError('--projector takes one --input, got %d: write one folder per '
                         'feature set' % len(args.input))
    if not args.output and not args.projector:
        raise UsageError('nothing to write: give --output PAGE.html, --projector DIR or both')
    if args.output:
        if os.path.splitext(args.output)[1].lower() not in ('.html', '.htm'):
            raise UsageError('--output %s: the page must be an .html file' % args.output)
        flags.check_output(args, args.output)
    if args.projector:
        explorer.check_projector_dir(args.projector)
        if os.path.isdir(args.projector):
            for name in explorer.PROJECTOR_FILES:
                flags.check_output(args, os.path.join(args.projector, name), '--projector',
                                 follow_symlinks=False)
    if args.title is None:
        args.title = ' / '.join(names)
    return labelnames.read(args.label_names)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--input', '-i', required=True, nargs='+', metavar='FEATURES',
                        help='features file, label<TAB>f1<TAB>f2...; two or three files of '
                             'the same sentences (for example DML, classifier and '
                             'pre-trained features) make one page that compares them')
    parser.add_argument('--text', '-t', required=True,
                        help='the text file the features were extracted from '
                             '(label<TAB>text or bare text, one sentence a line)')
    parser.add_argument('--output', '-o', default=None,
                        help='the HTML page to write (one file, plotly.js embedded, about '
                             '5 MB plus the data)')
    parser.add_argument('--projector', default=None, metavar='DIR',
                        help='also write a TensorBoard Projector folder (vectors, label and '
                             'sentence metadata, config) for `tensorboard --logdir DIR`')
    parser.add_argument('--neighbours', '-k', type=flags.integer('--neighbours', 1), default=10,
                        help='nearest neighbours listed for a clicked point (default: 10)')
    parser.add_argument('--method', choices=projection.METHODS, default='tsne',
                        help='map: t-SNE (scikit-learn, on the first 50 principal '
                             'components) or PCA, as plot_features.py (default: tsne)')
    parser.add_argument('--perplexity', type=flags.real('--perplexity', 0, above=True),
                        default=30.0,
                        help='t-SNE perplexity; clipped to (N - 1) / 3 for small inputs '
                             '(default: 30)')
    flags.add_seed_argument(parser, 'seed of t-SNE (default: 0)')
    parser.add_argument('--title', default=None,
                        help='page title and projector tensor name (default: the input '
                             'file names without extension)')
    labelnames.add_argument(parser)
    return parser.parse_args(argv)


if __name__ == '__main__':
    process.run(main)
