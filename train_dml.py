#!/usr/bin/env python
"""Fine-tunes BERT with deep metric learning: sentences of a class land close together.

Training and evaluation files hold one `label<TAB>text` a line. After every epoch one log
line reports T/ (training) and D/ (evaluation) loss, acc1 = precision@1 and acc2 = MAP@R
of the cosine embeddings (leave-one-out; T/ on a fixed sample of at most 2,000 training
sentences), and `final.model` / `final.state` are saved (atomically) into --out, with
`labels.bin`, `early_stopped-loss.model`, `early_stopped-map.model` and `log.jsonl`; the
curves go to `<out>.png` beside --out, where the original BERT-DML put them.

Example:
    python train_dml.py --batchsize 64 --epoch 100 \\
        --train datasets/rt-polarity/04-train.txt --eval datasets/rt-polarity/04-test.txt \\
        --init_checkpoint  BERT/all-MiniLM-L6-v2/arrays_bert_model.ckpt.npz \\
        --bert_config_file BERT/all-MiniLM-L6-v2/bert_config.json \\
        --vocab_file       BERT/all-MiniLM-L6-v2/vocab.txt \\
        --out models/metrics/rt-polarity | tee train_dml-rt.log

The same on N processes (data-parallel, ChainerMN over MPI; --batchsize is the global
batch): mpiexec -n N python train_dml.py --communicator naive ...
"""

import argparse
import logging
import math
import time

from bertlib import dml, flags, launch, losses, modeling, optimization, process, training
from bertlib.errors import UsageError

logger = logging.getLogger(__name__)


def main(argv=None):
    start = time.time()
    args = parse_args(argv)
    # With --head none the dimension is BERT's hidden size, whatever --dim says.
    same = ('pooling', 'loss', 'head', 'ema', 'memory_size') + KEEP_FLAGS + (
        ('dim',) if args.head == 'linear' else ())
    setup = launch.prepare(args, 'dml', same=same, check_flags=check_args,
                           check_train=lambda split, label_to_id, path: check_classes(
                               split, label_to_id, path, args.memory_size))

    training.seed_everything(args.seed, 0)  # the new layers' initial weights
    dim = args.dim if args.head == 'linear' else setup.config.hidden_size
    loss = losses.build(args.loss, len(setup.label_to_id), dim, args.batchsize,
                        args.triplets, args.samples_per_class, args.sampling,
                        **{flag: getattr(args, flag) for flag in losses.FLAGS})
    model = dml.DMLModel(setup.bert, dim=dim, pooling=args.pooling, loss_link=loss.link,
                         head=args.head)
    optimizer = optimization.make_optimizer(model, args.learnrate, args.weightdecay)
    if args.layer_decay < 1:
        optimization.apply_layer_decay(optimizer, model, args.layer_decay,
                                       setup.config.num_hidden_layers)
    # Both of these read the pre-trained weights: before --resume loads final.model.
    l2sp = optimization.add_l2sp(optimizer, model, args.l2sp) if args.l2sp else None
    distill = None
    if args.distill:
        model.to_device(setup.device)
        distill = (args.distill, args.distill_temperature, dml.teacher_vectors(
            setup.bert, setup.train, args.pooling, args.batchsize * 2, setup.device.xp,
            setup.comm))
    memory = None
    if args.memory_size:
        memory = losses.CrossBatchMemory(args.memory_size, dim, args.memory_warmup)
        optimization.keep_state(optimizer, memory)
    if args.ema:
        # Before loading final.state, which holds the training weights it keeps.
        optimization.add_weight_average(optimizer, model, args.ema)
    optimizer = launch.place(setup, model, optimizer)
    if l2sp is not None:
        l2sp.to_device(setup.device)

    task = dml.DMLTask(model, loss, setup.train, setup.evaluation, args.batchsize,
                       setup.device.xp, seed=args.seed, comm=setup.comm, memory=memory,
                       settings=dict({'ema': args.ema, 'memory_size': args.memory_size},
                                     **{flag: getattr(args, flag) for flag in KEEP_FLAGS}),
                       distill=distill)
    launch.run(setup, task, optimizer)
    logger.info('time spent: %f sec', time.time() - start)


