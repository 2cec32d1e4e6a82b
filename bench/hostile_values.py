#!/usr/bin/env python
"""Hostile values in model and feature files (issue 26, items 5-8), tried on the scripts.

Builds a tiny random BERT (hidden 16, one layer), a DML and a classifier model file made
from it, a Hugging Face copy of it for `bertlib.convert` and a small features file, then
runs each script on one hostile variant at a time and prints a Markdown table: the case,
the command (folders relative to the temporary one), the exit status, the peak resident
memory of the child, what it wrote (`output_of`) and the last line it wrote on stderr. Every case must end with one
`error:` line and status 2, or with status 0 where the value is fine.

    python bench/hostile_values.py [--tree DIR]

--tree runs the scripts of another checkout (e.g. an exported older commit) with this
one's files, to compare before and after.
"""

import argparse
import hashlib
import json
import os
import pathlib
import pickle
import re
import resource
import shutil
import subprocess
import sys
import tempfile

import numpy as np

from bertlib import checkpoints, classifier, convert, dml, modeling
from bertlib.testing import (ROOT, SPECIAL_TOKENS, encrypt_zip_member, model_flags,
                             write_hf_copy, write_random_bert)

WORDS = ['good', 'great', 'fine', 'nice', 'bad', 'awful', 'poor', 'dull', 'the', 'film',
         'was', 'plot', 'very', 'a', '.']
SHAPE = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
             intermediate_size=32, max_position_embeddings=128, type_vocab_size=2)


class World(object):
    """The files every case starts from, in `root`."""

    def __init__(self, root):
        self.root = root
        self.bert = write_random_bert(root / 'bert', WORDS, shape=SHAPE)
        (root / 'in.txt').write_text('pos\tgood film\nneg\tbad plot\n')
        config = modeling.BertConfig.from_json_file(str(self.bert / 'bert_config.json'))
        bert = modeling.BertModel(config)
        modeling.load_pretrained(bert, str(self.bert / 'arrays_bert_model.ckpt.npz'))
        self.dml = root / 'dml'
        self.dml.mkdir()
        model = dml.DMLModel(bert, dim=8, pooling='mean')
        checkpoints.save_model(str(self.dml / 'final.model'), model, meta={
            'kind': 'dml', 'pooling': 'mean', 'dim': 8, 'head': 'linear', 'loss': 'supcon',
            'classes': 2})
        checkpoints.save_labels(str(self.dml / 'labels.bin'), {'neg': 0, 'pos': 1})
        self.cls = root / 'cls'
        self.cls.mkdir()
        checkpoints.save_model(str(self.cls / 'final.model'),
                               classifier.ClassifierModel(bert, 2),
                               meta={'kind': 'classifier', 'classes': 2})
        checkpoints.save_labels(str(self.cls / 'labels.bin'), {'neg': 0, 'pos': 1})
        self.hf = root / 'hf'
        write_hf_copy(self.bert, self.hf)
        rng = np.random.RandomState(0)
        rows = ['%s\t%s' % ('ab'[i % 2], '\t'.join('%.6f' % v for v in rng.randn(4) + i % 2))
                for i in range(40)]
        (root / 'feats.tsv').write_text('\n'.join(rows) + '\n')
        (root / 'text.txt').write_text(''.join('%s\tsentence %d\n' % ('ab'[i % 2], i)
                                               for i in range(40)))

    def copy(self, name, source=None):
        target = self.root / slug(name)
        shutil.copytree(source or self.bert, target)
        return target


def slug(name):
    """A case's name as a folder name."""
    return re.sub('[^A-Za-z0-9]+', '-', name).strip('-')


def edit_config(folder, text=None, **changes):
    path = folder / 'bert_config.json'
    if text is None:
        config = json.loads(path.read_text())
        config.update(changes)
        text = json.dumps(config)
    path.write_text(text)


