#!/usr/bin/env python
"""Deep metric learning on classes unseen in training, in English (CPU): Debian package
synopses (../shared/datasets/debian, see its README).

train_dml.py learns the 8 sections of debian/train.txt with disjoint_classes.RECIPE (the
README's: supcon, mean pooling, lr 1e-4, temperature 0.3) and the arguments after `--`;
then the features of the 8 other sections of unseen-validation.txt (unseen-test.txt with
--test) are scored on their own labels with `bertlib.evaluation.score_features`, the code
of evaluate_features.py: leave-one-out cosine precision@1 and MAP@R, KMeans NMI (k = 8,
seed 0; and, as one k-means start is noisy, the mean NMI of k-means seeds 0 to 9).
Two kinds of features:

  - dml:        extruct_bert_metrics.py from each seed's final.model (one row per
                --interpolate value: the weights blended with the pre-trained BERT);
  - pretrained: extruct_bert_embed.py, the same BERT without fine-tuning, --pooling mean.

--eval of the training is always unseen-validation.txt (it only reports), so a model is
the same whichever file is scored: a --test run into the --out of a validation run with
the same arguments reuses its models (their train_dml.py command is saved beside them)
and reads the test file once, without training again.

    python bench/debian_unseen.py --seeds 0                      # the README recipe
    python bench/debian_unseen.py --seeds 0 1 2 --out results/debian-unseen/gentle \\
        --epoch 1 --interpolate 1 0.5 -- --head none --learnrate 1e-5
    python bench/debian_unseen.py --test --seeds 0 1 2 --out results/debian-unseen/gentle \\
        --epoch 1 --interpolate 0.5 -- --head none --learnrate 1e-5

Prints a Markdown table (scores, wall times, sentences/s) and writes <out>/scores.json
(<out>/scores-test.json with --test). Wall times are of a shared 2-core machine: noisy.
"""

import argparse
import json
import pathlib
import sys
import time

import disjoint_classes as dc
from bertlib.testing import DATASETS, ROOT

DATA = DATASETS / 'debian'
OUT = ROOT / 'results' / 'debian-unseen' / 'recipe'
SCORES = ('precision_at_1', 'map_at_r', 'kmeans_nmi')
NMI_SEEDS = 10


def count_lines(path):
    with open(path, encoding='utf-8') as f:
        return sum(1 for line in f if line.strip())


def training_file(out, sections):
    """debian/train.txt, or with `sections` (a count) the file <out>/train-<count>.txt of
    its lines of the first `sections` sections in alphabetical order: how the unseen
    scores move with the number of sections trained on."""
    if not sections:
        return DATA / 'train.txt'
    rows = dc.read(DATA / 'train.txt')
    kept = sorted({label for label, _ in rows})[:sections]
    path = out / ('train-%d.txt' % sections)
    dc.write(path, [r for r in rows if r[0] in kept])
    return path


def train(seed, out, epoch, extra, train_path):
    """final.model of seed `seed` in folder `out`, trained on `train_path`
    (disjoint_classes.train_dml) unless `out` holds one made by the same command.
    Returns (its wall seconds or None when reused, the command's flags)."""
    flags = ['--seed', str(seed), '--noplot'] + extra
    command = {'model': str(dc.MODEL), 'epoch': epoch, 'flags': flags}
    if train_path != DATA / 'train.txt':
        command['train'] = str(train_path)
    record = out / 'bench-command.json'
    if (out / 'final.model').exists() and record.exists() and \
            json.loads(record.read_text()) == command:
        print('reusing %s' % out, file=sys.stderr)
        return None, flags
    seconds = dc.train_dml(train_path, DATA / 'unseen-validation.txt', out, epoch,
                           '', flags)
    record.write_text(json.dumps(command))
    return seconds, flags


def extract_timed(script, extra, source, path):
    start = time.time()
    dc.extract(script, extra, source, path)
    return time.time() - start


def score(path):
    """The scores of SCORES (k-means seed 0, as evaluate_features.py's default), and
    'nmi_mean', the mean KMeans NMI over k-means seeds 0 .. NMI_SEEDS - 1: one k-means
    start (scikit-learn's n_init=1) moves NMI by several hundredths from seed to seed
    on these 600 lines, more than the differences being measured."""
    from bertlib.evaluation import score_features
    vectors, labels = dc.read_features(path)
    runs = [score_features(labels, vectors, seed=seed) for seed in range(NMI_SEEDS)]
    result = {k: float(runs[0][k]) for k in SCORES}
    result['nmi_mean'] = float(sum(r['kmeans_nmi'] for r in runs) / NMI_SEEDS)
    return result


def dml_extract_flags(model_dir, alpha):
    flags = ['--model', str(model_dir / 'final.model'), '--label',
             str(model_dir / 'labels.bin')]
    if alpha != 1:
        flags += ['--interpolate', repr(alpha)]
    return flags


