#!/usr/bin/env python
"""Makes the demo's bundled held-out split, samples/rt-polarity/{train,test}.txt.

A seeded sample of --train_per_class lines of each label from the training file of the
90/10 rt-polarity split (datasets/prepare_rt_polarity.py writes it) and --test_per_class
of each label from its test file, kept in file order. A test sentence whose text also
occurs in the training sample is dropped before sampling, so the two are disjoint.

Example:
    python tools/sample_rt_polarity.py --train ../shared/datasets/rt-polarity/04-train.txt \\
        --test ../shared/datasets/rt-polarity/04-test.txt --out samples/rt-polarity
"""

import argparse
import os
import sys

import numpy as np

from bertlib import data, process
from bertlib.errors import UsageError
from bertlib.fileio import atomic_write


def sample(examples, per_class, seed, exclude=frozenset()):
    """Examples -> per_class of each label (seeded, in file order), none whose text is in
    `exclude`."""
    rng = np.random.default_rng(seed)
    examples = [e for e in examples if e.text not in exclude]
    chosen = []
    for label in sorted({e.label for e in examples}):
        members = [i for i, e in enumerate(examples) if e.label == label]
        if len(members) < per_class:
            raise UsageError('label %r has only %d lines, fewer than %d'
                             % (label, len(members), per_class))
        chosen.extend(rng.choice(members, size=per_class, replace=False).tolist())
    return [examples[i] for i in sorted(chosen)]


def write(path, examples):
    with atomic_write(path) as stream:
        for e in examples:
            stream.write('%s\t%s\n' % (e.label, e.text))


def main(argv=None):
    args = parse_args(argv)
    train = sample(data.iter_examples(args.train, require_label=True),
                   args.train_per_class, args.seed)
    seen = {e.text for e in train}
    test = sample(data.iter_examples(args.test, require_label=True),
                  args.test_per_class, args.seed, exclude=seen)
    os.makedirs(args.out, exist_ok=True)
    write(os.path.join(args.out, 'train.txt'), train)
    write(os.path.join(args.out, 'test.txt'), test)
    print('%d training and %d test lines in %s' % (len(train), len(test), args.out),
          file=sys.stderr)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--train', required=True, help='rt-polarity 04-train.txt')
    parser.add_argument('--test', required=True, help='rt-polarity 04-test.txt')
    parser.add_argument('--out', default='samples/rt-polarity',
                        help='folder for train.txt and test.txt (default: samples/rt-polarity)')
    parser.add_argument('--train_per_class', type=int, default=300,
                        help='training lines per label (default: 300)')
    parser.add_argument('--test_per_class', type=int, default=200,
                        help='test lines per label (default: 200)')
    parser.add_argument('--seed', type=int, default=0, help='sampling seed (default: 0)')
    return parser.parse_args(argv)


if __name__ == '__main__':
    process.run(main)
