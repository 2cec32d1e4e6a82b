#!/usr/bin/env python
"""TF-IDF features of a labelled file, as a features TSV, the bag-of-words baseline of the
comparisons (bench/disjoint_classes.py scores the same one): words split on spaces, the
vocabulary and IDF fitted on TRAIN only, rows L2-normalised; prints label<TAB>f1<TAB>...
for every line of TEST.

    python bench/tfidf_features.py mlit/split-train.txt mlit/split-test.txt > tfidf.tsv
"""

import argparse
import sys

import numpy as np

from bertlib import data


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('train')
    parser.add_argument('test')
    args = parser.parse_args()
    from sklearn.feature_extraction.text import TfidfVectorizer
    train = [e.text for e in data.iter_examples(args.train, require_label=True)]
    test = list(data.iter_examples(args.test, require_label=True))
    vectorizer = TfidfVectorizer(token_pattern=r'\S+', lowercase=False).fit(train)
    vectors = vectorizer.transform([e.text for e in test]).toarray().astype(np.float32)
    out = sys.stdout
    for example, row in zip(test, vectors):
        out.write(example.label + '\t' + '\t'.join('%.6g' % v for v in row) + '\n')


if __name__ == '__main__':
    main()