def rewrite_npz(path, change):
    with np.load(path, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    change(arrays)
    with open(path, 'wb') as f:  # np.savez would add '.npz' to a name without it
        np.savez(f, **arrays)


def embed(world, folder, flags=None):
    return (['extruct_bert_embed.py', '--input', 'in.txt', '-o', 'out.tsv', '--gpu', '-1']
            + (flags or model_flags(folder)))


def metrics(world, model_folder, bert=None):
    return (['extruct_bert_metrics.py', '--input', 'in.txt', '-o', 'out.tsv', '--gpu', '-1',
             '--model', str(model_folder / 'final.model'),
             '--label', str(model_folder / 'labels.bin')] + model_flags(bert or world.bert))


def classified(world, model_folder):
    return (['extruct_bert_classified.py', '--input', 'in.txt', '-o', 'out.tsv', '--gpu',
             '-1', '--model', str(model_folder / 'final.model'),
             '--label', str(model_folder / 'labels.bin')] + model_flags(world.bert))


def analysis(script, features):
    return {
        'evaluate': ['evaluate_features.py', features, '-o', 'table.md'],
        'plot': ['plot_features.py', '--input', features, '-o', 'plot.png'],
        'cluster': ['cluster_features.py', '--input', features, '-o', 'clusters.png',
                    '--plots', '0', '--algorithms', 'MiniBatchKMeans,Ward'],
        'explore': ['explore_features.py', '--input', features, '--text', 'text.txt',
                    '-o', 'page.html'],
    }[script]


def cases(world):
    """(name, argv) of every case, building its hostile files on the way."""
    root = world.root
    npz = 'arrays_bert_model.ckpt.npz'

    # 5: bert_config.json
    for name, changes in (('layer_norm_eps NaN', dict(layer_norm_eps=float('nan'))),
                          ('layer_norm_eps -1', dict(layer_norm_eps=-1.0)),
                          ('layer_norm_eps "1e-12"', dict(layer_norm_eps='1e-12')),
                          ('hidden_act ["gelu"]', dict(hidden_act=['gelu'])),
                          ('hidden_dropout_prob 1.0', dict(hidden_dropout_prob=1.0)),
                          ('hidden_dropout_prob "0.1"', dict(hidden_dropout_prob='0.1')),
                          ('attention_probs_dropout_prob -0.5',
                           dict(attention_probs_dropout_prob=-0.5)),
                          ('initializer_range NaN', dict(initializer_range=float('nan'))),
                          ('num_hidden_layers true', dict(num_hidden_layers=True)),
                          ('type_vocab_size true', dict(type_vocab_size=True)),
                          ('intermediate_size 10**7', dict(intermediate_size=10 ** 7)),
                          ('BERT-large sizes (1024 x 24 layers)',
                           dict(hidden_size=1024, num_attention_heads=16, num_hidden_layers=24,
                                intermediate_size=4096)),
                          ('intermediate_size 10**9', dict(intermediate_size=10 ** 9)),
                          ('num_hidden_layers 10**6', dict(num_hidden_layers=10 ** 6)),
                          ('hidden_size 10**9 (heads 1)',
                           dict(hidden_size=10 ** 9, num_attention_heads=1))):
        folder = world.copy('config %s' % name)
        edit_config(folder, **changes)
        yield 'bert_config.json: %s' % name, embed(world, folder)
    folder = world.copy('config nested')
    edit_config(folder, text='{"vocab_size": 20, "x": %s1%s}' % ('[' * 100000, ']' * 100000))
    yield 'bert_config.json: nested 100,000 deep', embed(world, folder)
    folder = world.copy('config layers metrics')
    edit_config(folder, num_hidden_layers=10 ** 6)
    yield 'bert_config.json: num_hidden_layers 10**6, DML model', metrics(world, world.dml,
                                                                         folder)
    for name, changes in (('intermediate_size 10**9', dict(intermediate_size=10 ** 9)),
                          ('num_hidden_layers 10**6', dict(num_hidden_layers=10 ** 6)),
                          ('layer_norm_eps NaN', dict(layer_norm_eps=float('nan')))):
        folder = world.copy('hf %s' % name, world.hf)
        config = json.loads((folder / 'config.json').read_text())
        config.update(changes)
        (folder / 'config.json').write_text(json.dumps(config))
        yield ('convert: config.json %s' % name,
               ['-m', 'bertlib.convert', str(folder), str(root / slug('out %s' % name))])

    # 6: vocab.txt
    words = SPECIAL_TOKENS + WORDS
    # As the issue tried them: a token appended again (its id is then past the rows), or
    # repeated in the middle (every later id shifts by one; the size still matches).
    for name, vocab in (('duplicate last line', words + ['good']),
                        ('duplicate line in the middle', words[:13] + ['dull'] + words[13:])):
        folder = world.copy('vocab %s' % name)
        (folder / 'vocab.txt').write_text('\n'.join(vocab) + '\n')
        yield 'vocab.txt: %s' % name, embed(world, folder)
    folder = world.copy('vocab short')
    (folder / 'vocab.txt').write_text('\n'.join(words[:-2]) + '\n')
    edit_config(folder, vocab_size=len(words) - 2)
    yield ('vocab.txt and vocab_size 2 short of the checkpoint\'s rows',
           embed(world, folder))
    folder = world.copy('hf vocab dup', world.hf)
    (folder / 'vocab.txt').write_text('\n'.join(words[:-1] + ['good']) + '\n')
    yield ('convert: vocab.txt duplicate line',
           ['-m', 'bertlib.convert', str(folder), str(root / 'out-vocab')])

    # 7: values that overflow float32
    folder = world.copy('ckpt 1e300')
    rewrite_npz(folder / npz, lambda a: a.__setitem__(
        'bert/post_embedding_ln/gamma',
        np.full(a['bert/post_embedding_ln/gamma'].shape, 1e300)))
    yield 'checkpoint: float64 gamma 1e300', embed(world, folder)
    model = world.copy('dml head 1e300', world.dml)
    rewrite_npz(model / 'final.model', lambda a: a.__setitem__(
        'output/W', np.full(a['output/W'].shape, 1e300)))
    yield 'DML model: float64 output/W 1e300', metrics(world, model)
    model = world.copy('dml centre 1e300', world.dml)

    def big_centre(arrays):
        meta = json.loads(str(arrays['meta/json']))
        meta['centre'] = [1e300] * 8
        arrays['meta/json'] = np.array(json.dumps(meta))
    rewrite_npz(model / 'final.model', big_centre)
    yield 'DML model: centre of 1e300', metrics(world, model)
    text = (root / 'feats.tsv').read_text().splitlines()
    label, first, rest = text[3].split('\t', 2)
    text[3] = '\t'.join([label, '1e300', rest])
    (root / 'feats-1e300.tsv').write_text('\n'.join(text) + '\n')
    for script in ('evaluate', 'plot', 'cluster', 'explore'):
        yield 'features file: 1e300 (%s)' % script, analysis(script, 'feats-1e300.tsv')
    text[3] = '\t'.join([label, '3e38', rest])
    (root / 'feats-3e38.tsv').write_text('\n'.join(text) + '\n')
    for script in ('evaluate', 'cluster'):
        yield ('features file: 3e38, finite in float32 (%s)' % script,
               analysis(script, 'feats-3e38.tsv'))
    for name, value, dtype in (('float64 1e300', 1e300, np.float64),
                               ('float32 NaN', np.nan, np.float32)):
        folder = world.copy('hf %s' % name, world.hf)
        from safetensors.numpy import load_file, save_file
        tensors = load_file(str(folder / 'model.safetensors'))
        key = 'embeddings.LayerNorm.weight'
        tensors[key] = np.full(tensors[key].shape, value, dtype=dtype)
        save_file(tensors, str(folder / 'model.safetensors'))
        yield ('convert: a tensor of %s' % name,
               ['-m', 'bertlib.convert', str(folder), str(root / slug('out %s' % name))])

    # 8: model metadata and shapes
    model = world.copy('dml pooling max', world.dml)

    def pooling_max(arrays):
        meta = json.loads(str(arrays['meta/json']))
        meta['pooling'] = 'max'
        arrays['meta/json'] = np.array(json.dumps(meta))
    rewrite_npz(model / 'final.model', pooling_max)
    yield 'DML model: pooling "max" in its metadata', metrics(world, model)
    model = world.copy('dml head 0', world.dml)

    def empty_head(arrays):
        arrays['output/W'] = np.zeros((0, 16), np.float32)
        arrays['output/b'] = np.zeros((0,), np.float32)
        meta = json.loads(str(arrays['meta/json']))
        meta['dim'] = 0
        arrays['meta/json'] = np.array(json.dumps(meta))
    rewrite_npz(model / 'final.model', empty_head)
    yield 'DML model: head of shape (0, 16)', metrics(world, model)
    model = world.copy('cls head 0', world.cls)

    def no_classes(arrays):
        arrays['output/W'] = np.zeros((0, 16), np.float32)
        arrays['output/b'] = np.zeros((0,), np.float32)
        meta = json.loads(str(arrays['meta/json']))
        meta['classes'] = 0
        arrays['meta/json'] = np.array(json.dumps(meta))
    rewrite_npz(model / 'final.model', no_classes)
    (model / 'labels.bin').write_bytes(pickle.dumps({}, protocol=2))
    yield 'classifier model: head of shape (0, 16), no labels', classified(world, model)
    folder = world.copy('ckpt encrypted')
    encrypt_zip_member(folder / npz, 'bert/pooler/W.npy')
    yield 'checkpoint: an encrypted zip member', embed(world, folder)
    model = world.copy('dml encrypted', world.dml)
    encrypt_zip_member(model / 'final.model', 'meta/json.npy')
    yield 'DML model: encrypted meta/json member', metrics(world, model)

    # Nothing lost: the untouched files still work.
    yield 'untouched BERT (extruct_bert_embed.py)', embed(world, world.bert)
    yield 'untouched DML model', metrics(world, world.dml)
    yield 'untouched classifier model', classified(world, world.cls)
    yield 'untouched convert', ['-m', 'bertlib.convert', str(world.hf), str(root / 'out-ok')]
    for script in ('evaluate', 'plot', 'cluster', 'explore'):
        yield 'untouched features file (%s)' % script, analysis(script, 'feats.tsv')


# Each child may map at most this much memory: a config that asks for 10**6 layers took
# 19 GB before it was refused, and the machine has 23.
CHILD_MEMORY = 4 << 30


def _limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY, CHILD_MEMORY))


