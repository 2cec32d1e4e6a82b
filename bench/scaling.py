#!/usr/bin/env python
"""Data-parallel scaling on the CPU, and flat memory of sharded extraction (needs `make mpi`).

Training: train_dml.py on the same data, global batch and seed, run as
  - 1 process x 2 threads (OMP_NUM_THREADS=2), and
  - 2 processes x 1 thread (mpiexec -n 2, OMP_NUM_THREADS=1, --communicator naive);
prints the training sentences/s of each (T/sentences_per_sec of log.jsonl: the epoch's
training loop only, without start-up or evaluation) and checks that both report the same
T/loss. --model picks the BERT: 'demo' (BERT/all-MiniLM-L6-v2, `make model`), 'small'
(random, 4 layers, hidden 256) or 'tiny' (random, 2 layers, hidden 64), or a folder with
vocab.txt, bert_config.json and arrays_bert_model.ckpt.npz. The training sentences are
generated from the model's vocabulary, --classes labels.

Memory: extruct_bert_embed.py with a tiny random BERT on --short and --long generated
lines under mpiexec -n --ranks; prints the peak RSS of the largest process of each run and
their ratio, which must stay within 1.2 (exit status 1 otherwise).

    python bench/scaling.py                          # both, default sizes
    python bench/scaling.py --what training --model small --sentences 1024
    python bench/scaling.py --what memory --short 10000 --long 1000000
"""

import argparse
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from bertlib.testing import ROOT, model_flags, write_random_bert

DEMO = ROOT / 'BERT' / 'all-MiniLM-L6-v2'
SHAPES = {'small': dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=1024),
          'tiny': dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=128)}
MEMORY_LIMIT = 1.2

# Runs a command and prints the peak RSS (KiB) of its largest process (mpiexec's ranks
# are waited for by mpiexec, so they count as descendants).
PEAK_WRAPPER = ('import resource, subprocess, sys; '
                'r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL); '
                'print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); '
                'sys.exit(r.returncode)')


def mpiexec():
    beside = pathlib.Path(sys.executable).parent / 'mpiexec'
    found = str(beside) if beside.exists() else shutil.which('mpiexec')
    if found is None:
        sys.exit('mpiexec not found: run `make mpi`')
    version = subprocess.run([found, '--version'], capture_output=True, text=True)
    # Open MPI places one process per core unless told otherwise.
    extra = ['--oversubscribe'] if 'Open MPI' in version.stdout + version.stderr else []
    return [found] + extra


def environment(threads):
    env = dict(os.environ)
    for name in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS',
                 'NUMBA_NUM_THREADS'):
        env[name] = str(threads)
    if os.geteuid() == 0:
        env.update(OMPI_ALLOW_RUN_AS_ROOT='1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM='1')
    return env


def run(command, env, what):
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=str(ROOT))
    if result.returncode:
        sys.exit('%s failed:\n%s\n%s' % (what, ' '.join(command), result.stderr[-4000:]))
    return result


def model_folder(name, tmp):
    if name == 'demo':
        if not (DEMO / 'arrays_bert_model.ckpt.npz').exists():
            sys.exit('the demo model is not converted: run `make model`, or pass --model small')
        return DEMO
    if name in SHAPES:
        return write_random_bert(tmp / name, ['w%d' % i for i in range(2000)],
                                 shape=SHAPES[name])
    folder = pathlib.Path(name)
    if not (folder / 'arrays_bert_model.ckpt.npz').exists():
        sys.exit('--model %s: no arrays_bert_model.ckpt.npz there' % name)
    return folder


def write_sentences(path, vocab_file, count, classes, seed):
    """`count` lines 'c<k><TAB>words': 5 to 30 plain words of the vocabulary, each class
    leaning on its own slice of the words so that there is something to learn."""
    words = [w for w in pathlib.Path(vocab_file).read_text(encoding='utf-8').split('\n')
             if re.fullmatch(r'[a-z]{2,}|w\d+', w)]
    rng = np.random.RandomState(seed)
    with open(path, 'w', encoding='utf-8') as f:
        for i in range(count):
            label = i % classes
            own = words[label::classes]
            n = rng.randint(5, 31)
            chosen = [own[j] if rng.rand() < 0.5 else words[k]
                      for j, k in zip(rng.randint(0, len(own), n), rng.randint(0, len(words), n))]
            f.write('c%d\t%s\n' % (label, ' '.join(chosen)))


