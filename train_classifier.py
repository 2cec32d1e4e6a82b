#!/usr/bin/env python
"""Fine-tunes BERT as a softmax classifier: the baseline whose pooled output is the
"Classified (fine-tuning)" feature.

Same command line, log format and outputs as train_dml.py: after every epoch one line
with T/ and D/ loss, acc1 = accuracy and acc2 = UAR (unweighted average recall); --out
gets final.model, final.state, labels.bin, early_stopped-loss.model,
early_stopped-uar.model and log.jsonl, and the training curves go to <out>.png beside it.
At the end, the confusion matrix (counts and rates), UAR and scikit-learn's
classification report of the final and both early-stopped models (D/loss, D/UAR) on
--eval are printed, and each confusion matrix is drawn into
<out>-cm-{final,early_stopped-loss,early_stopped-uar}.png beside --out, as the original
BERT-DML did (not with --noplot), its labels shown by their --label_names names.

Example:
    python train_classifier.py --batchsize 64 --epoch 3 \\
        --train datasets/rt-polarity/04-train.txt --eval datasets/rt-polarity/04-test.txt \\
        --init_checkpoint  BERT/all-MiniLM-L6-v2/arrays_bert_model.ckpt.npz \\
        --bert_config_file BERT/all-MiniLM-L6-v2/bert_config.json \\
        --vocab_file       BERT/all-MiniLM-L6-v2/vocab.txt \\
        --out models/classified/rt-polarity | tee train_classifier-rt.log

The same on N processes (data-parallel, ChainerMN over MPI; --batchsize is the global
batch): mpiexec -n N python train_classifier.py --communicator naive ...
"""

import argparse
import logging
import os
import time

from bertlib import (checkpoints, classifier, distributed, flags, labelnames, launch, optimization,
                     process, training)
from bertlib.errors import UsageError

logger = logging.getLogger(__name__)


def main(argv=None):
    start = time.time()
    args = parse_args(argv)
    label_names = labelnames.read(args.label_names)  # a bad file stops before BERT loads

    def check_train(split, label_to_id, path):
        check_classes(split, label_to_id, path)
        labelnames.display(label_names, label_to_id, args.label_names)

    setup = launch.prepare(args, 'classifier', check_train=check_train, closed=True)
    n_classes = len(setup.label_to_id)

    training.seed_everything(args.seed, 0)  # the output layer's initial weights
    model = classifier.ClassifierModel(setup.bert, n_classes)
    optimizer = optimization.make_optimizer(model, args.learnrate, args.weightdecay)
    optimizer = launch.place(setup, model, optimizer)

    weights = classifier.class_weights(setup.train.labels, n_classes, args.class_weight)
    task = classifier.ClassifierTask(model, setup.train, setup.evaluation, n_classes,
                                     args.batchsize, setup.device.xp, weights=weights,
                                     seed=args.seed, comm=setup.comm)
    launch.run(setup, task, optimizer)
    report(args, setup, task, label_names)
    logger.info('time spent: %f sec', time.time() - start)


def check_classes(split, label_to_id, path):
    """A classifier of one class learns nothing."""
    if len(label_to_id) < 2:
        raise UsageError('%s: a classifier needs at least two classes' % path)


def report(args, setup, task, label_names):
    """Prints the report of the final and early-stopped models on --eval and draws their
    confusion matrices beside --out, each label shown by its name in `label_names`
    ({label: name} of --label_names; the printed report keeps the labels)."""
    comm, model, evaluation = setup.comm, task.model, setup.evaluation
    names = sorted(setup.label_to_id, key=setup.label_to_id.get)
    show = labelnames.display(label_names, names, args.label_names)
    for title, name in (('final model', 'final'),
                        ('early-stopped model (best D/loss)', 'early_stopped-loss'),
                        ('early-stopped model (best D/UAR)', 'early_stopped-uar')):
        # Only rank 0 wrote the files (its node's disk): it reads them and sends the rest.
        path = os.path.join(args.out, name + '.model')
        present = os.path.isfile(path) if distributed.is_root(comm) else None
        if comm is not None:
            present = comm.mpi_comm.bcast(present)
        if not present:  # e.g. D/loss was never finite, so nothing was early-stopped on it
            logger.warning('%s was not written: no report for the %s', path, title)
            continue
        if distributed.is_root(comm):
            checkpoints.load_model(path, model)
        distributed.bcast_model(comm, model)
        predicted = task.logits_of(evaluation).argmax(axis=1)
        print('\n== %s: %s.model on %s ==' % (title, name, args.eval))
        print(classifier.report(evaluation.labels, predicted, names), flush=True)
        if not args.noplot and distributed.is_root(comm):
            classifier.draw_confusion(
                evaluation.labels, predicted, [show[label] for label in names],
                training.beside_out(args.out, '-cm-%s.png' % name),
                '%s: %s.model on %s' % (os.path.basename(os.path.normpath(args.out)), name,
                                        os.path.basename(args.eval)))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    flags.add_training_arguments(parser, out='results_classifier')
    parser.add_argument('--class_weight', choices=('none', 'balanced'), default='none',
                        help="weight the loss of each class by n / (K * count) for skewed "
                             "data ('balanced') or not (default: none)")
    labelnames.add_argument(parser)  # the confusion matrix pictures only
    return parser.parse_args(argv)


if __name__ == '__main__':
    process.run(main)