def run(argv, tree, cwd):
    """(status, peak RSS in MiB, last stderr line) of one script run, under CHILD_MEMORY."""
    args = [sys.executable] + ([str(tree / argv[0])] if argv[0].endswith('.py')
                               else argv[:2]) + argv[1 if argv[0].endswith('.py') else 2:]
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS='1',
               OPENBLAS_NUM_THREADS='1')
    with tempfile.TemporaryFile() as err:
        child = subprocess.Popen(args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err,
                                 env=env, preexec_fn=_limit_memory)
        try:
            _, status, usage = os.wait4(child.pid, 0)
        except KeyboardInterrupt:
            child.kill()
            raise
        child.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        lines = [l for l in err.read().decode('utf-8', 'replace').splitlines() if l.strip()]
    last = lines[-1] if lines else ''
    return child.returncode, usage.ru_maxrss / 1024.0, last


def output_of(argv, cwd):
    """What a run wrote, to compare runs: the sha256 (12 digits) of a features file and
    its count of 'nan', or of the arrays a conversion wrote; '-' for anything else."""
    if argv[:2] == ['-m', 'bertlib.convert']:
        path = pathlib.Path(argv[-1]) / convert.NPZ_NAME
        if not path.exists():
            return '-'
        digest = hashlib.sha256()
        with np.load(path, allow_pickle=False) as archive:
            for name in sorted(archive.files):
                digest.update(name.encode() + archive[name].tobytes())
        return digest.hexdigest()[:12]
    path = cwd / 'out.tsv'
    if '-o' not in argv or argv[argv.index('-o') + 1] != 'out.tsv' or not path.exists():
        return '-'
    text = path.read_text()
    path.unlink()
    return '%s, %d NaN' % (hashlib.sha256(text.encode()).hexdigest()[:12],
                           text.count('nan'))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--tree', default=str(ROOT),
                        help='checkout whose scripts are run (default: this one)')
    parser.add_argument('-k', default='', help='run only the cases whose name holds this')
    args = parser.parse_args()
    tree = pathlib.Path(args.tree).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        world = World(root)
        print('| case | command | exit | peak MiB | output | last line on stderr |')
        print('|---|---|---|---|---|---|')
        for name, argv in cases(world):
            if args.k not in name:
                continue
            status, mib, last = run(argv, tree, root)
            shown = ' '.join(a.replace(str(root) + '/', '') for a in argv)
            # The three BERT flags of a folder X, shortened to 'BERT(X)'.
            shown = re.sub(r'--vocab_file (\S+)/vocab.txt --bert_config_file \1/'
                           r'bert_config.json --init_checkpoint \1/arrays_bert_model.ckpt.npz',
                           r'BERT(\1)', shown)
            last = last.replace(str(root) + '/', '').replace('|', '\\|')
            print('| %s | `%s` | %d | %.0f | %s | %s |'
                  % (name, shown, status, mib, output_of(argv, root), last[:200]), flush=True)


if __name__ == '__main__':
    main()
