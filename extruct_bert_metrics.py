#!/usr/bin/env python
"""Metric-learned (DML) features of each input line, as TSV on stdout.

--model is a `final.model` or `early_stopped-*.model` written by train_dml.py and --label
its `labels.bin`. The features are the model's --dim-dimensional embeddings (the BERT
sentence vector itself for a model trained with --head none). A model that stores a
centre (the mean of its unit-length training embeddings; train_dml.py saves one) gives
unit-length features with the centre subtracted, unless --no_centre. Input lines
are `label<TAB>text` or bare `text`; output lines `label<TAB>f1<TAB>f2...` (six decimals)
in input order, bare-text lines with an empty label. Input labels outside labels.bin are
written as they are (classes the model never saw are what metric learning is evaluated
on; --interpolate blends the fine-tuned BERT with the pre-trained one for them). A model
written by the original BERT-DML's train_dml.py (no metadata) is read as what it
trained: pooled output to the stored dimension.

Example:
    python extruct_bert_metrics.py --input datasets/rt-polarity/04-test.txt \\
        --vocab_file BERT/all-MiniLM-L6-v2/vocab.txt \\
        --bert_config_file BERT/all-MiniLM-L6-v2/bert_config.json \\
        --init_checkpoint BERT/all-MiniLM-L6-v2/arrays_bert_model.ckpt.npz \\
        --model models/metrics/rt-polarity/final.model \\
        --label models/metrics/rt-polarity/labels.bin \\
        --gpu -1 --batchsize 64 > features/rt-dml-04-test.txt

On N processes (each encodes its share, rank 0 reads --input and writes, in input order):
    mpiexec -n N python extruct_bert_metrics.py --communicator naive ...
"""

from bertlib import bert_loading, checkpoints, dml, features, flags, modeling, process
from bertlib.errors import UsageError


def main(argv=None):
    args = parse_args(argv)
    comm, total, device = features.start(args)
    checkpoints.load_model_labels(args.model, args.label, 'dml')
    flags.settle_text_prefix(args, args.model)
    meta = dml.read_meta(args.model)
    head = meta['head']
    shape = checkpoints.array_shape(args.model, 'output/W')
    if shape is None and head == 'linear':
        raise UsageError('%s has no embedding layer (output/W): not a train_dml.py model'
                         % args.model)
    # --interpolate blends with the pre-trained weights: those of --init_checkpoint.
    config, tokenizer, bert = bert_loading.load_bert(args, load_weights=args.interpolate < 1)
    pretrained = bert.copy(mode='copy') if args.interpolate < 1 else None
    pooling = args.pooling or meta['pooling']
    dim = shape[0] if head == 'linear' else config.hidden_size
    model = dml.DMLModel(bert, dim=dim, pooling=pooling, head=head)
    # Memory-mapped, read-only weights, unless --interpolate writes into them.
    checkpoints.load_model(args.model, model, ignore_prefixes=('loss/',),
                           read_only=pretrained is None)
    if pretrained is not None:
        dml.interpolate(model.bert, pretrained, args.interpolate)
    if not args.no_centre:
        model.centre = dml.read_centre(meta, dim, args.model)
    model.to_device(device)
    features.run(args, tokenizer, model.features, device.xp, total, comm)


def parse_args(argv=None):
    parser = features.argument_parser(__doc__)
    group = parser.add_argument_group('fine-tuned model')
    group.add_argument('--model', required=True,
                       help='final.model or early_stopped-*.model from train_dml.py')
    group.add_argument('--label', required=True, help='labels.bin of that training run')
    group.add_argument('--pooling', choices=modeling.POOLINGS, default=None,
                       help='override the pooling recorded in the model (default: as '
                            'trained)')
    group.add_argument('--no_centre', action='store_true',
                       help='write the raw embeddings, without subtracting the centre the '
                            'model stores (models without one always give raw ones)')
    group.add_argument('--interpolate', default=1.0, metavar='ALPHA',
                       type=flags.real('--interpolate', 0, 1),
                       help="BERT's weights become ALPHA x the fine-tuned ones + (1 - "
                            'ALPHA) x the pre-trained ones of --init_checkpoint (WiSE-FT); '
                            'the head and the centre stay as trained. Lower values give '
                            'features closer to the pre-trained model\'s (for classes '
                            'unseen in training: docs/unseen-classes.md); 0 to 1 '
                            '(default: 1, the fine-tuned weights)')
    return parser.parse_args(argv)


if __name__ == '__main__':
    process.run(main)
