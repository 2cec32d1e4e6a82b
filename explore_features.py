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
  - precision@1 and MAP@R of the whole file.

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

from bertlib import cli, explorer, metrics, projection
from bertlib.errors import UsageError
from bertlib.featurefile import read_features

logger = logging.getLogger(__name__)


def main(argv=None):
    args = parse_args(argv)
    check_args(args)
    start = time.time()
    labels, features = read_features(args.input)
    texts = explorer.read_texts(args.text, args.input, labels)
    logger.info('%s: %d points x %d features, %d labels, sentences from %s',
                args.input, len(labels), features.shape[1], len(set(labels)), args.text)
    if len(labels) < 2:
        raise UsageError('%s: a map and neighbours need at least 2 points, got %d'
                         % (args.input, len(labels)))
    if args.projector:
        explorer.write_projector(args.projector, args.title, labels, features, texts)
        logger.info('wrote the projector files to %s: tensorboard --logdir %s',
                    args.projector, args.projector)
    if args.output:
        write_page(args, labels, features, texts)
    logger.info('done in %.1f s', time.time() - start)


def write_page(args, labels, features, texts):
    start = time.time()
    scores, neighbours, similarities = metrics.retrieval_and_neighbours(
        features, labels, args.neighbours)
    summary = explorer.summarise(labels, scores, neighbours)
    logger.info('%d nearest neighbours of %d points, precision@1 %s, MAP@R %s (%.1f s)',
                neighbours.shape[1], len(labels), _fixed(summary['precision_at_1']),
                _fixed(summary['map_at_r']), time.time() - start)
    start = time.time()
    xy = projection.project_2d(features, method=args.method, perplexity=args.perplexity,
                               seed=args.seed)
    logger.info('%s of %d points: %.1f s', args.method, len(xy), time.time() - start)
    page = explorer.page_data(labels, texts, xy, neighbours, similarities, summary,
                              args.title, args.method)
    size = explorer.write_page(args.output, page)
    logger.info('wrote %s (%.1f MB)', args.output, size / 1e6)


def _fixed(value):
    return 'n/a' if value is None else '%.3f' % value


def check_args(args):
    """Every flag and path is checked here, before the slow work."""
    cli.check_file(args.input, 'features file')
    cli.check_file(args.text, 'text file')
    if not args.output and not args.projector:
        raise UsageError('nothing to write: give --output PAGE.html, --projector DIR or both')
    if args.output:
        if os.path.splitext(args.output)[1].lower() not in ('.html', '.htm'):
            raise UsageError('--output %s: the page must be an .html file' % args.output)
        cli.check_output(args, args.output)
    if args.projector:
        explorer.check_projector_dir(args.projector)
        if os.path.isdir(args.projector):
            for name in explorer.PROJECTOR_FILES:
                cli.check_output(args, os.path.join(args.projector, name), '--projector',
                                 follow_symlinks=False)
    if args.neighbours < 1:
        raise UsageError('--neighbours must be at least 1, got %d' % args.neighbours)
    if args.perplexity <= 0:
        raise UsageError('--perplexity must be positive, got %g' % args.perplexity)
    if args.title is None:
        args.title = os.path.splitext(os.path.basename(args.input))[0]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--input', '-i', required=True,
                        help='features file, label<TAB>f1<TAB>f2...')
    parser.add_argument('--text', '-t', required=True,
                        help='the text file the features were extracted from '
                             '(label<TAB>text or bare text, one sentence a line)')
    parser.add_argument('--output', '-o', default=None,
                        help='the HTML page to write (one file, plotly.js embedded, about '
                             '5 MB plus the data)')
    parser.add_argument('--projector', default=None, metavar='DIR',
                        help='also write a TensorBoard Projector folder (vectors, label and '
                             'sentence metadata, config) for `tensorboard --logdir DIR`')
    parser.add_argument('--neighbours', '-k', type=int, default=10,
                        help='nearest neighbours listed for a clicked point (default: 10)')
    parser.add_argument('--method', choices=projection.METHODS, default='tsne',
                        help='map: t-SNE (scikit-learn, on the first 50 principal '
                             'components) or PCA, as plot_features.py (default: tsne)')
    parser.add_argument('--perplexity', type=float, default=30.0,
                        help='t-SNE perplexity; clipped to (N - 1) / 3 for small inputs '
                             '(default: 30)')
    parser.add_argument('--seed', type=int, default=0, help='seed of t-SNE (default: 0)')
    parser.add_argument('--title', default=None,
                        help='page title and projector tensor name (default: the input '
                             'file name without extension)')
    return parser.parse_args(argv)


if __name__ == '__main__':
    cli.run(main)
