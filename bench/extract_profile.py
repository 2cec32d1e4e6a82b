#!/usr/bin/env python
"""Where the time and the bytes of one extraction go: a whole extruct_bert_embed.py run
taken apart into its stages, in one process, as the script does them.

Stages: imports (interpreter start to bertlib, Chainer and NumPy imported), reading the
config and checking the checkpoint's headers, loading the tokenizer, building the model,
reading the npz into it, tokenising every line, the forward passes (length-sorted
batches, as `bertlib.length_batching.encode_sorted`), formatting the TSV rows. For each: wall
seconds, the resident memory after it (MiB) and the process's peak so far (MiB).
The script overlaps reading with encoding; here they run one after the other, so the
stages add up to a little more than a real run.

    python bench/extract_profile.py --model_dir BERT/multilingual-e5-small \\
        --input results/mlit-600-joined.txt --text_prefix 'passage: '
"""

import time

START = time.perf_counter()

import argparse  # noqa: E402
import io  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402

import chainer  # noqa: E402
import numpy as np  # noqa: E402

from bertlib import bert_loading, data, features, length_batching, modeling, process  # noqa: E402


def rss_mib():
    """Resident memory now, MiB (from /proc; 0 where there is none)."""
    try:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2.0 ** 20
    except OSError:
        return 0.0


def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class Stages(object):
    def __init__(self):
        self.rows = []
        self.last = START

    def __call__(self, name):
        now = time.perf_counter()
        self.rows.append((name, now - self.last, rss_mib(), peak_mib()))
        self.last = now

    def table(self):
        total = sum(row[1] for row in self.rows)
        lines = ['| stage | seconds | share | RSS after, MiB | peak so far, MiB |',
                 '|---|---|---|---|---|']
        for name, seconds, rss, peak in self.rows:
            lines.append('| %s | %.2f | %.0f%% | %.0f | %.0f |'
                         % (name, seconds, 100 * seconds / total, rss, peak))
        lines.append('| total | %.2f | | | %.0f |' % (total, self.rows[-1][3]))
        return '\n'.join(lines)


def main():
    stages = Stages()
    stages('start-up and imports')
    process.keep_freed_memory()  # as process.run does for every script
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model_dir', required=True)
    parser.add_argument('--input', required=True)
    parser.add_argument('--text_prefix', default='')
    parser.add_argument('--batchsize', type=int, default=64)
    parser.add_argument('--pooling', default='mean')
    args = parser.parse_args()
    folder = args.model_dir
    vocab = os.path.join(folder, 'tokenizer.json')
    if not os.path.exists(vocab):
        vocab = os.path.join(folder, 'vocab.txt')
    flags = argparse.Namespace(
        vocab_file=vocab, bert_config_file=os.path.join(folder, 'bert_config.json'),
        init_checkpoint=os.path.join(folder, 'arrays_bert_model.ckpt.npz'),
        do_lower_case='auto', text_prefix=args.text_prefix, max_seq_length=128)

    config = bert_loading.read_bert_config(flags.bert_config_file)
    modeling.check_pretrained(config, flags.init_checkpoint, flags.bert_config_file)
    stages('config, checkpoint headers')
    tokenizer = bert_loading.load_tokenizer(flags, config)
    stages('tokenizer (%s, %.1f MB)' % (os.path.basename(vocab), os.path.getsize(vocab) / 1e6))
    bert = modeling.BertModel(config, random_init=False)
    stages('model built')
    try:
        modeling.load_pretrained(bert, flags.init_checkpoint, read_only=True)
    except TypeError:  # a bertlib from before read_only (for the figures before)
        modeling.load_pretrained(bert, flags.init_checkpoint)
    stages('weights read (%.0f MB npz)' % (os.path.getsize(flags.init_checkpoint) / 1e6))
    texts = [example.text for example in data.iter_examples(args.input)]
    id_lists = [tokenizer.encode(text, flags.max_seq_length)[0] for text in texts]
    tokens = sum(len(ids) for ids in id_lists)
    stages('reading and tokenising %d lines (%d tokens)' % (len(texts), tokens))

    def encode(input_ids, input_mask):
        return bert.encode(input_ids, input_mask, pooling=args.pooling)
    vectors = length_batching.encode_sorted(id_lists, encode, args.batchsize)
    stages('forward, batch %d' % args.batchsize)
    out = io.StringIO()
    for vector in vectors:
        out.write(features.format_row('', vector))
    stages('formatting %.1f MB of TSV' % (len(out.getvalue()) / 1e6))
    print(stages.table())
    print('dtype of the features: %s; chainer %s, numpy %s'
          % (vectors.dtype, chainer.__version__, np.__version__))


if __name__ == '__main__':
    main()
