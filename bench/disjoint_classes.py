#!/usr/bin/env python
"""Deep metric learning on classes unseen in training, on MLIT (CPU): the demo model by
default, or another converted model (`--model_dir BERT/multilingual-e5-small`).

The classes of mlit/split-train.txt are ranked by size and dealt alternately: 8 train
classes (ranks 1, 3, 5, ...) and 8 test classes (ranks 2, 4, 6, ...), so both halves
hold large and small classes. train_dml.py learns on the split-train lines of the 8 train
classes (with the lines of the 8 test classes in split-test.txt as --eval, which only
reports); then three kinds of features of those eval lines are scored with leave-one-out
cosine retrieval (precision@1, MAP@R) on their own 8 labels:

  - dml:        extruct_bert_metrics.py from final.model (never saw these classes);
  - pretrained: extruct_bert_embed.py, the same BERT without fine-tuning, --pooling mean;
  - tfidf:      a TF-IDF bag of words (space-separated words; IDF fitted on the training
                lines, so nothing is learnt from the test lines).

With --validation the test classes' lines come from split-train.txt too (1,693 lines),
so a recipe is chosen without looking at split-test.txt. With --join_words the BERT
features read MLIT's text with the spaces between its words removed (TF-IDF keeps them).

    nice -n 10 python bench/disjoint_classes.py --epoch 2
    nice -n 10 python bench/disjoint_classes.py --epoch 2 --model_dir BERT/multilingual-e5-small \
        --text_prefix 'query: ' --embed_prefix 'passage: ' --out results/disjoint-e5
Prints a Markdown table and writes results/disjoint/scores.json.
Arguments after `--` go to train_dml.py as they are.
"""

import argparse
import collections
import json
import pathlib
import subprocess
import sys
import time

import numpy as np

from bertlib.testing import DATASETS, ROOT

DATA = DATASETS / 'mlit'
MODEL = ROOT / 'BERT' / 'all-MiniLM-L6-v2'
OUT = ROOT / 'results' / 'disjoint'


def model_flags():
    """The three model flags of MODEL: its tokenizer.json (SentencePiece) if it has one,
    else its vocab.txt."""
    vocab = MODEL / 'tokenizer.json'
    if not vocab.exists():
        vocab = MODEL / 'vocab.txt'
    return ['--vocab_file', str(vocab),
            '--bert_config_file', str(MODEL / 'bert_config.json'),
            '--init_checkpoint', str(MODEL / 'arrays_bert_model.ckpt.npz')]


def read(path):
    with open(path, encoding='utf-8') as f:
        return [line.rstrip('\n').split('\t', 1) for line in f if line.strip()]


def deal_classes(rows):
    """(train classes, test classes): ranked by size, dealt alternately."""
    ranked = [label for label, _ in collections.Counter(r[0] for r in rows).most_common()]
    return ranked[0::2], ranked[1::2]


def write(path, rows, join_words=False):
    path.write_text(''.join('%s\t%s\n' % (label, text.replace(' ', '') if join_words else text)
                            for label, text in rows), encoding='utf-8')


def run(command, stdout=None):
    print('$ ' + ' '.join(command), file=sys.stderr, flush=True)
    subprocess.run(command, check=True, cwd=str(ROOT), stdout=stdout)


# train_dml.py's recipe in both MLIT benches (arguments after `--` come later and win).
RECIPE = ['--loss', 'supcon', '--pooling', 'mean', '--learnrate', '1e-4',
          '--temperature', '0.3']


def train_dml(train, evaluation, out, epoch, text_prefix, extra):
    """Runs train_dml.py with RECIPE on MODEL into folder `out`; its wall seconds."""
    start = time.time()
    run([sys.executable, 'train_dml.py', '--train', str(train), '--eval', str(evaluation),
         '--epoch', str(epoch)] + RECIPE + ['--out', str(out), '--text_prefix', text_prefix]
        + model_flags() + extra)
    return time.time() - start


def extract(script, extra, source, path):
    """Writes the features of file `source` by extraction script `script` to `path`."""
    with open(path, 'w', encoding='utf-8') as f:
        run([sys.executable, script, '--input', str(source)] + model_flags() + extra,
            stdout=f)


def score(vectors, labels):
    from bertlib.metrics import retrieval_metrics
    s = retrieval_metrics(np.asarray(vectors, dtype=np.float32), labels)
    return {'precision_at_1': s['precision_at_1'], 'map_at_r': s['map_at_r']}


