#!/usr/bin/env python
"""Feature quality of train_dml.py's losses on rt-polarity, with the demo model, on the CPU.

Two stages, so that no choice is made on the test set:
  --stage validation  trains on 90% of 04-train.txt and scores the other 10% (every 10th
                      line; `--fold` picks which) after each epoch; the features of
                      those 10% are then extracted from final.model and scored like the
                      test ones below, the probe being fitted on the other 90%. Use it
                      to choose the loss and its settings.
  --stage test        trains on all of 04-train.txt with the chosen settings, extracts the
                      features of 04-test.txt and 04-train.txt from final.model with
                      extruct_bert_metrics.py and scores the test ones: precision@1,
                      MAP@R, R-precision, k-means NMI and the accuracy of a logistic
                      regression fitted on the training features (the probe).
Features are those extruct_bert_metrics.py writes by default (centred on the stored
training mean); `--no_centre` after `--` scores the raw ones. Each run is one call of
train_dml.py; its figures with one standard error (over the queries: p(1 - p) / n for
precision@1, the spread of the per-query AP for MAP@R), the training speed (sentences/s,
forward + backward + update) and the wall time go to results/dml-quality.jsonl, and a
Markdown table of every run so far is printed.

    python bench/dml_quality.py --stage validation --loss supcon --epoch 1 -- --pooling mean
    python bench/dml_quality.py --grid          # the ablation of issue 16 (GRID)
    python bench/dml_quality.py --stage validation --loss supcon --epoch 3 --name v-headnone \\
        --score_only -- --no_centre              # rescore a finished run, raw features
    python bench/dml_quality.py --paired v-recipe  # every validation run against v-recipe's
                              # setting on its fold, query by query, then pooled over folds
    python bench/dml_quality.py --probes   # the probe against simpler read-outs
Arguments after `--` go to train_dml.py as they are (`--no_centre`, `--max_seq_length`
to extruct_bert_metrics.py too).
"""

import argparse
import json
import subprocess
import sys
import time

from bertlib.testing import DATASETS, ROOT, model_flags

DATA = DATASETS / 'rt-polarity'
MODEL = ROOT / 'BERT' / 'all-MiniLM-L6-v2'
RESULTS = ROOT / 'results'


def split_extra(argv):
    """(the benchmark's own arguments, the arguments after `--` for the scripts)."""
    if '--' not in argv:
        return argv, []
    return argv[:argv.index('--')], argv[argv.index('--') + 1:]


def carve_validation(fold=9):
    """90/10 split of 04-train.txt: every 10th line (those with line index % 10 == fold)
    is held out for validation. Fold 9 is the split every figure was chosen on first."""
    folder = RESULTS / 'dml' / 'splits'
    folder.mkdir(parents=True, exist_ok=True)
    suffix = '' if fold == 9 else '-fold%d' % fold
    train, valid = (folder / ('train-90%s.txt' % suffix),
                    folder / ('valid-10%s.txt' % suffix))
    if not valid.exists():
        lines = (DATA / '04-train.txt').read_text(encoding='utf-8').splitlines(True)
        train.write_text(''.join(l for i, l in enumerate(lines) if i % 10 != fold))
        valid.write_text(''.join(l for i, l in enumerate(lines) if i % 10 == fold))
    return train, valid


def read_log(out):
    """The per-epoch records of the training run in folder `out`."""
    from bertlib.training import read_log
    return read_log(str(out / 'log.jsonl'))


# Flags of train_dml.py that extraction takes too.
_EXTRACTION_FLAGS = {'--max_seq_length': 1, '--no_centre': 0}


def features_path(out, source, extra):
    """Where extract() writes the features of `source`. Raw and centred features of one
    run are kept apart: rescoring one must not overwrite the other."""
    return out / ('features-%s%s.tsv' % (source.stem, '-raw' if '--no_centre' in extra
                                         else ''))


def split_of(stage, fold=9):
    """(training file, scored file) of a run of `stage`."""
    if stage == 'validation':
        return carve_validation(fold)
    return DATA / '04-train.txt', DATA / '04-test.txt'


def extract(out, source, extra, script='extruct_bert_metrics.py', model='final.model'):
    """Features of the file `source` from out/`model`: (labels, (N, D) float32)."""
    import numpy as np
    from bertlib.featurefile import read_features
    features = features_path(out, source, extra)
    command = [sys.executable, str(ROOT / script),
               '--input', str(source), '--output', str(features),
               '--model', str(out / model), '--label', str(out / 'labels.bin')]
    command += model_flags(MODEL)
    for flag, values in _EXTRACTION_FLAGS.items():
        if flag in extra:
            at = extra.index(flag)
            command += extra[at:at + 1 + values]
    subprocess.run(command, check=True)
    labels, vectors = read_features(str(features))
    return np.array(labels), vectors


