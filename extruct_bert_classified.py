#!/usr/bin/env python
"""Classifier-fine-tuned features ("Classified (fine-tuning)") of each input line, as TSV.

--model is a model written by train_classifier.py (e.g. early_stopped-uar.model) and
--label its labels.bin. The features are the fine-tuned BERT's pooled output. Input lines
are `label<TAB>text` or bare `text`; output lines `label<TAB>f1<TAB>f2...` (six
decimals) in input order, bare-text lines with an empty label.

Example:
    python extruct_bert_classified.py --input datasets/rt-polarity/04-test.txt \\
        --vocab_file BERT/all-MiniLM-L6-v2/vocab.txt \\
        --bert_config_file BERT/all-MiniLM-L6-v2/bert_config.json \\
        --init_checkpoint BERT/all-MiniLM-L6-v2/arrays_bert_model.ckpt.npz \\
        --model models/classified/rt-polarity/early_stopped-uar.model \\
        --label models/classified/rt-polarity/labels.bin \\
        --gpu -1 --batchsize 64 > features/rt-clsed-04-test.txt

On N processes (each encodes its share, rank 0 reads --input and writes, in input order):
    mpiexec -n N python extruct_bert_classified.py --communicator naive ...
"""

from bertlib import bert_loading, checkpoints, classifier, features, flags, process


def main(argv=None):
    args = parse_args(argv)
    comm, total, device = features.start(args)
    labels = checkpoints.load_model_labels(args.model, args.label, 'classifier')
    flags.settle_text_prefix(args, args.model)
    config, tokenizer, bert = bert_loading.load_bert(args, load_weights=False)
    model = classifier.ClassifierModel(bert, len(labels))
    checkpoints.load_model(args.model, model, read_only=True)
    model.to_device(device)
    features.run(args, tokenizer, model.features, device.xp, total, comm)


def parse_args(argv=None):
    parser = features.argument_parser(__doc__)
    group = parser.add_argument_group('fine-tuned model')
    group.add_argument('--model', required=True,
                       help='final.model or early_stopped-*.model from train_classifier.py')
    group.add_argument('--label', required=True, help='labels.bin of that training run')
    return parser.parse_args(argv)


if __name__ == '__main__':
    process.run(main)
