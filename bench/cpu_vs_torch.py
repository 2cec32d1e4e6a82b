#!/usr/bin/env python
"""Extraction on the CPU against the PyTorch reference: both sides as whole processes,
alternated in one invocation, medians of --repeat; prints issue 36's table.

Rows (--rows, comma-separated):
  extract-demo  extruct_bert_embed.py --pooling mean, the demo model (all-MiniLM-L6-v2),
                rt-polarity 04-test.txt (1,066 lines)
  extract-e5    the same with multilingual-e5-small and --text_prefix 'passage: ' on the
                first 600 lines of MLIT split-test.txt, joined (the spaces between its
                words removed, as docs/multilingual-mlit.md reads it)

The reference is sentence-transformers (`SentenceTransformer.encode`: length-sorted
batches of --reference_batchsize, mean pooling, max_seq_length 128) in
build/torch-venv, over a sentence-transformers folder written once from the same
converted weights (a float32 transformers BertModel, the same tokenizer; <s> ... </s>
around the e5 pieces as bertlib's tokenizer puts them) under results/cpu_vs_torch/.

Each measurement is a whole process (start-up, loading, tokenising, encoding, writing the
features), its wall seconds and its peak resident memory (ru_maxrss of that child alone).
The machine is shared and its load varies: the ratio of the two sides, alternated, is
the figure to trust; peak memory does not depend on the load.

    python bench/cpu_vs_torch.py --rows extract-demo,extract-e5 [--repeat 3]
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile

from bertlib.testing import DATASETS
from extract_speed import timed  # bench/, this script's folder

ROOT = pathlib.Path(__file__).resolve().parents[1]

TORCH_PYTHON = ROOT / 'build' / 'torch-venv' / 'bin' / 'python'
WORK = ROOT / 'results' / 'cpu_vs_torch'

# Writes a sentence-transformers folder (argv[3]) from Hugging Face arrays (argv[1], an
# npz) and a bertlib model folder (argv[2]).
BUILD_SCRIPT = r'''
import json, os, sys
import numpy as np, torch, transformers
from sentence_transformers import SentenceTransformer, models
weights, folder, out = sys.argv[1:4]
hf = os.path.join(out, 'hf')
with open(os.path.join(folder, 'bert_config.json')) as f:
    config = transformers.BertConfig(**json.load(f))
model = transformers.BertModel(config, add_pooling_layer=False)
with np.load(weights) as npz:
    state = {k: torch.from_numpy(npz[k]) for k in npz.files if not k.startswith('pooler.')}
missing, unexpected = model.load_state_dict(state, strict=False)
assert not unexpected and all('position_ids' in m for m in missing), (missing, unexpected)
model.save_pretrained(hf)
if os.path.exists(os.path.join(folder, 'tokenizer.json')):
    import tokenizers
    raw = tokenizers.Tokenizer.from_file(os.path.join(folder, 'tokenizer.json'))
    raw.post_processor = tokenizers.processors.TemplateProcessing(
        single='<s> $A </s>', special_tokens=[('<s>', raw.token_to_id('<s>')),
                                              ('</s>', raw.token_to_id('</s>'))])
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=raw, bos_token='<s>', eos_token='</s>', pad_token='<pad>',
        unk_token='<unk>')
else:
    tokenizer = transformers.BertTokenizerFast(os.path.join(folder, 'vocab.txt'),
                                               do_lower_case=True)
tokenizer.save_pretrained(hf)
transformer = models.Transformer(hf, max_seq_length=128)
pooling = models.Pooling(transformer.get_word_embedding_dimension(), 'mean')
SentenceTransformer(modules=[transformer, pooling], device='cpu').save(out)
'''

# Encodes argv[2] (label<TAB>text lines) with the folder argv[1], batch argv[3], the
# texts prefixed with argv[4]; writes the vectors as TSV to argv[5], as extraction does.
ENCODE_SCRIPT = r'''
import sys
import torch
from sentence_transformers import SentenceTransformer
torch.set_num_threads(2)
model = SentenceTransformer(sys.argv[1], device='cpu')
lines = [l.rstrip('\n').split('\t', 1) for l in open(sys.argv[2], encoding='utf-8') if l.strip()]
vectors = model.encode([sys.argv[4] + l[-1] for l in lines], batch_size=int(sys.argv[3]))
with open(sys.argv[5], 'w', encoding='utf-8') as out:
    for l, v in zip(lines, vectors):
        out.write(l[0] + '\t' + '\t'.join('%.6f' % x for x in v.tolist()) + '\n')
'''

ROWS = {
    'extract-demo': dict(
        title='extraction, demo model, rt-polarity 04-test (1,066 lines)', model='all-MiniLM-L6-v2',
        vocab='vocab.txt', input=DATASETS / 'rt-polarity' / '04-test.txt', prefix='',
        lines=None, join=False),
    'extract-e5': dict(
        title="extraction, multilingual-e5-small, 600 MLIT lines (joined, 'passage: ')",
        model='multilingual-e5-small', vocab='tokenizer.json',
        input=DATASETS / 'mlit' / 'split-test.txt', prefix='passage: ', lines=600,
        join=True),
}


def prepare_input(row, work):
    """The row's input file: the dataset itself, or its first `lines` lines joined."""
    if not row['join'] and row['lines'] is None:
        return row['input']
    path = work / ('%s-input.txt' % row['model'])
    with open(row['input'], encoding='utf-8') as source, \
            open(path, 'w', encoding='utf-8') as target:
        for number, line in enumerate(source):
            if row['lines'] is not None and number >= row['lines']:
                break
            label, _, text = line.rstrip('\n').partition('\t')
            target.write('%s\t%s\n' % (label, text.replace(' ', '') if row['join'] else text))
    return path


