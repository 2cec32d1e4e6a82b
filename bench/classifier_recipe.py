#!/usr/bin/env python
"""The demo's classifier recipe, chosen on a validation split of the bundled sample.

samples/rt-polarity/train.txt (600 sentences, 300 per label) is split, seeded and
stratified, into 480 sentences to train on and 120 to validate on (60 per label), written
to results/classifier-recipe/splits/. No setting is chosen on samples/rt-polarity/test.txt.

  --stage validation  trains train_classifier.py on the 480 with the flags after `--`,
                      scores the 120 after each epoch, then extracts the pooled features
                      of the 120 from final.model (the demo extracts from final.model: its
                      early-stopped models are chosen on the file they are scored on) and
                      scores them: precision@1 and MAP@R.
  --stage test        the same, trained on all 600 and scored on the 400 of test.txt:
                      run once, with the setting chosen on validation.
  --grid              the validation runs of GRID not yet in the record, in order.

Every run also scores the pre-trained features of the same file (extruct_bert_embed.py
--pooling mean, the demo's "Pre-trained" row), the bar the classifier's features must
clear. Each run's accuracy (final model), feature scores with one standard error (over
the queries) and wall time go to results/classifier-recipe.jsonl, and a Markdown table of
every run so far is printed.

    python bench/classifier_recipe.py --grid     # the settings tried (GRID)
    python bench/classifier_recipe.py --name v-lr2e-4-e3 --epoch 3 -- --learnrate 2e-4
    python bench/classifier_recipe.py --stage test --name t-recipe --epoch 2 \
        -- --learnrate 1e-4 --batchsize 16 --warmup 0.1   # the demo's recipe, on test.txt
    python bench/classifier_recipe.py --table
Arguments after `--` go to train_classifier.py as they are.
"""

import argparse
import json
import subprocess
import sys
import time

import numpy as np

from bertlib.testing import model_flags
from dml_quality import MODEL, RESULTS, ROOT, read_log, retrieval_with_errors, split_extra

SAMPLE = ROOT / 'samples' / 'rt-polarity'
FOLDER = RESULTS / 'classifier-recipe'
RECORD = RESULTS / 'classifier-recipe.jsonl'
N_VALID_PER_LABEL = 60

# The settings tried, most informative first: (name, epochs, train_classifier.py flags).
# At batch 64, 480 sentences are 8 steps an epoch: the default 5e-5 decayed to 0 over 16
# steps barely moves the model, so the grid raises the rate and the number of steps.
GRID = [
    ('v-lr1e-4-b16-e2', 2, ['--learnrate', '1e-4', '--batchsize', '16']),
    ('v-lr2e-4-e2', 2, ['--learnrate', '2e-4']),
    ('v-lr2e-4-b16-e2', 2, ['--learnrate', '2e-4', '--batchsize', '16']),
    ('v-default-e2', 2, []),
    ('v-lr1e-4-b16-w0.1-e2', 2, ['--learnrate', '1e-4', '--batchsize', '16',
                                 '--warmup', '0.1']),
    ('v-lr1e-4-b16-e3', 3, ['--learnrate', '1e-4', '--batchsize', '16']),
    ('v-lr5e-5-b16-e3', 3, ['--batchsize', '16']),
    ('v-lr1e-4-b16-w0.1-e3', 3, ['--learnrate', '1e-4', '--batchsize', '16',
                                 '--warmup', '0.1']),
    ('v-lr1e-4-b32-e3', 3, ['--learnrate', '1e-4', '--batchsize', '32']),
    ('v-lr5e-5-b8-w0.1-e2', 2, ['--batchsize', '8', '--warmup', '0.1']),
    ('v-lr1e-4-b8-w0.1-e2', 2, ['--learnrate', '1e-4', '--batchsize', '8', '--warmup', '0.1']),
]


def carve_validation():
    """(training file, validation file): a seeded stratified 480/120 split of the
    sample's training file, each keeping the file's line order."""
    folder = FOLDER / 'splits'
    train, valid = folder / 'train-480.txt', folder / 'valid-120.txt'
    if not valid.exists():
        folder.mkdir(parents=True, exist_ok=True)
        lines = (SAMPLE / 'train.txt').read_text(encoding='utf-8').splitlines(True)
        labels = np.array([line.split('\t', 1)[0] for line in lines])
        rng = np.random.RandomState(0)
        held = set()
        for label in sorted(set(labels)):
            rows = np.flatnonzero(labels == label)
            held.update(rng.choice(rows, N_VALID_PER_LABEL, replace=False).tolist())
        train.write_text(''.join(l for i, l in enumerate(lines) if i not in held),
                         encoding='utf-8')
        valid.write_text(''.join(l for i, l in enumerate(lines) if i in held),
                         encoding='utf-8')
    return train, valid