def retrieval_with_errors(labels, vectors):
    """precision@1, MAP@R, R-precision and their standard errors over the queries."""
    from bertlib.metrics import retrieval_metrics
    scores = retrieval_metrics(vectors, labels, per_query=True)
    per_query = scores.pop('per_query')
    for name, values in per_query.items():
        scores[name + '_se'] = float(values.std(ddof=1) / len(values) ** 0.5)
    return scores


def score_run(out, evaluation, train, extra, script='extruct_bert_metrics.py',
              model='final.model'):
    """Extracts the features of `evaluation` and `train` with `script` from out/`model`;
    retrieval scores, k-means NMI and the probe's accuracy on the `evaluation` ones, the
    probe being fitted on the `train` ones."""
    from bertlib.evaluation import score_features
    labels, vectors = extract(out, evaluation, extra, script, model)
    train_labels, train_vectors = extract(out, train, extra, script, model)
    scores = retrieval_with_errors(labels, vectors)
    others = score_features(list(labels), vectors, train=(list(train_labels), train_vectors))
    scores.update({k: others[k] for k in ('kmeans_nmi', 'probe_accuracy')})
    return scores


# The recipe the README recommended before issue 16, and the ablation of issue 16 on the
# validation split (`--grid` runs those not yet in results/dml-quality.jsonl, in order:
# the most informative first).
RECIPE = ['--pooling', 'mean', '--learnrate', '1e-4', '--temperature', '0.3']
HEAD_FREE = RECIPE + ['--head', 'none']
GRID = [
    ('v-headnone', 'supcon', 3, HEAD_FREE),
    ('v-recipe', 'supcon', 3, RECIPE),
    ('v-recipe-ema', 'supcon', 3, RECIPE + ['--ema', '0.99']),
    ('v-headnone-random', 'supcon', 3, HEAD_FREE + ['--sampling', 'random']),
    ('v-recipe-supcon_ce', 'supcon_ce', 3, RECIPE + ['--supcon_weight', '0.9']),
    ('v-recipe-memory', 'supcon', 3, RECIPE + ['--memory_size', '1024']),
    ('v-recipe-random', 'supcon', 3, RECIPE + ['--sampling', 'random']),
    ('v-recipe-dim128', 'supcon', 3, RECIPE + ['--dim', '128']),
    ('v-recipe-dim768', 'supcon', 3, RECIPE + ['--dim', '768']),
]


# Flags that change what is written, not what is trained.
_OUTPUT_FLAGS = ('--no_centre', '--noplot')


def latest_records():
    """{run name: its last record} in results/dml-quality.jsonl, for the runs scored on
    centred features (a rescore replaces the first record); {} before the first run."""
    records = {}
    path = RESULTS / 'dml-quality.jsonl'
    for line in (path.read_text().splitlines() if path.exists() else []):
        record = json.loads(line)
        if ' (raw)' not in record['name']:
            records[record['name']] = record
    return records


def _setting(record):
    """What a validation run trained, whatever its fold: (loss, epochs, flags)."""
    return (record['loss'], record['epochs'],
            tuple(f for f in record['flags'] if f not in _OUTPUT_FLAGS))


