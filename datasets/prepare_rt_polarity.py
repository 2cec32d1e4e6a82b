#!/usr/bin/env python
"""Makes datasets/rt-polarity/04-{train,test}.txt from the public sentence polarity data.

Sentence polarity dataset v1.0 (Pang & Lee 2005): rt-polarity.neg and rt-polarity.pos,
5,331 Latin-1 sentences each, inside rt-polaritydata.tar.gz. The original BERT-DML runs
used a 90/10 split, kept here: each class file is cut into ten blocks of 533 lines in
file order and block --fold (default 4, counting from 0) is the test set, so the test
file holds 533 sentences per class and the training file the other 4,798 of each.
Lines are written as `label<TAB>text` in UTF-8, negatives (label 0) first, with the
trailing space of the original lines removed.

Examples:
    python datasets/prepare_rt_polarity.py --tarball ~/Downloads/rt-polaritydata.tar.gz
    python datasets/prepare_rt_polarity.py          # downloads the tarball first
"""

import argparse
import io
import logging
import os
import tarfile
import urllib.request

from bertlib import bert_loading, process
from bertlib.errors import UsageError
from bertlib.fileio import atomic_write

logger = logging.getLogger(__name__)

URL = 'https://www.cs.cornell.edu/people/pabo/movie-review-data/rt-polaritydata.tar.gz'
MEMBERS = (('0', 'rt-polaritydata/rt-polarity.neg'), ('1', 'rt-polaritydata/rt-polarity.pos'))
FOLDS = 10


def read_tarball(data):
    """Tarball bytes -> {label: [sentence, ...]} in file order."""
    sentences = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode='r:gz') as tar:
            for label, name in MEMBERS:
                member = tar.extractfile(name)
                if member is None:
                    raise KeyError(name)
                text = member.read().decode('latin-1')
                sentences[label] = [line.strip() for line in text.splitlines()
                                    if line.strip()]
    except (tarfile.TarError, OSError, EOFError) as e:
        raise UsageError('not the rt-polarity tarball: %s' % e)
    except KeyError as e:
        raise UsageError('the tarball has no %s: not rt-polaritydata.tar.gz' % e)
    return sentences


def split(sentences, fold):
    """{label: sentences} -> (train, test) lists of (label, text); block `fold` of each
    class's tenths is the test set."""
    train, test = [], []
    for label, lines in sentences.items():
        size = len(lines) // FOLDS
        start, stop = fold * size, (fold + 1) * size
        test += [(label, text) for text in lines[start:stop]]
        train += [(label, text) for text in lines[:start] + lines[stop:]]
    return train, test


def write(path, rows):
    with atomic_write(path) as f:
        for label, text in rows:
            f.write('%s\t%s\n' % (label, text))
    logger.info('wrote %s: %d lines', path, len(rows))


def main(argv=None):
    args = parse_args(argv)
    if not 0 <= args.fold < FOLDS:
        raise UsageError('--fold must be 0..%d, got %d' % (FOLDS - 1, args.fold))
    if args.tarball:
        bert_loading.check_file(args.tarball, 'tarball')
        with open(args.tarball, 'rb') as f:
            data = f.read()
        source = args.tarball
    else:
        logger.info('downloading %s', URL)
        try:
            with urllib.request.urlopen(URL, timeout=60) as response:
                data = response.read()
        except OSError as e:
            raise UsageError('cannot download %s (%s); download it by hand and pass '
                             '--tarball FILE' % (URL, e))
        source = URL
    try:
        sentences = read_tarball(data)
    except UsageError as e:
        raise UsageError('%s: %s' % (source, e))
    train, test = split(sentences, args.fold)
    os.makedirs(args.out, exist_ok=True)
    prefix = '%02d' % args.fold
    write(os.path.join(args.out, prefix + '-train.txt'), train)
    write(os.path.join(args.out, prefix + '-test.txt'), test)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--tarball', help='a local rt-polaritydata.tar.gz (default: '
                                          'download it from %s)' % URL)
    parser.add_argument('--out', default=os.path.join('datasets', 'rt-polarity'),
                        help='output folder (default: datasets/rt-polarity)')
    parser.add_argument('--fold', type=int, default=4,
                        help='which tenth of each class is the test set, 0..9; names '
                             'the files (default: 4, i.e. 04-train.txt, 04-test.txt)')
    return parser.parse_args(argv)


if __name__ == '__main__':
    process.run(main)