# The flags that keep the fine-tuned model near the pre-trained one (for classes unseen
# in training): saved in the models' metadata, and --resume must be given the same.
KEEP_FLAGS = ('distill', 'distill_temperature', 'l2sp', 'layer_decay')


def check_args(args):
    """The checks of the model and loss flags that involve another flag; the plain
    ranges are the flags' types (`flags.integer`, `flags.real`), checked while parsing."""
    if (args.loss != 'triplet' and args.sampling == 'pk'
            and args.samples_per_class > args.batchsize):
        # A P x K batch has at least two classes: it would hold 2 K sentences, whatever
        # --batchsize says.
        raise UsageError('--samples_per_class %d is more than --batchsize %d: a batch holds '
                         'K sentences of each of its classes' % (args.samples_per_class,
                                                                 args.batchsize))
    if args.loss == 'arcface' and args.margin >= math.pi / 2:
        raise UsageError('--margin is an angle for arcface: below pi/2, got %s'
                         % args.margin)
    if args.memory_size and args.loss not in losses.MEMORY_LOSSES:
        raise UsageError('--memory_size works with --loss %s, not %s'
                         % (', '.join(losses.MEMORY_LOSSES), args.loss))


def check_classes(split, label_to_id, path, memory_size=0):
    """At least two classes to learn from, one of them with two sentences; a memory no
    larger than the training set; single-sentence classes are a warning."""
    counts = {label: int((split.labels == i).sum()) for label, i in label_to_id.items()}
    if sum(1 for c in counts.values() if c > 0) < 2:
        raise UsageError('%s: metric learning needs at least two classes, found %d'
                         % (path, len(counts)))
    if max(counts.values()) < 2:
        # Every loss pulls a sentence towards another of its class: with none, training
        # would run its epochs and learn nothing.
        raise UsageError('%s: no class has two sentences, so there is no pair of the same '
                         'class to learn from (%d classes of one sentence each)'
                         % (path, len(counts)))
    if memory_size > len(split):
        raise UsageError('--memory_size %d is more than the %d training sentences: the '
                         'memory would hold stale copies of the same sentences'
                         % (memory_size, len(split)))
    single = [label for label, c in counts.items() if c == 1]
    if single:
        logger.warning('%s: classes with a single sentence cannot be anchors (kept as '
                       'negatives): %s', path, ', '.join(single[:10]))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    flags.add_training_arguments(parser, out='results_dml')
    add_model_arguments(parser.add_argument_group('model and loss'))
    add_keep_arguments(parser.add_argument_group(
        'keeping the pre-trained geometry (for classes unseen in training)'))
    args = parser.parse_args(argv)
    for flag in losses.FLAGS:
        if getattr(args, flag) is None:
            setattr(args, flag, losses.flag_default(flag, args.loss))
    return args


