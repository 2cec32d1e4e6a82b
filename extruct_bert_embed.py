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
import os

from bertlib import bert_loading, features, flags, modeling, process, sentence_pipeline

logger = logging.getLogger(__name__)


def main(argv=None):
    args = parse_args(argv)
    recorded = settle_pipeline(args)
    comm, total, device = features.start(args)
    config, tokenizer, bert = bert_loading.load_bert(args, read_only=True)
    bert.to_device(device)

    if recorded is not None:
        encode = sentence_pipeline.encoder(bert, recorded[0], recorded[1])
    else:
        def encode(input_ids, input_mask):
            return bert.encode(input_ids, input_mask, pooling=args.pooling)

    features.run(args, tokenizer, encode, device.xp, total, comm)


def settle_pipeline(args):
    """The pipeline a converted sentence-transformers folder recorded in --init_checkpoint
    (`sentence_pipeline.load`), which sets the defaults of --pooling (its own pooling,
    Dense and Normalize modules), --text_prefix (its default prompt) and
    --max_seq_length; None where there is none or --pooling was given."""
    flags.resolve_bert_dir(args)  # the recorded pipeline lives in --bert_dir's checkpoint
    recorded = None
    if os.path.isfile(args.init_checkpoint):
        recorded = sentence_pipeline.load(args.init_checkpoint)
    if recorded is not None and args.pooling is not None:
        logger.info('--pooling %s: the sentence-transformers modules recorded in %s are '
                    'not applied', args.pooling, args.init_checkpoint)
        recorded = None
    if recorded is None:
        args.pooling = args.pooling or 'pooled'
        args.max_seq_length = args.max_seq_length or 128
        return None
    steps, _, prefix, length = recorded
    if args.text_prefix is None:
        args.text_prefix = prefix
    if args.max_seq_length is None:
        args.max_seq_length = length or 128
    logger.info('%s: sentence-transformers modules %s, text prefix %r, max_seq_length %d',
                args.init_checkpoint,
                ' -> '.join(kind if value is None else '%s %s' % (kind, value)
                            for kind, value in steps),
                args.text_prefix, args.max_seq_length)
    return recorded


def parse_args(argv=None):
    parser = features.argument_parser(__doc__)
    parser.add_argument('--pooling', choices=modeling.POOLINGS, default=None,
                        help="sentence vector: 'pooled' is tanh(W h_[CLS]), the original "
                             "BERT-DML's feature; 'cls' the raw [CLS] state; 'mean' the "
                             "average over real tokens, as sentence-transformers "
                             "(default: pooled; for a sentence-transformers folder that "
                             "python -m bertlib.convert converted, its own modules, "
                             "prompt and truncation length, as SentenceTransformer.encode)")
    # None: 128, or the length a converted sentence-transformers folder recorded.
    parser.set_defaults(max_seq_length=None)
    return parser.parse_args(argv)


if __name__ == '__main__':
    process.run(main)
