#!/usr/bin/env python
"""Extraction speed and memory of extruct_bert_embed.py, as a whole process.

Extracts rt-polarity/04-test.txt (1,066 sentences; --input another file) with the given
model on the CPU and
prints sentences/second (wall clock of the whole process: start-up, loading, tokenising,
encoding, writing) and peak memory. With --reference_python (a Python that has
sentence-transformers and PyTorch), it runs sentence-transformers on the same file in the
same command, whole process too, and prints the ratio: the machine is shared and noisy, so
the ratio is the figure to trust.

--tokenisation times reading the tokenizer and tokenising the lines in this process, as a
share of the whole extraction. --torch_python (torch and transformers) runs a plain float32
transformers BertModel over the same token ids, whole process too (bench/torch_bert_forward.py;
the ids are given to it, so its time has no tokenising).

--memory checks that memory stays flat with input length: a small random BERT extracts
generated files of --short and --long lines and the two peaks are compared.

    python bench/extract_speed.py --bert_dir BERT/all-MiniLM-L6-v2 \
        [--reference_python /tmp/refenv/bin/python] [--memory]
"""

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

from bertlib.testing import DATASETS, ROOT, write_random_bert

DATASET = DATASETS / 'rt-polarity' / '04-test.txt'

REFERENCE_SCRIPT = r'''
import sys
from sentence_transformers import SentenceTransformer
model = SentenceTransformer(sys.argv[1], device='cpu')
lines = [l.rstrip('\n').split('\t', 1)[-1] for l in open(sys.argv[2], encoding='utf-8')]
model.encode(lines, batch_size=int(sys.argv[3]))
'''


# Runs a command and prints the peak RSS (KiB) of that command alone.
PEAK_WRAPPER = ('import resource, subprocess, sys; '
                'r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL); '
                'print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); '
                'sys.exit(r.returncode)')