def reference_folder(args, folder, work):
    """The sentence-transformers folder of `folder`'s weights, built once."""
    out = work / ('st-' + folder.name)
    if (out / 'modules.json').exists():
        return out
    import numpy as np
    from multilingual_fidelity import hf_arrays
    with tempfile.TemporaryDirectory() as tmp:
        weights = os.path.join(tmp, 'hf.npz')
        np.savez(weights, **hf_arrays(folder))
        subprocess.run([str(args.torch_python), '-c', BUILD_SCRIPT, weights, str(folder),
                        str(out)], check=True, env=reference_env())
    return out


def reference_env():
    return dict(os.environ, HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1',
                TOKENIZERS_PARALLELISM='false')


def measure_row(args, name, work):
    row = ROWS[name]
    folder = ROOT / 'BERT' / row['model']
    if not row['input'].exists() or not (folder / 'arrays_bert_model.ckpt.npz').exists():
        print('%s: skipped (%s or %s is absent)' % (name, row['input'], folder), flush=True)
        return None
    path = prepare_input(row, work)
    lines = sum(1 for line in open(path, encoding='utf-8') if line.strip())
    st_folder = reference_folder(args, folder, work)
    ours_out, theirs_out = work / (name + '-ours.tsv'), work / (name + '-theirs.tsv')
    ours = [sys.executable, str(ROOT / 'extruct_bert_embed.py'), '--input', str(path),
            '--vocab_file', str(folder / row['vocab']),
            '--bert_config_file', str(folder / 'bert_config.json'),
            '--init_checkpoint', str(folder / 'arrays_bert_model.ckpt.npz'),
            '--batchsize', str(args.batchsize), '--pooling', 'mean', '--gpu', '-1',
            '--output', str(ours_out)] + (
                ['--text_prefix', row['prefix']] if row['prefix'] else [])
    theirs = [str(args.torch_python), '-c', ENCODE_SCRIPT, str(st_folder), str(path),
              str(args.reference_batchsize), row['prefix'], str(theirs_out)]
    runs = {'ours': [], 'theirs': []}
    for attempt in range(args.repeat):
        for side, command, env in (('ours', ours, None), ('theirs', theirs, reference_env())):
            seconds, peak = timed(command, env=env)
            runs[side].append((seconds, peak))
            print('%s %s run %d: %.2f s, peak %.0f MiB'
                  % (name, side, attempt + 1, seconds, peak), flush=True)
    result = {'row': name, 'title': row['title'], 'lines': lines}
    for side in runs:
        result[side + '_s'] = statistics.median(s for s, _ in runs[side])
        result[side + '_mib'] = statistics.median(m for _, m in runs[side])
        result[side + '_runs'] = runs[side]
    result['max_difference'] = max_difference(ours_out, theirs_out)
    _, result['tokens'], result['flops'] = forward_flops(folder, row['vocab'], path,
                                                         row['prefix'])
    return result