def add_model_arguments(model):
    """The model and loss flags, into the argparse group `model`. The loss flags default
    to None: parse_args fills in the chosen loss's own default (`losses.flag_default`)."""
    model.add_argument('--pooling', choices=modeling.POOLINGS, default='pooled',
                       help='BERT sentence vector fed to the embedding layer (default: '
                            'pooled, the original\'s)')
    model.add_argument('--head', choices=dml.HEADS, default='linear',
                       help='linear: dropout 0.1 and a Linear layer to --dim on the '
                            'sentence vector (the original\'s); none: the loss and the '
                            'features use the sentence vector itself (default: linear)')
    model.add_argument('--dim', type=flags.integer('--dim', 1, flags.MAX_DIM), default=512,
                       help='embedding dimension of --head linear (default: 512)')
    model.add_argument('--loss', choices=losses.LOSSES, default='triplet',
                       help='metric loss (default: triplet, the original\'s)')
    model.add_argument('--triplets', default=1000,
                       type=flags.integer('--triplets', 0, flags.MAX_TRIPLETS,
                                        ' (0: one per sentence)'),
                       help='triplet: triples drawn per epoch; 0: one per training '
                            'sentence (default: 1000)')
    model.add_argument('--samples_per_class', default=8,
                       type=flags.integer('--samples_per_class', 2, flags.MAX_BATCHSIZE,
                                        ' (an anchor and a positive)'),
                       help='batch_hard, multi_similarity, supcon, arcface: K sentences '
                            'of each of batchsize/K classes per batch (default: 8)')
    model.add_argument('--margin', type=flags.real('--margin', 0), default=None,
                       help='triplet, batch_hard: distance margin (default %g); arcface: '
                            'angular margin (default %g)'
                            % (losses.flag_default('margin', 'triplet'),
                               losses.flag_default('margin', 'arcface')))
    model.add_argument('--scale', type=flags.real('--scale', 0, above=True), default=None,
                       help='arcface: logit scale (default: %g)'
                            % losses.flag_default('scale', 'arcface'))
    model.add_argument('--temperature', type=flags.real('--temperature', 0, above=True),
                       default=None,
                       help='supcon, supcon_ce: temperature (default: %g)'
                            % losses.flag_default('temperature', 'supcon'))
    model.add_argument('--supcon_weight', type=flags.real('--supcon_weight', 0, 1),
                       default=None,
                       help='supcon_ce: weight of the supcon term; the cross-entropy of '
                            'a linear classifier on the embedding gets 1 - it (default: '
                            '%g, Gunel et al.\'s)'
                            % losses.flag_default('supcon_weight', 'supcon_ce'))
    model.add_argument('--sampling', choices=('pk', 'random'), default='pk',
                       help='batches of the batch losses: pk, P classes x K sentences '
                            '(--samples_per_class); random, shuffled sentences '
                            '(default: pk)')
    model.add_argument('--memory_size', default=0,
                       type=flags.integer('--memory_size', 0, flags.MAX_MEMORY_SIZE),
                       help='multi_similarity, supcon, supcon_ce: cross-batch memory of '
                            'the last M training embeddings, extra positives and '
                            'negatives of every anchor (Wang et al. 2020); 0: off '
                            '(default: 0)')
    model.add_argument('--memory_warmup', type=flags.integer('--memory_warmup', 0), default=100,
                       help='training steps before the memory is filled and used '
                            '(default: 100)')
    model.add_argument('--ema', default=None, metavar='DECAY',
                       type=flags.real('--ema', 0, 1, above=True, below=True,
                                     note=' (a decay, e.g. 0.999)'),
                       help='keep an exponential moving average of the weights with this '
                            'decay (e.g. 0.999); the averaged weights are scored and saved '
                            'in the models, the training weights in final.state (default: '
                            'off)')


def add_keep_arguments(group):
    """The flags of KEEP_FLAGS, into the argparse group `group`."""
    group.add_argument('--distill', type=flags.real('--distill', 0), default=0.0,
                       metavar='WEIGHT',
                       help='add WEIGHT x the KL divergence between the pre-trained '
                            "BERT's and the model's in-batch cosine-similarity "
                            'distributions (softmax over the other sentences at '
                            '--distill_temperature) to the loss: keeps the pre-trained '
                            'neighbourhoods, for classes unseen in training; at least 0 '
                            '(default: 0, off)')
    group.add_argument('--distill_temperature', default=0.05,
                       type=flags.real('--distill_temperature', 0, above=True),
                       help='temperature of --distill\'s softmax, above 0 (default: 0.05)')
    group.add_argument('--l2sp', type=flags.real('--l2sp', 0), default=0.0, metavar='WEIGHT',
                       help='L2-SP: add WEIGHT x (w - w_pretrained) to the gradient of '
                            "every BERT weight (after clipping), a pull toward the "
                            'pre-trained weights; at least 0 (default: 0, off)')
    group.add_argument('--layer_decay', default=1.0, metavar='FACTOR',
                       type=flags.real('--layer_decay', 0, 1, above=True),
                       help='layer-wise learning-rate decay: encoder layer i of L learns '
                            'at --learnrate x FACTOR^(L - i), the embeddings at FACTOR^(L '
                            '+ 1), the pooler and head at --learnrate; above 0, at most 1 '
                            '(default: 1, off)')


if __name__ == '__main__':
    process.run(main)