def paired(base, extra):
    """Each validation run against the run `base`, query by query. One validation split
    is small (one standard error of MAP@R is about 0.009), but runs of one fold are scored
    on the same sentences, so the standard error of a difference over the queries is
    smaller than the two runs' own. Runs of the same setting on other folds are compared
    with base's setting on those folds, and each setting's differences are then pooled
    over every fold both ran on (the folds hold out different sentences). Prints Markdown
    tables; features are re-extracted (centred unless `--no_centre` is in `extra`)."""
    import numpy as np
    from bertlib.metrics import retrieval_metrics
    records = {name: r for name, r in latest_records().items()
               if r.get('stage') == 'validation'}
    if base not in records:
        raise SystemExit('error: no validation run named %r in %s'
                         % (base, RESULTS / 'dml-quality.jsonl'))
    base_setting = _setting(records[base])
    bases = {r.get('fold', 9): name for name, r in records.items()
             if _setting(r) == base_setting}
    per_query = {}
    for name, record in records.items():
        fold = record.get('fold', 9)
        if fold in bases:
            labels, vectors = extract(RESULTS / 'dml' / name, carve_validation(fold)[1], extra)
            per_query[name] = retrieval_metrics(vectors, labels, per_query=True)['per_query']
    keys = ('precision_at_1', 'map_at_r')

    def cells(own, reference):
        row = []
        for key in keys:
            difference = own[key] - reference[key]
            se = difference.std(ddof=1) / len(difference) ** 0.5
            row += ['%.3f' % own[key].mean(),
                    '' if own is reference else '%+.3f ± %.3f' % (difference.mean(), se)]
        return row

    print('| run | fold | P@1 | difference | MAP@R | difference | NMI | probe |')
    print('|---|---|---|---|---|---|---|---|')
    for name in per_query:
        record = records[name]
        reference = per_query[bases[record.get('fold', 9)]]
        print('| %s | %d | %s | %s | %s |' % (
            name, record.get('fold', 9), ' | '.join(cells(per_query[name], reference)),
            with_error(record, 'kmeans_nmi'), with_error(record, 'probe_accuracy')))
    print()
    print('Pooled over the folds each setting shares with %s:' % base)
    print()
    print('| setting | folds | P@1 | difference | MAP@R | difference | mean NMI | mean probe |')
    print('|---|---|---|---|---|---|---|---|')
    settings = {}
    for name in per_query:
        settings.setdefault(_setting(records[name]), []).append(name)
    for setting, names in settings.items():
        own = {k: np.concatenate([per_query[n][k] for n in names]) for k in keys}
        reference = own if setting == base_setting else {
            k: np.concatenate([per_query[bases[records[n].get('fold', 9)]][k] for n in names])
            for k in keys}
        means = []
        for key in ('kmeans_nmi', 'probe_accuracy'):
            values = [records[n][key] for n in names if key in records[n]]
            means.append('%.3f (%d)' % (np.mean(values), len(values)) if values else '')
        print('| %s --epoch %d %s | %s | %s | %s |' % (
            setting[0], setting[1], ' '.join(setting[2]),
            ', '.join(str(records[n].get('fold', 9)) for n in names),
            ' | '.join(cells(own, reference)), ' | '.join(means)))


def main():
    argv, extra = split_extra(sys.argv[1:])
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--stage', choices=('validation', 'test'))
    parser.add_argument('--loss')
    parser.add_argument('--epoch', type=int, default=1)
    parser.add_argument('--name', default=None, help='run name (default: stage-loss)')
    parser.add_argument('--score_only', action='store_true',
                        help='do not train: score the model a finished run left in '
                             'results/dml/NAME')
    parser.add_argument('--fold', type=int, default=9, choices=range(10),
                        help='validation: hold out the lines whose index %% 10 is FOLD '
                             '(default: 9, the split of the first ablation)')
    parser.add_argument('--paired', metavar='BASE',
                        help='compare every validation run with the run BASE, query by '
                             'query (the standard error of the difference), per fold '
                             "and pooled over the folds where BASE's setting also ran")
    parser.add_argument('--probes', action='store_true',
                        help="for every run whose features are saved: the probe's "
                             'accuracy next to a logistic regression on the unit-length '
                             'features as they are, the nearest training class mean and '
                             'the purity of a k-means clustering of the scored features')
    parser.add_argument('--grid', action='store_true',
                        help='run the validation settings of GRID not yet recorded')
    args = parser.parse_args(argv)
    if not (DATA / '04-train.txt').exists():
        print('skipped: %s is absent' % DATA)
        return
    if args.paired:
        paired(args.paired, extra)
        return
    if args.probes:
        compare_probes()
        return
    if args.grid:
        done = set(latest_records())
        for name, loss, epochs, flags in GRID:
            if name not in done:
                run('validation', loss, epochs, name, flags + extra)
        return
    if not (args.stage and args.loss):
        parser.error('--stage and --loss are needed without --grid')
    run(args.stage, args.loss, args.epoch, args.name or '%s-%s' % (args.stage, args.loss),
        extra, args.score_only, args.fold)


