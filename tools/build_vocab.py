#!/usr/bin/env python
"""Builds a cased WordPiece vocabulary from labelled text, for a BERT trained from scratch.

The vocabulary holds the special tokens, every character seen at least --min_count times
(as itself and as a '##' continuation, so any word made of known characters can be
spelled), and then the most frequent whole words up to --size entries. Words come from
BERT's basic tokenizer without lower-casing and without splitting CJK characters, which
is how Japanese word-segmented text such as MLIT's is meant to be read.

    python tools/build_vocab.py ../shared/datasets/mlit/split-train.txt \
        --size 8000 --output BERT/mlit-small/vocab.txt
"""

import argparse
import collections
import os

from bertlib import data, tokenization

SPECIALS = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']


def build_vocab(paths, size, min_count=1):
    basic = tokenization.BasicTokenizer(do_lower_case=False, tokenize_chinese_chars=False)
    words = collections.Counter()
    for path in paths:
        for example in data.iter_examples(path):
            words.update(basic.tokenize(example.text))
    chars = collections.Counter()
    for word, count in words.items():
        for char in word:
            chars[char] += count
    alphabet = sorted(c for c, n in chars.items() if n >= min_count)
    vocab = list(SPECIALS) + alphabet + ['##' + c for c in alphabet]
    seen = set(vocab)
    for word, _ in words.most_common():
        if len(vocab) >= size:
            break
        if word not in seen and len(word) > 1:
            vocab.append(word)
            seen.add(word)
    return vocab


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('inputs', nargs='+', help='label<TAB>text files')
    parser.add_argument('--size', type=int, default=8000, help='entries at most')
    parser.add_argument('--min_count', type=int, default=1,
                        help='characters seen fewer times become [UNK]')
    parser.add_argument('--output', required=True, help='vocab.txt to write')
    args = parser.parse_args()
    vocab = build_vocab(args.inputs, args.size, args.min_count)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, 'w', encoding='utf-8') as f:
        f.write('\n'.join(vocab) + '\n')
    print('wrote %d entries to %s' % (len(vocab), args.output))


if __name__ == '__main__':
    main()
