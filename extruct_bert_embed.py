#!/usr/bin/env python
"""Pre-trained BERT features (no fine-tuning) of each input line, as TSV on stdout.

Input lines are `label<TAB>text` or bare `text`; empty lines are skipped. Each output line
is `label<TAB>f1<TAB>f2...` (six decimals), in input order; bare-text lines get an empty
label. Logs and progress go to stderr.

Example:
    python extruct_bert_embed.py --input datasets/rt-polarity/04-test.txt \\
        --vocab_file BERT/all-MiniLM-L6-v2/vocab.txt \\
        --bert_config_file BERT/all-MiniLM-L6-v2/bert_config.json \\
        --init_checkpoint BERT/all-MiniLM-L6-v2/arrays_bert_model.ckpt.npz \\
        --gpu -1 --batchsize 64 > features/rt-embed-04-test.txt

On N processes (each encodes its share, rank 0 reads --input and writes, in input order):
    mpiexec -n N python extruct_bert_embed.py --communicator naive ...
"""

import logging

from bertlib import cli, extraction, features, modeling

logger = logging.getLogger(__name__)


def main(argv=None):
    args = parse_args(argv)
    comm, total, device = extraction.start(args)
    config, tokenizer, bert = cli.load_bert(args, read_only=True)
    bert.to_device(device)

    def encode(input_ids, input_mask):
        return bert.encode(input_ids, input_mask, pooling=args.pooling)

    features.run(args, tokenizer, encode, device.xp, total, comm)


def parse_args(argv=None):
    parser = extraction.argument_parser(__doc__)
    parser.add_argument('--pooling', choices=modeling.POOLINGS, default='pooled',
                        help="sentence vector: 'pooled' is tanh(W h_[CLS]), the original "
                             "BERT-DML's feature; 'cls' the raw [CLS] state; 'mean' the "
                             "average over real tokens, as sentence-transformers "
                             "(default: pooled)")
    return parser.parse_args(argv)


if __name__ == '__main__':
    cli.run(main)
