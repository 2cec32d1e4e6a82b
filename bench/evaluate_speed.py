#!/usr/bin/env python
"""Time and peak memory of evaluate_features.py on 50,000 x 512 features, against the
budgets of issue 5: within 1 minute and 4 GiB on 2 cores.

It writes seeded features (20 classes of Gaussian clusters that overlap, in the features
TSV format with six decimals), then runs evaluate_features.py on them as a whole process
(start-up, reading, retrieval scores, k-means, silhouette) and prints its wall time, its
peak resident memory and whether each budget is met.

    python bench/evaluate_speed.py [--points 50000] [--dim 512] [--classes 20]
"""

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

from bertlib.features import format_row
from bertlib.testing import ROOT

TIME_BUDGET = 60.0
MEMORY_BUDGET_MIB = 4096.0


def write_features(path, points, dim, classes, seed=0):
    rng = np.random.RandomState(seed)
    centres = rng.standard_normal((classes, dim)).astype(np.float32)
    labels = rng.randint(classes, size=points)
    with open(path, 'w', encoding='utf-8') as f:
        for start in range(0, points, 5000):
            chunk = labels[start:start + 5000]
            x = centres[chunk] + 2.0 * rng.standard_normal((len(chunk), dim)).astype(np.float32)
            for label, row in zip(chunk, x):
                f.write(format_row('class%02d' % label, row))


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--points', type=int, default=50000)
    parser.add_argument('--dim', type=int, default=512)
    parser.add_argument('--classes', type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'features.tsv')
        write_features(path, args.points, args.dim, args.classes)
        start = time.time()
        result = subprocess.run([sys.executable, str(ROOT / 'evaluate_features.py'), path],
                                capture_output=True, text=True)
        seconds = time.time() - start
    if result.returncode:
        sys.exit('evaluate_features.py failed:\n' + result.stderr)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    print(result.stdout, end='')
    print('evaluate_features.py on %d x %d features: %.1f s (budget %.0f s: %s), peak '
          'memory %.0f MiB (budget %.0f MiB: %s)'
          % (args.points, args.dim, seconds, TIME_BUDGET,
             'met' if seconds <= TIME_BUDGET else 'MISSED', peak, MEMORY_BUDGET_MIB,
             'met' if peak <= MEMORY_BUDGET_MIB else 'MISSED'))


if __name__ == '__main__':
    main()