def training(args, tmp):
    folder = model_folder(args.model, tmp)
    train, evaluation = tmp / 'train.txt', tmp / 'eval.txt'
    write_sentences(train, folder / 'vocab.txt', args.sentences, args.classes, 1)
    write_sentences(evaluation, folder / 'vocab.txt', 64, args.classes, 2)
    common = (['--train', str(train), '--eval', str(evaluation), '--noplot',
               '--batchsize', str(args.batchsize), '--epoch', str(args.epochs),
               '--loss', args.loss, '--dim', '64', '--max_seq_length', '64']
              + model_flags(folder))
    script = [sys.executable, str(ROOT / 'train_dml.py')]
    runs = {
        '1 process x 2 threads': (script + common + ['--out', str(tmp / 'one')],
                                  environment(2), tmp / 'one'),
        '2 processes x 1 thread': (mpiexec() + ['-n', '2'] + script + common
                                   + ['--out', str(tmp / 'two'), '--communicator', 'naive'],
                                   environment(1), tmp / 'two'),
    }
    results = {'model': args.model, 'sentences': args.sentences, 'batchsize': args.batchsize,
               'epochs': args.epochs, 'loss': args.loss, 'cpus': os.cpu_count()}
    losses = {}
    for name, (command, env, out) in runs.items():
        best = 0.0
        for _ in range(args.repeat):
            shutil.rmtree(out, ignore_errors=True)
            run(command, env, name)
            log = [json.loads(line) for line in (out / 'log.jsonl').read_text().splitlines()]
            best = max(best, max(r['T/sentences_per_sec'] for r in log))
            losses[name] = [r['T/loss'] for r in log]
        results[name] = round(best, 1)
        print('%s: %.1f training sentences/s, T/loss %s'
              % (name, best, ', '.join('%.6f' % v for v in losses[name])), flush=True)
    one, two = runs
    results['speed-up of 2 x 1 over 1 x 2'] = round(results[two] / results[one], 2)
    worst = max(abs(a - b) / abs(a) for a, b in zip(losses[one], losses[two]))
    results['T/loss relative difference'] = float('%.2g' % worst)
    print('2 x 1 / 1 x 2: %.2f; T/loss differs by %.2g (relative)'
          % (results['speed-up of 2 x 1 over 1 x 2'], worst), flush=True)
    return results


def write_lines(path, count):
    """`count` generated lines of 5 to 44 made-up words, streamed to disk."""
    with open(path, 'w') as f:
        for i in range(count):
            f.write('%d\t%s\n' % (i % 3, ' '.join('w%d' % ((i * 7 + j * 13) % 2000)
                                                 for j in range(5 + i % 40))))


def memory(args, tmp):
    folder = write_random_bert(tmp / 'memory-model', ['w%d' % i for i in range(2000)],
                               shape=SHAPES['tiny'])
    results = {'ranks': args.ranks}
    for name, count in (('short', args.short), ('long', args.long)):
        path = tmp / ('%s.txt' % name)
        write_lines(path, count)
        command = [sys.executable, str(ROOT / 'extruct_bert_embed.py'), '--input', str(path),
                   '--output', str(tmp / 'features.tsv'), '--batchsize', str(args.batchsize),
                   '--pooling', 'mean'] + model_flags(folder)
        if args.ranks > 1:
            command = mpiexec() + ['-n', str(args.ranks)] + command + ['--communicator',
                                                                        'naive']
        start = time.perf_counter()
        result = run([sys.executable, '-c', PEAK_WRAPPER] + command, environment(1),
                     'extraction of %d lines' % count)
        seconds = time.perf_counter() - start
        peak = int(result.stdout.split()[-1]) / 1024.0
        results['%s_lines' % name] = count
        results['%s_peak_mib' % name] = round(peak, 1)
        results['%s_lines_per_s' % name] = round(count / seconds, 1)
        print('%d lines on %d process(es): peak RSS %.1f MiB (largest process), %.1f s, '
              '%.0f lines/s' % (count, args.ranks, peak, seconds, count / seconds), flush=True)
        path.unlink()
    ratio = results['long_peak_mib'] / results['short_peak_mib']
    results['peak_ratio'] = round(ratio, 3)
    print('peak memory ratio %d / %d lines: %.3f (limit %.1f): %s'
          % (args.long, args.short, ratio, MEMORY_LIMIT,
             'ok' if ratio <= MEMORY_LIMIT else 'TOO HIGH'), flush=True)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--what', choices=('all', 'training', 'memory'), default='all')
    parser.add_argument('--model', default='demo',
                        help="training: demo, small, tiny or a model folder (default: demo)")
    parser.add_argument('--sentences', type=int, default=512,
                        help='training sentences (default: 512)')
    parser.add_argument('--classes', type=int, default=8, help='(default: 8)')
    parser.add_argument('--batchsize', type=int, default=64,
                        help='global batch of training, batch of extraction (default: 64)')
    parser.add_argument('--epochs', type=int, default=2,
                        help='the best epoch is reported (default: 2)')
    parser.add_argument('--loss', default='batch_hard', help='(default: batch_hard)')
    parser.add_argument('--repeat', type=int, default=1, help='runs of each (default: 1)')
    parser.add_argument('--short', type=int, default=10000, help='(default: 10,000)')
    parser.add_argument('--long', type=int, default=1000000, help='(default: 1,000,000)')
    parser.add_argument('--ranks', type=int, default=2,
                        help='processes of the memory check (default: 2)')
    parser.add_argument('--json', default=None, help='also write the figures to this file')
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        if args.what in ('all', 'training'):
            results['training'] = training(args, tmp)
        if args.what in ('all', 'memory'):
            results['memory'] = memory(args, tmp)
    print(json.dumps(results, indent=2))
    if args.json:
        pathlib.Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(args.json).write_text(json.dumps(results, indent=2) + '\n')
    if results.get('memory', {}).get('peak_ratio', 0) > MEMORY_LIMIT:
        sys.exit(1)


if __name__ == '__main__':
    main()
