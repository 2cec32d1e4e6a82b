#!/usr/bin/env python
"""CPU speed under NumPy 2 against NumPy 1.26: the same commands, in the same run.

Runs extruct_bert_embed.py on rt-polarity/04-test.txt (1,066 sentences; the bundled
sample repeated where the data set is absent) and one epoch of train_dml.py on its first
--train_lines sentences, with each of two Pythons (`make bench-numpy2`: .venv/ and
.venv-numpy2/), alternating A B A B so that the shared machine's noise falls on both.
Prints each run, the median wall time of each, and the ratio NumPy 2 / NumPy 1 (the
issue's bound: within 5%).

    python bench/numpy2_speed.py --numpy1 .venv/bin/python --numpy2 .venv-numpy2/bin/python
"""

import argparse
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

from bertlib.testing import DATASETS, ROOT

DATASET = DATASETS / 'rt-polarity' / '04-test.txt'
MODEL = ROOT / 'BERT' / 'all-MiniLM-L6-v2'


def model_flags(model):
    return ['--vocab_file', str(model / 'vocab.txt'),
            '--bert_config_file', str(model / 'bert_config.json'),
            '--init_checkpoint', str(model / 'arrays_bert_model.ckpt.npz')]


def version(python):
    return subprocess.run(
        [python, '-c', 'import sys, numpy; print("Python %s, NumPy %s" % '
                       '(sys.version.split()[0], numpy.__version__))'],
        capture_output=True, text=True, check=True).stdout.strip()


def timed(command):
    start = time.perf_counter()
    result = subprocess.run(command, cwd=str(ROOT), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    if result.returncode:
        sys.exit('benchmark command failed:\n%s\n%s' % (' '.join(command), result.stderr))
    return time.perf_counter() - start


def data(folder, train_lines):
    """(extraction input, training file, evaluation file) in `folder`."""
    if DATASET.exists():
        lines = DATASET.read_text(encoding='utf-8').splitlines(keepends=True)
    else:
        lines = (ROOT / 'samples' / 'sentences.txt').read_text(encoding='utf-8')
        lines = lines.splitlines(keepends=True) * 30
    # Alternate the classes so that a short training file holds both.
    by_label = {}
    for line in lines:
        by_label.setdefault(line.split('\t')[0], []).append(line)
    mixed = [line for group in zip(*by_label.values()) for line in group]
    paths = [folder / name for name in ('input.txt', 'train.txt', 'eval.txt')]
    paths[0].write_text(''.join(lines), encoding='utf-8')
    paths[1].write_text(''.join(mixed[:train_lines]), encoding='utf-8')
    paths[2].write_text(''.join(mixed[train_lines:train_lines + train_lines // 4]),
                        encoding='utf-8')
    return paths, len(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--numpy1', required=True, help='Python of the NumPy 1.26 environment')
    parser.add_argument('--numpy2', required=True, help='Python of the NumPy 2 environment')
    parser.add_argument('--model', type=pathlib.Path, default=MODEL)
    parser.add_argument('--repeat', type=int, default=2)
    parser.add_argument('--train_lines', type=int, default=128)
    args = parser.parse_args()
    pythons = {'numpy1': args.numpy1, 'numpy2': args.numpy2}
    for name, python in pythons.items():
        print('%s: %s (%s)' % (name, python, version(python)), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        (input_path, train, evaluation), count = data(pathlib.Path(tmp), args.train_lines)
        tasks = {
            'extraction': lambda py: [py, 'extruct_bert_embed.py', '--input', str(input_path),
                                      '--output', os.path.join(tmp, 'out.tsv'), '--pooling',
                                      'mean', '--gpu', '-1'] + model_flags(args.model),
            'training': lambda py: [py, 'train_dml.py', '--train', str(train), '--eval',
                                    str(evaluation), '--out', os.path.join(tmp, 'dml'),
                                    '--epoch', '1', '--batchsize', '32', '--dim', '64',
                                    '--loss', 'supcon', '--noplot', '--gpu', '-1']
            + model_flags(args.model),
        }
        print('extraction: %d sentences; training: one epoch of %d sentences'
              % (count, args.train_lines), flush=True)
        for task, command in tasks.items():
            times = {name: [] for name in pythons}
            for _ in range(args.repeat):
                for name, python in pythons.items():
                    seconds = timed(command(python))
                    times[name].append(seconds)
                    print('  %s %s: %.2f s' % (task, name, seconds), flush=True)
            medians = {name: statistics.median(values) for name, values in times.items()}
            print('%s: NumPy 1 %.2f s, NumPy 2 %.2f s (medians of %d): NumPy 2 / NumPy 1 = '
                  '%.3f' % (task, medians['numpy1'], medians['numpy2'], args.repeat,
                            medians['numpy2'] / medians['numpy1']), flush=True)


if __name__ == '__main__':
    main()