def run(stage, loss, epochs, name, extra, score_only=False, fold=9):
    """Trains (unless score_only) and scores one setting; appends its record."""
    out = RESULTS / 'dml' / name
    train, evaluation = split_of(stage, fold)
    training_flags = [f for f in extra if f != '--no_centre']  # an extraction flag
    command = [sys.executable, str(ROOT / 'train_dml.py'), '--train', str(train),
               '--eval', str(evaluation), '--out', str(out), '--loss', loss,
               '--epoch', str(epochs)] + model_flags(MODEL) + training_flags
    start = time.time()
    if not score_only:
        subprocess.run(command, check=True)
    minutes = (time.time() - start) / 60.0
    log = read_log(out)
    record = {'name': name + (' (raw)' if '--no_centre' in extra else ''), 'stage': stage,
              'fold': fold if stage == 'validation' else None,
              'loss': loss, 'epochs': epochs, 'flags': extra, 'minutes': round(minutes, 1),
              'train_minutes': round(sum(r['T/sec'] for r in log) / 60.0, 1),
              'sentences_per_sec': round(sum(r['T/sentences_per_sec'] for r in log)
                                         / len(log), 1),
              'per_epoch': [{'epoch': r['epoch'], 'precision_at_1': round(r['D/acc1'], 4),
                             'map_at_r': round(r['D/acc2'], 4)} for r in log]}
    scores = score_run(out, evaluation, train, extra)
    record.update({k: round(v, 4) for k, v in scores.items() if k != 'count'})
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / 'dml-quality.jsonl', 'a', encoding='utf-8') as f:
        f.write(json.dumps(record) + '\n')
    print_table(RESULTS / 'dml-quality.jsonl')


def compare_probes():
    """The probe (standardised features, then a logistic regression) against three simpler
    read-outs of the same centred features, for every recorded run whose training and
    scored features are saved. The training features of a fine-tuned model are nearly
    separated, so how the read-out is regularised matters."""
    import numpy as np
    from sklearn.cluster import KMeans
    from sklearn.linear_model import LogisticRegression
    from bertlib.evaluation import probe_accuracy
    from bertlib.featurefile import read_features
    print('| run | probe | logistic regression, unscaled | nearest class mean '
          '| k-means purity |')
    print('|---|---|---|---|---|')
    for name, record in sorted(latest_records().items()):
        out = RESULTS / 'dml' / name
        fold = 9 if record.get('fold') is None else record['fold']
        train, scored = [features_path(out, source, []) for source in
                         split_of(record['stage'], fold)]
        if not (train.exists() and scored.exists()):
            continue
        labels, x = read_features(str(scored))
        train_labels, train_x = read_features(str(train))
        labels, train_labels = np.array(labels), np.array(train_labels)
        unscaled = LogisticRegression(max_iter=1000, random_state=0).fit(train_x, train_labels)
        classes = np.unique(train_labels)
        means = np.stack([train_x[train_labels == c].mean(axis=0) for c in classes])
        distances = ((x[:, None, :] - means[None, :, :]) ** 2).sum(axis=2)
        nearest = classes[np.argmin(distances, axis=1)]
        found = KMeans(n_clusters=len(classes), n_init=1, random_state=0).fit_predict(
            x / np.linalg.norm(x, axis=1, keepdims=True))
        # purity: each cluster counted as its majority class
        agree = sum(max(np.sum((found == k) & (labels == c)) for c in classes)
                    for k in range(len(classes)))
        print('| %s | %.3f | %.3f | %.3f | %.3f |' % (
            name, probe_accuracy((list(train_labels), train_x), (list(labels), x)),
            unscaled.score(x, labels), np.mean(nearest == labels), agree / len(labels)))


def print_table(path):
    print('| run | stage | loss | flags | epochs | train min | sentences/s | P@1 | MAP@R '
          '| NMI | probe |')
    print('|---|---|---|---|---|---|---|---|---|---|---|')
    for line in path.read_text().splitlines():
        r = json.loads(line)
        print('| %s | %s | %s | %s | %d | %.1f | %.1f | %s | %s | %s | %s |'
              % (r['name'], r.get('stage', ''), r['loss'], ' '.join(r['flags']),
                 r['epochs'], r['train_minutes'], r['sentences_per_sec'],
                 with_error(r, 'precision_at_1'), with_error(r, 'map_at_r'),
                 with_error(r, 'kmeans_nmi'), with_error(r, 'probe_accuracy')))


def with_error(record, key):
    """'0.824 ± 0.012', '0.824' for records without an error, '' without the figure."""
    if key not in record:
        return ''
    if key + '_se' in record:
        return '%.3f ± %.3f' % (record[key], record[key + '_se'])
    return '%.3f' % record[key]


if __name__ == '__main__':
    main()
