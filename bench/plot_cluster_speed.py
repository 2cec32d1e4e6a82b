#!/usr/bin/env python
"""Speed of plot_features.py and cluster_features.py on MLIT-test-sized features, against
the budgets of issue 5: the plot within 2 minutes and the whole clustering grid within 10
minutes on 2 cores.

Each script runs as a whole process with its default flags (start-up, reading, t-SNE,
clustering, drawing, writing). It prints the plot time, the t-SNE and each algorithm's
time in the clustering run, the total, and whether each budget is met; an algorithm
stopped by cluster_features.py's own --timeout (120 s) fails the grid's budget.

Without --input it generates 5,197 x 512 features like mlit/04-test.txt: the same 16
Japanese labels with the same class sizes (1,494 down to 4), as seeded Gaussian clusters
that overlap the way fine-tuned features do (within-class spread twice the spread of the
class centres).

    python bench/plot_cluster_speed.py [--input features.tsv] [--keep DIR]
"""

import argparse
import csv
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
PLOT_BUDGET = 120.0
CLUSTER_BUDGET = 600.0

# The classes of mlit/04-test.txt and their sizes (5,197 sentences).
MLIT_TEST_CLASSES = (
    ('エンジン', 1494), ('動力伝達', 814), ('制動装置', 477), ('保安灯火', 363),
    ('車枠・車体', 323), ('その他', 300), ('かじ取り', 299), ('乗車装置', 290),
    ('燃料装置', 232), ('電気装置', 177), ('緩衝装置', 129), ('走行装置', 127),
    ('排ｶﾞｽ･騒音', 122), ('電動機(モーター)', 34), ('装置その他', 12), ('非装置', 4))


def generate(path, dims=512, spread=2.0, seed=0):
    """Writes MLIT-test-shaped synthetic features to `path`: (5197, dims) float, six
    decimals, as the extraction scripts write them."""
    rng = np.random.default_rng(seed)
    names = [name for name, _ in MLIT_TEST_CLASSES]
    sizes = [size for _, size in MLIT_TEST_CLASSES]
    classes = np.repeat(np.arange(len(names)), sizes)
    rng.shuffle(classes)
    centres = rng.normal(size=(len(names), dims))
    features = centres[classes] + spread * rng.normal(size=(len(classes), dims))
    with open(path, 'w', encoding='utf-8') as stream:
        for k, row in zip(classes, features):
            stream.write(names[k] + '\t' + '\t'.join('%.6f' % v for v in row) + '\n')


def run(script, input_path, output):
    """Runs a script with its default flags; returns (wall seconds, stderr)."""
    command = [sys.executable, str(ROOT / script), '--input', str(input_path),
               '--output', str(output)]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode:
        sys.exit('benchmark command failed:\n%s\n%s' % (' '.join(command), result.stderr))
    return seconds, result.stderr


def verdict(seconds, budget):
    outcome = 'met' if seconds <= budget else 'NOT MET'
    return '%7.1f s  (budget %3.0f s: %s)' % (seconds, budget, outcome)


def report(input_path, plot_seconds, cluster_seconds, cluster_log, scores_path):
    """Prints the figures and the budget verdicts."""
    with open(input_path, encoding='utf-8') as stream:
        first = stream.readline()
        points = 1 + sum(1 for line in stream if line.strip())
    print('input: %s (%d points x %d features)' % (input_path, points,
                                                   first.count('\t')))
    print('plot_features.py (t-SNE, whole process): %s' % verdict(plot_seconds, PLOT_BUDGET))
    print('cluster_features.py (whole process):     %s'
          % verdict(cluster_seconds, CLUSTER_BUDGET))
    tsne = re.search(r't-SNE of \d+ points: ([\d.]+) s', cluster_log)
    if tsne:
        print('  %-24s %7.1f s' % ('t-SNE (for the panels)', float(tsne.group(1))))
    with open(scores_path, encoding='utf-8') as stream:
        rows = list(csv.DictReader(stream, delimiter='\t'))
    for row in rows:
        print('  %-24s %7.1f s  %3s clusters  NMI %-6s  %s'
              % (row['algorithm'], float(row['seconds']), row['clusters'] or '-',
                 row['nmi'] or '-', row['status']))
    total = sum(float(row['seconds']) for row in rows)
    print('  %-24s %7.1f s' % ('algorithms in all', total))
    # A grid with a panel marked timeout or failed is not a finished grid.
    unfinished = [row['algorithm'] for row in rows if not row['status'].startswith('ok')]
    print('algorithms that did not finish: %s' % (', '.join(unfinished) or 'none'))
    met = (plot_seconds <= PLOT_BUDGET and cluster_seconds <= CLUSTER_BUDGET
           and not unfinished)
    print('budgets: %s' % ('all met' if met else 'NOT all met'))
    return met


def main(argv=None):
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix='plot-cluster-speed.') as scratch:
        folder = pathlib.Path(args.keep or scratch)
        folder.mkdir(parents=True, exist_ok=True)
        input_path = args.input
        if input_path is None:
            input_path = folder / 'mlit-test-sized-synthetic.tsv'
            generate(input_path)
        plot_seconds, _ = run('plot_features.py', input_path, folder / 'plot.png')
        cluster_seconds, log = run('cluster_features.py', input_path, folder / 'cluster.png')
        met = report(input_path, plot_seconds, cluster_seconds, log, folder / 'cluster.tsv')
        if args.keep:
            print('pictures and scores kept in %s' % os.path.abspath(folder))
    return 0 if met else 1


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--input', default=None,
                        help='features file to time (default: generate 5,197 x 512 '
                             'MLIT-shaped synthetic features)')
    parser.add_argument('--keep', default=None,
                        help='folder to keep the input, pictures and scores in')
    return parser.parse_args(argv)


if __name__ == '__main__':
    sys.exit(main())
