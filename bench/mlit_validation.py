#!/usr/bin/env python
"""A validation fold of MLIT's split-train.txt, to choose a recipe without split-test.txt.

One fifth of mlit/split-train.txt (832 of 4,158 lines, drawn per class, seeded) is held out
as the validation file and train_dml.py learns on the other 3,326, with the held-out lines
as --eval: its log gives precision@1 and MAP@R after every epoch. Then the held-out lines'
features are scored with leave-one-out cosine retrieval (precision@1, MAP@R):

  - dml:        extruct_bert_metrics.py from final.model;
  - pretrained: extruct_bert_embed.py, the same BERT without fine-tuning, --pooling mean;
  - tfidf:      a TF-IDF bag of words (MLIT's space-separated words, IDF fitted on the
                training lines).

With --join_words the BERT features read the text with the spaces between MLIT's words
removed (MLIT has no space between two ASCII characters, so nothing else is lost); TF-IDF
keeps them. The settings of disjoint_classes.py (supcon, temperature 0.3, rate 1e-4, mean
pooling) are the defaults; arguments after `--` go to train_dml.py and override them.

    nice python bench/mlit_validation.py --model_dir BERT/multilingual-e5-small \\
        --text_prefix 'query: ' --embed_prefix 'passage: ' --out results/val/all-spaced \\
        -- --batchsize 64 --sampling random
Prints a Markdown table and writes <out>/scores.json.
"""

import argparse
import json
import pathlib
import sys
import time

import disjoint_classes as dc
from bertlib.projection import stratified_sample

VALIDATION_SHARE = 0.2
SEED = 0


def fold(rows):
    """(training rows, validation rows): VALIDATION_SHARE of `rows` held out per class."""
    held = set(stratified_sample([label for label, _ in rows],
                                 round(VALIDATION_SHARE * len(rows)), SEED).tolist())
    return ([r for i, r in enumerate(rows) if i not in held],
            [r for i, r in enumerate(rows) if i in held])


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--epoch', type=int, default=2)
    parser.add_argument('--model_dir', default=str(dc.MODEL),
                        help='converted model folder (default: the demo model)')
    parser.add_argument('--text_prefix', default='',
                        help="train_dml.py's --text_prefix (multilingual-e5: 'query: ')")
    parser.add_argument('--embed_prefix', default=None,
                        help='the pre-trained features\' --text_prefix (default: --text_prefix)')
    parser.add_argument('--join_words', action='store_true',
                        help='remove the spaces between words before BERT reads the text')
    parser.add_argument('--out', required=True, help='folder of the run\'s files')
    parser.add_argument('train_dml_args', nargs='*')
    args = parser.parse_args()
    dc.MODEL, out = pathlib.Path(args.model_dir), pathlib.Path(args.out)
    embed_prefix = args.text_prefix if args.embed_prefix is None else args.embed_prefix
    out.mkdir(parents=True, exist_ok=True)
    train_rows, valid_rows = fold(dc.read(dc.DATA / 'split-train.txt'))
    train_file, valid_file = out / 'fold-train.txt', out / 'fold-valid.txt'
    dc.write(train_file, train_rows, args.join_words)
    dc.write(valid_file, valid_rows, args.join_words)
    print('%d training, %d validation lines' % (len(train_rows), len(valid_rows)),
          file=sys.stderr)

    start = time.time()
    dml = out / 'dml'
    train_seconds = dc.train_dml(train_file, valid_file, dml, args.epoch, args.text_prefix,
                                 args.train_dml_args)
    dc.extract('extruct_bert_metrics.py', ['--model', str(dml / 'final.model'),
                                           '--label', str(dml / 'labels.bin')],
               valid_file, out / 'dml-valid.tsv')
    dc.extract('extruct_bert_embed.py', ['--pooling', 'mean', '--text_prefix', embed_prefix],
               valid_file, out / 'pretrained-valid.tsv')
    results = {
        'dml': dc.score(*dc.read_features(out / 'dml-valid.tsv')),
        'pretrained': dc.score(*dc.read_features(out / 'pretrained-valid.tsv')),
        'tfidf': dc.score(dc.tfidf(train_rows, valid_rows), [label for label, _ in valid_rows]),
    }
    from bertlib.training import read_log
    epochs = [{'epoch': r['epoch'], 'precision_at_1': r['D/acc1'], 'map_at_r': r['D/acc2']}
              for r in read_log(str(dml / 'log.jsonl'))]
    report = {'model': str(dc.MODEL), 'text_prefix': args.text_prefix,
              'embed_prefix': embed_prefix, 'join_words': args.join_words,
              'train_dml_args': args.train_dml_args, 'train_lines': len(train_rows),
              'valid_lines': len(valid_rows), 'epoch': args.epoch,
              'train_seconds': train_seconds, 'total_seconds': time.time() - start,
              'scores': results, 'epochs': epochs}
    (out / 'scores.json').write_text(json.dumps(report, ensure_ascii=False, indent=2))
    print('| features (%d validation lines of split-train, 16 classes) | precision@1 | MAP@R |'
          '\n|---|---|---|' % len(valid_rows))
    for name, s in results.items():
        print('| %s | %.3f | %.3f |' % (name, s['precision_at_1'], s['map_at_r']))
    for e in epochs:
        print('| dml after epoch %d (train_dml.py\'s log) | %.3f | %.3f |'
              % (e['epoch'], e['precision_at_1'], e['map_at_r']))
    print('train_dml.py: %d epochs in %.0f s; whole run %.0f s'
          % (args.epoch, train_seconds, report['total_seconds']))


if __name__ == '__main__':
    main()