def features(command, output, again=True):
    """Runs an extractor writing `output` (not again=False when it exists); (labels,
    (N, D) float32) of that file."""
    from bertlib.featurefile import read_features
    if again or not output.exists():
        subprocess.run([sys.executable] + command + ['--output', str(output)]
                       + model_flags(MODEL), check=True)
    labels, vectors = read_features(str(output))
    return np.array(labels), vectors


def scores(labels, vectors):
    """precision@1 and MAP@R with their standard errors, rounded."""
    s = retrieval_with_errors(labels, vectors)
    return {k: round(s[k], 4) for k in ('precision_at_1', 'precision_at_1_se',
                                        'map_at_r', 'map_at_r_se')}


def run(stage, name, epochs, extra):
    train, scored = (carve_validation() if stage == 'validation'
                     else (SAMPLE / 'train.txt', SAMPLE / 'test.txt'))
    out = FOLDER / name
    start = time.time()
    subprocess.run([sys.executable, str(ROOT / 'train_classifier.py'),
                    '--train', str(train), '--eval', str(scored), '--out', str(out),
                    '--epoch', str(epochs), '--noplot'] + model_flags(MODEL) + extra,
                   check=True)
    minutes = (time.time() - start) / 60.0
    log = read_log(out)
    classified = scores(*features(
        [str(ROOT / 'extruct_bert_classified.py'), '--input', str(scored),
         '--model', str(out / 'final.model'), '--label', str(out / 'labels.bin')],
        out / ('features-%s.tsv' % scored.stem)))
    pretrained = scores(*features(
        [str(ROOT / 'extruct_bert_embed.py'), '--input', str(scored), '--pooling', 'mean'],
        FOLDER / ('pretrained-%s.tsv' % scored.stem), again=False))
    record = {'name': name, 'stage': stage, 'epochs': epochs, 'flags': extra,
              'train_minutes': round(minutes, 2),
              'accuracy': round(log[-1]['D/acc1'], 4),
              'per_epoch_accuracy': [round(r['D/acc1'], 4) for r in log],
              'sentences_per_sec': round(sum(r['T/sentences_per_sec'] for r in log)
                                         / len(log), 1),
              'features': classified, 'pretrained': pretrained,
              'load': open('/proc/loadavg').read().split()[0]}
    print(json.dumps(record, indent=2))
    with open(RECORD, 'a', encoding='utf-8') as f:
        f.write(json.dumps(record) + '\n')


def table():
    """Markdown table of every run in the record, in order."""
    rows = ['| run | stage | epochs | flags | accuracy (per epoch) | P@1 | MAP@R '
            '| pre-trained P@1 / MAP@R | training min (load) |',
            '|---|---|---|---|---|---|---|---|---|']
    for line in (RECORD.read_text().splitlines() if RECORD.exists() else []):
        r = json.loads(line)
        f, p = r['features'], r['pretrained']
        rows.append('| %s | %s | %d | `%s` | %.3f (%s) | %.3f ± %.3f | %.3f ± %.3f '
                    '| %.3f / %.3f | %.1f (%s) |' % (
                        r['name'], r['stage'], r['epochs'], ' '.join(r['flags']) or '-',
                        r['accuracy'], ', '.join('%.3f' % a for a in r['per_epoch_accuracy']),
                        f['precision_at_1'], f['precision_at_1_se'], f['map_at_r'],
                        f['map_at_r_se'], p['precision_at_1'], p['map_at_r'],
                        r['train_minutes'], r['load']))
    print('\n'.join(rows))


def main():
    argv, extra = split_extra(sys.argv[1:])
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--stage', choices=('validation', 'test'), default='validation')
    parser.add_argument('--name', default='run')
    parser.add_argument('--epoch', type=int, default=2)
    parser.add_argument('--grid', action='store_true')
    parser.add_argument('--table', action='store_true')
    args = parser.parse_args(argv)
    if args.grid:
        done = {json.loads(l)['name'] for l in
                (RECORD.read_text().splitlines() if RECORD.exists() else [])}
        for name, epochs, flags in GRID:
            if name not in done:
                run('validation', name, epochs, flags)
    elif not args.table:
        run(args.stage, args.name, args.epoch, extra)
    table()


if __name__ == '__main__':
    main()
