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
import json
import logging
import math
import os
import time

import numpy as np

from bertlib import (checkpoints, cli, data, distributed, dml, losses, modeling,
                     optimization, training)
from bertlib.errors import UsageError

logger = logging.getLogger('main')


def main(argv=None):
    start = time.time()
    args = parse_args(argv)
    comm = distributed.setup(args)
    print(json.dumps(vars(args), indent=2), flush=True)
    check_args(args)
    training.check_args(args, 'dml', same=('dim', 'pooling', 'loss'), comm=comm)
    distributed.check_same_files(comm, [('--train', args.train), ('--eval', args.eval)])
    device = cli.select_device(args.gpu, comm)
    config, tokenizer, bert = cli.load_bert(args)

    labels_path = os.path.join(args.out, 'labels.bin')
    known = checkpoints.load_labels(os.path.join(args.resume, 'labels.bin')) \
        if args.resume else None
    train, label_to_id = data.load_split(args.train, tokenizer, args.max_seq_length, known)
    check_classes(train, label_to_id, args.train)
    # Classes unseen in training get ids after the training ones (as the original
    # BERT-DML gave new labels new ids): retrieval scores and D/loss use the eval set's
    # own labels, the standard protocol of metric learning on disjoint classes.
    evaluation, eval_label_to_id = data.load_split(args.eval, tokenizer, args.max_seq_length,
                                                   label_to_id)
    report_unseen(evaluation, label_to_id, eval_label_to_id, args.eval)
    print('# train: %d, eval: %d,' % (len(train), len(evaluation)))
    print('# class: %d, labels: %s' % (len(label_to_id), label_to_id))
    print('# vocab: %d' % config.vocab_size, flush=True)

    training.seed_everything(args.seed, 0)  # the new layers' initial weights
    loss_link = None
    if args.loss == 'arcface':
        loss_link = losses.ArcFace(len(label_to_id), args.dim, scale=args.scale,
                                   margin=args.margin)
    model = dml.DMLModel(bert, dim=args.dim, pooling=args.pooling, loss_link=loss_link)
    optimizer = optimization.make_optimizer(model, args.learnrate, args.weightdecay)
    if args.resume:
        checkpoints.load_model(os.path.join(args.resume, 'final.model'), model)
        checkpoints.load_state(os.path.join(args.resume, 'final.state'), optimizer)
        logger.info('resumed from %s at epoch %d', args.resume, args.start_epoch)
    model.to_device(device)
    optimizer = distributed.wrap_optimizer(comm, optimizer, model)

    if distributed.is_root(comm):
        os.makedirs(args.out, exist_ok=True)
        checkpoints.save_labels(labels_path, label_to_id)
    task = dml.DMLTask(model, args.loss, train, evaluation, args.batchsize, device.xp,
                       hyper=loss_hyperparameters(args), triplets=args.triplets,
                       samples_per_class=args.samples_per_class, seed=args.seed, comm=comm)
    plot = None if args.noplot else training.beside_out(args.out, '.png')
    try:
        training.train(task, optimizer, args, os.path.join(args.out, 'log.jsonl'), plot,
                       comm)
    except training.TrainingError as e:
        raise UsageError(str(e))
    logger.info('time spent: %f sec', time.time() - start)


def loss_hyperparameters(args):
    """The flags each loss takes (arcface's go to its Link)."""
    if args.loss in ('triplet', 'batch_hard'):
        return {'margin': args.margin}
    if args.loss == 'supcon':
        return {'temperature': args.temperature}
    return {}


def check_args(args):
    """One message per out-of-range flag of the model and loss."""
    if args.dim < 1:
        raise UsageError('--dim must be at least 1, got %d' % args.dim)
    if args.triplets < 0:
        raise UsageError('--triplets must be 0 (one per sentence) or more, got %d'
                         % args.triplets)
    if args.samples_per_class < 2:
        raise UsageError('--samples_per_class must be at least 2 (an anchor and a '
                         'positive), got %d' % args.samples_per_class)
    if not (math.isfinite(args.margin) and args.margin >= 0):
        raise UsageError('--margin must be 0 or more, got %s' % args.margin)
    if args.loss == 'arcface' and args.margin >= math.pi / 2:
        raise UsageError('--margin is an angle for arcface: below pi/2, got %s'
                         % args.margin)
    if not (math.isfinite(args.scale) and args.scale > 0):
        raise UsageError('--scale must be a positive number, got %s' % args.scale)
    if not (math.isfinite(args.temperature) and args.temperature > 0):
        raise UsageError('--temperature must be a positive number, got %s'
                         % args.temperature)


def check_classes(split, label_to_id, path):
    counts = {label: int((split.labels == i).sum()) for label, i in label_to_id.items()}
    if sum(1 for c in counts.values() if c > 0) < 2:
        raise UsageError('%s: metric learning needs at least two classes, found %d'
                         % (path, len(counts)))
    single = [label for label, c in counts.items() if c == 1]
    if single:
        logger.warning('%s: classes with a single sentence cannot be anchors (kept as '
                       'negatives): %s', path, ', '.join(single[:10]))


def report_unseen(split, label_to_id, eval_label_to_id, path):
    """Logs how many of the eval set's classes the training set does not have."""
    present = set(np.unique(split.labels).tolist())
    unseen = [label for label, i in eval_label_to_id.items()
              if label not in label_to_id and i in present]
    logger.info('%s: %d classes, %d of them unseen in training%s', path, len(present),
                len(unseen), (' (%s)' % ', '.join(unseen[:10])) if unseen else '')
    return len(unseen)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_training_arguments(parser, out='results_dml')
    model = parser.add_argument_group('model and loss')
    model.add_argument('--pooling', choices=modeling.POOLINGS, default='pooled',
                       help='BERT sentence vector fed to the embedding layer (default: '
                            'pooled, the seed\'s)')
    model.add_argument('--dim', type=int, default=512,
                       help='embedding dimension (default: 512)')
    model.add_argument('--loss', choices=losses.LOSSES, default='triplet',
                       help='metric loss (default: triplet, the seed\'s)')
    model.add_argument('--triplets', type=int, default=1000,
                       help='triplet: triples drawn per epoch; 0: one per training '
                            'sentence (default: 1000)')
    model.add_argument('--samples_per_class', type=int, default=8,
                       help='batch_hard, multi_similarity, supcon, arcface: K sentences '
                            'of each of batchsize/K classes per batch (default: 8)')
    model.add_argument('--margin', type=float, default=None,
                       help='triplet, batch_hard: distance margin (default 0.2); arcface: '
                            'angular margin (default 0.3)')
    model.add_argument('--scale', type=float, default=30.0,
                       help='arcface: logit scale (default: 30)')
    model.add_argument('--temperature', type=float, default=0.1,
                       help='supcon: temperature (default: 0.1)')
    args = parser.parse_args(argv)
    if args.margin is None:
        args.margin = 0.3 if args.loss == 'arcface' else 0.2
    return args


if __name__ == '__main__':
    cli.run(main)