def timed(command, **kwargs):
    """Runs `command`; returns (wall seconds, peak RSS of that command in MiB)."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, '-c', PEAK_WRAPPER] + command,
                            capture_output=True, text=True, **kwargs)
    seconds = time.perf_counter() - start
    if result.returncode:
        sys.exit('benchmark command failed:\n%s\n%s' % (' '.join(command), result.stderr))
    return seconds, int(result.stdout.split()[-1]) / 1024.0


def extract_command(args, input_path, extra=()):
    prefix = getattr(args, 'text_prefix', '')
    return [sys.executable, str(ROOT / 'extruct_bert_embed.py'), '--input', str(input_path),
            '--vocab_file', args.vocab_file, '--bert_config_file', args.bert_config_file,
            '--init_checkpoint', args.init_checkpoint, '--batchsize', str(args.batchsize),
            '--pooling', 'mean', '--gpu', '-1'] + (
                ['--text_prefix', prefix] if prefix else []) + list(extra)


def tokenisation(args):
    """(seconds to read the tokenizer, seconds to tokenise every line of --input), in
    this process, as extraction does them; and the id lists."""
    from bertlib import bert_loading, data
    flags = argparse.Namespace(vocab_file=args.vocab_file, do_lower_case='auto',
                               text_prefix=args.text_prefix,
                               bert_config_file=args.bert_config_file)
    config = bert_loading.read_bert_config(args.bert_config_file)
    start = time.perf_counter()
    tokenizer = bert_loading.load_tokenizer(flags, config)
    loaded = time.perf_counter()
    texts = [example.text for example in data.iter_examples(args.input)]
    ids = [tokenizer.encode(text, args.max_seq_length)[0] for text in texts]
    return loaded - start, time.perf_counter() - loaded, ids


def torch_extraction(args, id_lists):
    """Whole-process (wall seconds, peak MiB) of bench/torch_bert_forward.py, a plain
    float32 transformers BertModel forward over the same ids (tokenised here, outside
    its time), batch --batchsize, 2 threads."""
    import numpy as np
    from multilingual_fidelity import hf_arrays
    folder = os.path.dirname(args.init_checkpoint)
    with tempfile.TemporaryDirectory() as work:
        weights, ids = os.path.join(work, 'weights.npz'), os.path.join(work, 'ids.npz')
        np.savez(weights, **hf_arrays(folder))
        np.savez(ids, ids=np.concatenate([np.asarray(i, np.int64) for i in id_lists]),
                 lengths=np.array([len(i) for i in id_lists], np.int64))
        return timed([args.torch_python, str(ROOT / 'bench' / 'torch_bert_forward.py'),
                      '--weights', weights, '--config', args.bert_config_file, '--ids', ids,
                      '--out', os.path.join(work, 'states.npy'),
                      '--batchsize', str(args.batchsize), '--threads', '2'])


def speed(args):
    lines = sum(1 for line in open(args.input, encoding='utf-8') if line.strip())
    results = {'input': str(args.input), 'sentences': lines, 'batchsize': args.batchsize,
               'cpus': os.cpu_count()}
    ours, theirs = [], []
    for _ in range(args.repeat):
        seconds, peak = timed(extract_command(args, args.input))
        ours.append(seconds)
        print('bert-dml: %.2f s, %.1f sentences/s, peak %.0f MiB'
              % (seconds, lines / seconds, peak), flush=True)
        if args.reference_python:
            ref_seconds, _ = timed(
                [args.reference_python, '-c', REFERENCE_SCRIPT, args.reference_model,
                 str(args.input), str(args.batchsize)],
                env=dict(os.environ, HF_HUB_OFFLINE='1', TOKENIZERS_PARALLELISM='false'))
            theirs.append(ref_seconds)
            print('sentence-transformers: %.2f s, %.1f sentences/s; ratio bert-dml/st %.2f'
                  % (ref_seconds, lines / ref_seconds, ref_seconds / seconds), flush=True)
    results['bert_dml_sentences_per_s'] = round(lines / min(ours), 1)
    results['bert_dml_peak_mib'] = round(peak, 1)
    if args.tokenisation or args.torch_python:
        load, encode, ids = tokenisation(args)
        results['tokenizer_load_s'] = round(load, 2)
        results['tokenise_s'] = round(encode, 2)
        results['tokenisation_share'] = round((load + encode) / min(ours), 3)
        print('tokenisation: %.2f s to read the tokenizer, %.2f s for the lines: %.1f%% of '
              'the best whole extraction' % (load, encode, 100 * (load + encode) / min(ours)),
              flush=True)
    if args.torch_python:
        torch_seconds, torch_peak = torch_extraction(args, ids)
        results['torch_sentences_per_s'] = round(lines / torch_seconds, 1)
        results['torch_peak_mib'] = round(torch_peak, 1)
        print('plain transformers BertModel forward (ids given): %.2f s, %.1f sentences/s, '
              'peak %.0f MiB' % (torch_seconds, lines / torch_seconds, torch_peak), flush=True)
    if theirs:
        results['sentence_transformers_sentences_per_s'] = round(lines / min(theirs), 1)
        results['speed_ratio'] = round(min(theirs) / min(ours), 2)
    return results


def memory(args):
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        # A 2-layer random BERT (hidden 64) with a 1,000-word vocabulary.
        write_random_bert(tmp, ['w%d' % i for i in range(995)], shape=dict(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128))
        tiny = argparse.Namespace(vocab_file=str(tmp / 'vocab.txt'),
                                  bert_config_file=str(tmp / 'bert_config.json'),
                                  init_checkpoint=str(tmp / 'arrays_bert_model.ckpt.npz'),
                                  batchsize=args.batchsize)
        for name, count in (('short', args.short), ('long', args.long)):
            path = tmp / ('%s.txt' % name)
            with open(path, 'w') as f:
                for i in range(count):
                    words = ' '.join('w%d' % ((i * 7 + j * 13) % 995) for j in range(5 + i % 40))
                    f.write('%d\t%s\n' % (i % 3, words))
            _, peak = timed(extract_command(tiny, path))
            results['%s_lines' % name] = count
            results['%s_peak_mib' % name] = round(peak, 1)
            print('%d lines: peak %.1f MiB' % (count, results['%s_peak_mib' % name]),
                  flush=True)
    results['peak_ratio'] = round(results['long_peak_mib'] / results['short_peak_mib'], 3)
    print('peak memory ratio long/short: %.3f' % results['peak_ratio'])
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--bert_dir', default=None, metavar='DIR',
                        help='the model folder, as the scripts take it; or the three flags')
    parser.add_argument('--vocab_file', default=None)
    parser.add_argument('--bert_config_file', default=None)
    parser.add_argument('--init_checkpoint', default=None)
    parser.add_argument('--input', default=str(DATASET),
                        help='sentences to extract (default: rt-polarity/04-test.txt)')
    parser.add_argument('--batchsize', type=int, default=64)
    parser.add_argument('--repeat', type=int, default=3, help='runs; the best is reported')
    parser.add_argument('--reference_python', default=None,
                        help='a Python with sentence-transformers, to run it alongside')
    parser.add_argument('--reference_model', default=None,
                        help='the Hugging Face folder of the same model, for the reference')
    parser.add_argument('--text_prefix', default='', help='extruct_bert_embed.py\'s')
    parser.add_argument('--max_seq_length', type=int, default=128,
                        help='extruct_bert_embed.py\'s default (for --tokenisation)')
    parser.add_argument('--tokenisation', action='store_true',
                        help='also time reading the tokenizer and tokenising --input here, '
                             'as a share of the whole extraction')
    parser.add_argument('--torch_python', default=None,
                        help='a Python with torch and transformers: a plain float32 '
                             'BertModel forward over the same ids (bench/torch_bert_forward.py)')
    parser.add_argument('--memory', action='store_true',
                        help='also check that peak memory is flat in the input length')
    parser.add_argument('--short', type=int, default=10000)
    parser.add_argument('--long', type=int, default=200000)
    parser.add_argument('--json', default=None, help='also write the figures to this file')
    args = parser.parse_args()
    from bertlib import flags
    from bertlib.errors import UsageError
    try:
        flags.resolve_bert_dir(args)  # the scripts' own rule for --bert_dir
    except UsageError as e:
        parser.error(str(e))
    if not pathlib.Path(args.input).exists():
        print('skipped: %s is absent' % args.input)
        return
    if args.reference_python and not args.reference_model:
        parser.error('--reference_python needs --reference_model')
    results = {'speed': speed(args)}
    if args.memory:
        results['memory'] = memory(args)
    print(json.dumps(results, indent=2))
    if args.json:
        pathlib.Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(args.json).write_text(json.dumps(results, indent=2) + '\n')


if __name__ == '__main__':
    main()