def forward_flops(folder, vocab, path, prefix):
    """(sentences, tokens, multiply-add FLOPs of the encoder over the real tokens): per
    layer and sentence of n tokens 2n(4H^2 + 2HI) for the dense products and 4n^2 H for
    the attention's two; padding, embeddings, norms and activations not counted."""
    from bertlib import bert_loading, data
    flags = argparse.Namespace(vocab_file=str(folder / vocab), do_lower_case='auto',
                               text_prefix=prefix,
                               bert_config_file=str(folder / 'bert_config.json'),
                               init_checkpoint=str(folder / 'arrays_bert_model.ckpt.npz'))
    config = bert_loading.read_bert_config(flags.bert_config_file)
    tokenizer = bert_loading.load_tokenizer(flags, config)
    h, inner = config.hidden_size, config.intermediate_size
    sentences = tokens = flops = 0
    for example in data.iter_examples(str(path)):
        n = len(tokenizer.encode(example.text, 128)[0])
        sentences += 1
        tokens += n
        flops += config.num_hidden_layers * (2 * n * (4 * h * h + 2 * h * inner)
                                             + 4 * n * n * h)
    return sentences, tokens, flops


def matmul_rate(repeat=7):
    """The best float32 matrix-product rate of NumPy's BLAS here, FLOP/s: (4096, 384) x
    (384, 1536), a feed-forward product of a batch of 64 sentences of 64 tokens."""
    import time
    import numpy as np
    a = np.random.default_rng(0).standard_normal((4096, 384)).astype(np.float32)
    b = np.random.default_rng(1).standard_normal((384, 1536)).astype(np.float32)
    best = float('inf')
    for _ in range(repeat):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * 4096 * 384 * 1536 / best


def max_difference(a, b):
    """The largest difference of a feature between the two sides' last outputs."""
    import numpy as np
    rows = [np.loadtxt(p, delimiter='\t', usecols=None, dtype=str, ndmin=2) for p in (a, b)]
    x, y = (r[:, 1:].astype(np.float64) for r in rows)
    return float(np.abs(x - y).max()) if x.shape == y.shape else float('nan')


def table(results, args):
    lines = ['| work | this project | sentence-transformers, same weights | speed ratio | '
             'memory ratio |', '|---|---|---|---|---|']
    for r in results:
        lines.append('| %s | %.2f s, %.1f sentences/s, %.0f MiB | %.2f s, %.1f '
                     'sentences/s, %.0f MiB | %.2f× | %.2f |'
                     % (r['title'], r['ours_s'], r['lines'] / r['ours_s'],
                        r['ours_mib'], r['theirs_s'], r['lines'] / r['theirs_s'],
                        r['theirs_mib'], r['theirs_s'] / r['ours_s'],
                        r['ours_mib'] / r['theirs_mib']))
    lines.append('')
    lines.append('medians of %d alternated runs; batch %d here, %d for sentence-transformers '
                 '(each side\'s default); memory ratio: this project\'s peak / the '
                 'reference\'s' % (args.repeat, args.batchsize, args.reference_batchsize))
    for r in results:
        lines.append('%s: largest feature difference between the two sides %.2g'
                     % (r['row'], r['max_difference']))
    rate = matmul_rate()
    lines.append('')
    lines.append('ceiling: NumPy float32 matrix products here at best %.1f GFLOP/s '
                 '(measured now, (4096, 384) x (384, 1536))' % (rate / 1e9))
    for r in results:
        for side in ('ours', 'theirs'):
            achieved = r['flops'] / r[side + '_s']
            lines.append('%s %s: %d tokens, %.1f MFLOP a sentence, %.1f GFLOP/s over the '
                         'whole process = %.0f%% of that rate'
                         % (r['row'], side, r['tokens'], r['flops'] / r['lines'] / 1e6,
                            achieved / 1e9, 100 * achieved / rate))
    return '\n'.join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--rows', default='extract-demo,extract-e5',
                        help='comma-separated: %s' % ', '.join(ROWS))
    parser.add_argument('--repeat', type=int, default=3, help='alternated runs of each side')
    parser.add_argument('--batchsize', type=int, default=64,
                        help="extruct_bert_embed.py's --batchsize (its default: 64)")
    parser.add_argument('--reference_batchsize', type=int, default=32,
                        help="SentenceTransformer.encode's batch_size (its default: 32)")
    parser.add_argument('--torch_python', default=str(TORCH_PYTHON),
                        help='a Python with torch and sentence-transformers')
    parser.add_argument('--json', default=None, help='also write the figures to this file')
    args = parser.parse_args()
    names = [n for n in args.rows.split(',') if n]
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        parser.error('unknown rows %s (choose from %s)' % (unknown, ', '.join(ROWS)))
    WORK.mkdir(parents=True, exist_ok=True)
    results = [r for r in (measure_row(args, n, WORK) for n in names) if r]
    print(table(results, args))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=2) + '\n')


if __name__ == '__main__':
    main()