def mean_row(rows):
    return {k: sum(r[k] for r in rows) / len(rows) for k in SCORES + ('nmi_mean',)}


def main():
    global OUT
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--test', action='store_true',
                        help='score unseen-test.txt (read it once per reported recipe)')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0])
    parser.add_argument('--epoch', type=int, default=2)
    parser.add_argument('--interpolate', type=float, nargs='+', default=[1.0],
                        help="extruct_bert_metrics.py's --interpolate values to score "
                             '(1: the fine-tuned weights as they are)')
    parser.add_argument('--model_dir', default=str(dc.MODEL),
                        help='converted model folder (default: the demo model)')
    parser.add_argument('--out', default=str(OUT), help="folder of the run's files")
    parser.add_argument('--sections', type=int, default=0,
                        help='train on the first N sections of train.txt (alphabetical; '
                             'default: all 8)')
    parser.add_argument('train_dml_args', nargs='*')
    args = parser.parse_args()
    dc.MODEL, OUT = pathlib.Path(args.model_dir), pathlib.Path(args.out)
    if not DATA.is_dir():
        sys.exit('%s is absent: nothing to measure' % DATA)
    OUT.mkdir(parents=True, exist_ok=True)
    split = 'unseen-test' if args.test else 'unseen-validation'
    source = DATA / (split + '.txt')
    train_path = training_file(OUT, args.sections)
    n_train, n_eval = count_lines(train_path), count_lines(source)

    start = time.time()
    pretrained_path = OUT / ('pretrained-%s.tsv' % split)
    seconds = extract_timed('extruct_bert_embed.py', ['--pooling', 'mean'], source,
                            pretrained_path)
    rows = [{'features': 'pretrained', 'seed': None, 'interpolate': None,
             'extract_seconds': seconds, **score(pretrained_path)}]
    runs = []
    for seed in args.seeds:
        model_dir = OUT / ('seed-%d' % seed)
        train_seconds, flags = train(seed, model_dir, args.epoch, args.train_dml_args,
                                     train_path)
        runs.append({'seed': seed, 'train_seconds': train_seconds, 'train_dml_flags': flags})
        for alpha in args.interpolate:
            path = OUT / ('dml-seed-%d-interpolate-%g-%s.tsv' % (seed, alpha, split))
            seconds = extract_timed('extruct_bert_metrics.py',
                                    dml_extract_flags(model_dir, alpha), source, path)
            rows.append({'features': 'dml', 'seed': seed, 'interpolate': alpha,
                         'train_seconds': train_seconds, 'extract_seconds': seconds,
                         **score(path)})

    means = {alpha: mean_row([r for r in rows if r['interpolate'] == alpha])
             for alpha in args.interpolate}
    report = {'split': split, 'model': str(dc.MODEL), 'recipe': dc.RECIPE,
              'train': str(train_path), 'sections': args.sections or 8,
              'train_dml_args': args.train_dml_args, 'epoch': args.epoch,
              'train_lines': n_train, 'eval_lines': n_eval, 'runs': runs, 'rows': rows,
              'means': {repr(a): m for a, m in means.items()},
              'total_seconds': time.time() - start}
    name = 'scores-test.json' if args.test else 'scores.json'
    (OUT / name).write_text(json.dumps(report, indent=2))

    print('%s (%d lines, 8 sections unseen in training); train_dml.py %s %s'
          % (source.name, n_eval, ' '.join(dc.RECIPE), ' '.join(args.train_dml_args)))
    print('\n| features | seed | interpolate | P@1 | MAP@R | KMeans NMI | NMI, mean of %d '
          'k-means seeds | train s (sentences/s) | extract s (sentences/s) |\n'
          '|---|---|---|---|---|---|---|---|---|' % NMI_SEEDS)
    for r in rows:
        train_cell = '' if r.get('train_seconds') is None else '%.0f (%.1f)' % (
            r['train_seconds'], n_train * args.epoch / r['train_seconds'])
        if r['features'] == 'dml' and r.get('train_seconds') is None:
            train_cell = 'reused'
        print('| %s | %s | %s | %.3f | %.3f | %.3f | %.3f | %s | %.0f (%.1f) |' % (
            r['features'], '' if r['seed'] is None else r['seed'],
            '' if r['interpolate'] is None else '%g' % r['interpolate'],
            r['precision_at_1'], r['map_at_r'], r['kmeans_nmi'], r['nmi_mean'], train_cell,
            r['extract_seconds'], n_eval / r['extract_seconds']))
    if len(args.seeds) > 1:
        for alpha, m in means.items():
            print('| dml, mean of %d seeds | | %g | %.3f | %.3f | %.3f | %.3f | | |'
                  % (len(args.seeds), alpha, m['precision_at_1'], m['map_at_r'],
                     m['kmeans_nmi'], m['nmi_mean']))
    print('whole run %.0f s' % report['total_seconds'])


if __name__ == '__main__':
    main()
