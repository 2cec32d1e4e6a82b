#!/usr/bin/env python
"""Japanese end to end: a small BERT trained from scratch on MLIT with metric learning.

1. builds a cased WordPiece vocabulary from mlit/split-train.txt (tools/build_vocab.py);
2. writes a randomly initialised BERT (2 layers, hidden 128, 2 heads) as npz + config;
3. trains it with train_dml.py (--loss and other flags after `--`) on split-train.txt;
4. extracts split-test.txt features with extruct_bert_metrics.py and scores precision@1
   and MAP@R, next to a TF-IDF bag of words and the majority class on the same split.

    python bench/japanese_small_bert.py --epoch 30 -- --loss supcon --learnrate 1e-3
"""

import argparse
import json
import subprocess
import sys

import numpy as np

from bertlib.featurefile import read_features
from bertlib.testing import DATASETS, ROOT, model_flags, write_random_bert
from dml_quality import split_extra

DATA = DATASETS / 'mlit'
WORK = ROOT / 'results' / 'japanese'


def baselines():
    """precision@1 / MAP@R of TF-IDF vectors (cosine) and of the majority class."""
    import collections
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer
    from bertlib import data
    from bertlib.metrics import retrieval_metrics
    train = list(data.iter_examples(str(DATA / 'split-train.txt'), require_label=True))
    test = list(data.iter_examples(str(DATA / 'split-test.txt'), require_label=True))
    vectorizer = TfidfVectorizer(token_pattern=r'[^ ]+', lowercase=False)
    vectorizer.fit([e.text for e in train])
    vectors = vectorizer.transform([e.text for e in test]).toarray().astype(np.float32)
    labels = np.array([e.label for e in test])
    tfidf = retrieval_metrics(vectors, labels)
    majority = collections.Counter(e.label for e in train).most_common(1)[0][0]
    return {'tfidf_precision_at_1': round(tfidf['precision_at_1'], 4),
            'tfidf_map_at_r': round(tfidf['map_at_r'], 4),
            'majority_class_accuracy': round(float(np.mean(labels == majority)), 4)}


def main():
    argv, extra = split_extra(sys.argv[1:])
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--epoch', type=int, default=30)
    parser.add_argument('--layers', type=int, default=2)
    parser.add_argument('--hidden', type=int, default=128)
    parser.add_argument('--heads', type=int, default=2)
    parser.add_argument('--vocab_size', type=int, default=8000)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    if not DATA.is_dir():
        print('skipped: %s is absent' % DATA)
        return
    model = WORK / 'bert'
    model.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, str(ROOT / 'tools' / 'build_vocab.py'),
                    str(DATA / 'split-train.txt'), '--size', str(args.vocab_size),
                    '--output', str(model / 'vocab.txt')], check=True)
    # vocab.txt is the one just built; a BERT of the size asked for around it.
    write_random_bert(model, seed=args.seed, shape=dict(
        hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=args.heads,
        intermediate_size=4 * args.hidden, max_position_embeddings=512, type_vocab_size=2))
    flags = model_flags(model)
    out = WORK / 'dml'
    subprocess.run([sys.executable, str(ROOT / 'train_dml.py'),
                    '--train', str(DATA / 'split-train.txt'),
                    '--eval', str(DATA / 'split-test.txt'), '--out', str(out),
                    '--epoch', str(args.epoch), '--seed', str(args.seed)] + flags + extra,
                   check=True)
    features = WORK / 'mlit-dml-split-test.txt'
    subprocess.run([sys.executable, str(ROOT / 'extruct_bert_metrics.py'),
                    '--input', str(DATA / 'split-test.txt'), '--output', str(features),
                    '--model', str(out / 'final.model'), '--label', str(out / 'labels.bin')]
                   + flags, check=True)
    from bertlib.metrics import retrieval_metrics
    labels, vectors = read_features(str(features))
    scores = retrieval_metrics(vectors, np.asarray(labels))
    result = {'model': '%d layers, hidden %d, %d heads, random init'
                       % (args.layers, args.hidden, args.heads),
              'flags': extra, 'epochs': args.epoch,
              'precision_at_1': round(scores['precision_at_1'], 4),
              'map_at_r': round(scores['map_at_r'], 4)}
    result.update(baselines())
    print(json.dumps(result, indent=2, ensure_ascii=False))
    with open(ROOT / 'results' / 'japanese-small-bert.jsonl', 'a', encoding='utf-8') as f:
        f.write(json.dumps(result, ensure_ascii=False) + '\n')


if __name__ == '__main__':
    main()