def read_features(path):
    from bertlib.featurefile import read_features as reader
    labels, vectors = reader(str(path))[:2]
    return vectors, labels


def tfidf(train_rows, eval_rows):
    from sklearn.feature_extraction.text import TfidfVectorizer
    vectorizer = TfidfVectorizer(token_pattern=r'\S+', lowercase=False)
    vectorizer.fit([text for _, text in train_rows])
    return vectorizer.transform([text for _, text in eval_rows]).toarray()


def main():
    global MODEL, OUT
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--epoch', type=int, default=2)
    parser.add_argument('--model_dir', default=str(MODEL),
                        help='converted model folder (default: the demo model)')
    parser.add_argument('--text_prefix', default='',
                        help="train_dml.py's --text_prefix (multilingual-e5: 'query: ')")
    parser.add_argument('--embed_prefix', default=None,
                        help='the pre-trained features\' --text_prefix (default: --text_prefix)')
    parser.add_argument('--out', default=str(OUT), help='folder of the run\'s files')
    parser.add_argument('--validation', action='store_true',
                        help='score on the split-train lines of the test classes, not split-test')
    parser.add_argument('--join_words', action='store_true',
                        help='remove the spaces between words before BERT reads the text')
    parser.add_argument('train_dml_args', nargs='*')
    args = parser.parse_args()
    MODEL, OUT = pathlib.Path(args.model_dir), pathlib.Path(args.out)
    embed_prefix = args.text_prefix if args.embed_prefix is None else args.embed_prefix
    OUT.mkdir(parents=True, exist_ok=True)
    train_all, test_all = read(DATA / 'split-train.txt'), read(DATA / 'split-test.txt')
    train_classes, test_classes = deal_classes(train_all)
    train_rows = [r for r in train_all if r[0] in train_classes]
    eval_rows = [r for r in (train_all if args.validation else test_all)
                 if r[0] in test_classes]
    write(OUT / 'train-8.txt', train_rows, args.join_words)
    write(OUT / 'eval-8.txt', eval_rows, args.join_words)
    print('train classes (%d lines): %s\ntest classes (%d lines): %s'
          % (len(train_rows), ', '.join(train_classes), len(eval_rows),
             ', '.join(test_classes)), file=sys.stderr)

    start = time.time()
    dml = OUT / 'dml'
    train_seconds = train_dml(OUT / 'train-8.txt', OUT / 'eval-8.txt', dml, args.epoch,
                              args.text_prefix, args.train_dml_args)
    extract('extruct_bert_metrics.py', ['--model', str(dml / 'final.model'),
                                        '--label', str(dml / 'labels.bin')],
            OUT / 'eval-8.txt', OUT / 'dml-eval-8.tsv')
    extract('extruct_bert_embed.py', ['--pooling', 'mean', '--text_prefix', embed_prefix],
            OUT / 'eval-8.txt', OUT / 'pretrained-eval-8.tsv')

    labels = [label for label, _ in eval_rows]
    results = {
        'dml': score(*read_features(OUT / 'dml-eval-8.tsv')),
        'pretrained': score(*read_features(OUT / 'pretrained-eval-8.tsv')),
        'tfidf': score(tfidf(train_rows, eval_rows), labels),
    }
    report = {'model': str(MODEL), 'text_prefix': args.text_prefix,
              'validation': args.validation, 'join_words': args.join_words,
              'embed_prefix': embed_prefix, 'train_classes': train_classes, 'test_classes': test_classes,
              'train_lines': len(train_rows), 'eval_lines': len(eval_rows),
              'epoch': args.epoch, 'train_seconds': train_seconds,
              'total_seconds': time.time() - start, 'scores': results}
    (OUT / 'scores.json').write_text(json.dumps(report, ensure_ascii=False, indent=2))
    print('| features (%d %s lines, 8 unseen classes) | precision@1 | MAP@R |\n|---|---|---|'
          % (len(eval_rows), 'split-train' if args.validation else 'test'))
    for name, s in results.items():
        print('| %s | %.3f | %.3f |' % (name, s['precision_at_1'], s['map_at_r']))
    print('train_dml.py: %d epochs in %.0f s; whole run %.0f s'
          % (args.epoch, train_seconds, report['total_seconds']))


if __name__ == '__main__':
    main()
