#!/usr/bin/env python
"""Scores a classifier saved by train_classifier.py, or predicts with it.

Without --predict, --input is a labelled file (`label<TAB>text`) and the confusion matrix
(counts and rates), accuracy, UAR and scikit-learn's classification report are printed.
Labels the model does not know are reported and counted as errors.

With --predict, --input lines are `text` (a `label<TAB>` in front is ignored) and each
output line is `predicted_label<TAB>probability<TAB>text`, in input order.

Example:
    python test_classifier.py --input datasets/rt-polarity/04-test.txt \\
        --vocab_file BERT/all-MiniLM-L6-v2/vocab.txt \\
        --bert_config_file BERT/all-MiniLM-L6-v2/bert_config.json \\
        --init_checkpoint BERT/all-MiniLM-L6-v2/arrays_bert_model.ckpt.npz \\
        --model models/classified/rt-polarity/early_stopped-uar.model \\
        --label models/classified/rt-polarity/labels.bin
"""

import argparse
import collections
import logging
import sys

import bertlib  # noqa: F401  first: it makes Chainer 7.8.1 importable on NumPy 2 (compat.py)
import chainer
import chainer.functions as F
import numpy as np

from bertlib import (bert_loading, checkpoints, classifier, devices, features, flags,
                     length_batching, process)
from bertlib.errors import UsageError

logger = logging.getLogger(__name__)


def main(argv=None):
    args = parse_args(argv)
    flags.check_bert_arguments(args)
    if features.check_io(args, flags.input_files(args)) == 0:
        raise_no_sentences(args)
    device = devices.select_device(args.gpu)
    label_to_id = checkpoints.load_model_labels(args.model, args.label, 'classifier')
    flags.settle_text_prefix(args, args.model)
    names = [label for label, _ in sorted(label_to_id.items(), key=lambda item: item[1])]
    config, tokenizer, bert = bert_loading.load_bert(args, load_weights=False)
    model = classifier.ClassifierModel(bert, len(names))
    checkpoints.load_model(args.model, model, read_only=True)
    model.to_device(device)

    def probabilities(input_ids, input_mask):
        return F.softmax(model.logits(input_ids, input_mask))

    examples = list(features.read_examples(args, require_label=not args.predict))
    if not examples:  # standard input, which check_io cannot count beforehand
        raise_no_sentences(args)
    ids = [tokenizer.encode(e.text, args.max_seq_length)[0] for e in examples]
    probs = length_batching.encode_sorted(ids, probabilities, args.batchsize, device.xp)
    predicted = probs.argmax(axis=1)
    if args.predict:
        write_predictions(args.output, examples, predicted, probs, names)
        return
    unknown = collections.Counter(e.label for e in examples if e.label not in label_to_id)
    if unknown:
        logger.warning('%s: %d lines have labels the model does not know, counted as '
                       'errors: %s', args.input, sum(unknown.values()),
                       ', '.join('%r (%d)' % item for item in unknown.most_common(10)))
    # An unknown label gets the id K, which no prediction can equal.
    truth = np.array([label_to_id.get(e.label, len(names)) for e in examples])
    known = truth < len(names)
    if known.any():
        print(classifier.report(truth[known], predicted[known], names))
    else:
        print('no line of %s has a label the model knows: no confusion matrix'
              % args.input)
    if unknown:
        print('accuracy counting the %d lines with unknown labels as errors: %.4f'
              % (int((~known).sum()), float(np.mean(truth == predicted))))


def raise_no_sentences(args):
    raise UsageError('%s: no sentences (only blank lines%s)'
                     % (args.input, ' up to --max_length' if args.max_length else ''))


def write_predictions(output, examples, predicted, probs, names):
    from bertlib.fileio import atomic_write

    def write(stream):
        for example, k, row in zip(examples, predicted, probs):
            stream.write('%s\t%.6f\t%s\n' % (names[k], row[k], example.text))
    if output == '-':
        sys.stdout.reconfigure(encoding='utf-8', newline='\n')
        write(sys.stdout)
    else:
        with atomic_write(output) as stream:
            write(stream)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    features.add_io_arguments(parser)
    flags.add_bert_arguments(parser)
    group = parser.add_argument_group('fine-tuned model')
    group.add_argument('--model', required=True,
                       help='final.model or early_stopped-*.model from train_classifier.py')
    group.add_argument('--label', required=True, help='labels.bin of that training run')
    group.add_argument('--predict', action='store_true',
                       help='predict labels of unlabelled text instead of scoring')
    return parser.parse_args(argv)


if __name__ == '__main__':
    with chainer.using_config('train', False):
        process.run(main)
