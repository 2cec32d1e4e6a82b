"""What train_dml.py and train_classifier.py share around `training.train`.

A training script parses its flags, then calls, in this order:

    setup = launch.prepare(args, kind)       # checks, device, BERT, the labelled splits
    ... seeds and builds its model and optimizer ...
    optimizer = launch.place(setup, model, optimizer)   # --resume, device, --out
    launch.run(setup, task, optimizer)       # the epochs

so the scripts hold only what differs between them: their flags, their model and task,
and what they report at the end. The shared training flags, --out and --resume are
checked here (`check_args`) before any work.
"""

import json
import logging
import os

import numpy as np

from bertlib import bert_loading, checkpoints, data, devices, distributed, fileio, flags, training
from bertlib.errors import UsageError

logger = logging.getLogger(__name__)


class Setup(object):
    """A checked run with BERT and its data loaded (made by `prepare`).

    Attributes:
        args: the parsed flags (never changed here).
        comm: the ChainerMN communicator, or None.
        device: the chainer device to train on.
        config, bert: the BERT configuration and model (pre-trained weights loaded).
        train, evaluation: the labelled splits (`data.load_split`).
        label_to_id: {label: id} of the training classes (those of --resume first).
        eval_label_to_id: the same with the eval set's other classes after them.
        start_epoch, start_step: where training starts (`check_args`).
    """

    def __init__(self, **fields):
        self.__dict__.update(fields)


def prepare(args, kind, same=(), check_flags=None, check_train=None, closed=False):
    """Prints the flags (JSON, stdout), checks them and the files, selects the device and
    loads BERT and the splits.

    kind: 'dml' or 'classifier', the model --resume must hold; same: flags that must equal
    the resumed model's; check_flags(args): the script's own flag checks, run after the
    flags are printed; check_train(split, label_to_id, path): its check of the training
    split; closed: an eval label unseen in training is an error (else it gets a new id
    and the unseen classes are logged). Raises UsageError.
    """
    comm = distributed.setup(args)
    flags.check_bert_arguments(args)  # first: the printed flags name --bert_dir's files
    print(json.dumps(vars(args), indent=2), flush=True)
    if check_flags is not None:
        check_flags(args)
    # The text prefix is part of what a model was trained on, like its shape; a frozen
    # table has no Adam moments in final.state.
    start_epoch, start_step = check_args(
        args, kind, same=same + ('text_prefix', 'freeze_word_embeddings'), comm=comm)
    distributed.check_same_files(comm, [('--train', args.train), ('--eval', args.eval)])
    device = devices.select_device(args.gpu, comm)
    config, tokenizer, bert = bert_loading.load_bert(args)
    if args.freeze_word_embeddings:
        bert.freeze_word_embeddings()  # before the script's make_optimizer

    known = checkpoints.load_labels(os.path.join(args.resume, 'labels.bin')) \
        if args.resume else None
    train, label_to_id = data.load_split(args.train, tokenizer, args.max_seq_length, known)
    if check_train is not None:
        check_train(train, label_to_id, args.train)
    if args.batchsize > len(train):
        # A small file with the usual --batchsize 64 (the README's walk through has 36
        # sentences): each batch is then the whole set, which is what the user can mean.
        # A batch past the flag's bound (flags.MAX_BATCHSIZE) was refused while parsing.
        logger.warning('--batchsize %d is more than the %d sentences of %s: each batch is '
                       'the whole training set (--batchsize %d)', args.batchsize,
                       len(train), args.train, len(train))
        args.batchsize = len(train)
    # Classes unseen in training get ids after the training ones (as the original
    # BERT-DML gave new labels new ids): retrieval scores and D/loss use the eval set's
    # own labels, the standard protocol of metric learning on disjoint classes.
    evaluation, eval_label_to_id = data.load_split(args.eval, tokenizer, args.max_seq_length,
                                                   label_to_id, closed=closed)
    if not closed:
        report_unseen(evaluation, label_to_id, eval_label_to_id, args.eval)
    print('# train: %d, eval: %d,' % (len(train), len(evaluation)))
    print('# class: %d, labels: %s' % (len(label_to_id), label_to_id))
    print('# vocab: %d' % config.vocab_size, flush=True)
    return Setup(args=args, comm=comm, device=device, config=config, bert=bert, train=train,
                 evaluation=evaluation, label_to_id=label_to_id,
                 eval_label_to_id=eval_label_to_id, start_epoch=start_epoch,
                 start_step=start_step)


def report_unseen(split, label_to_id, eval_label_to_id, path):
    """Logs how many of the eval set's classes the training set does not have."""
    present = set(np.unique(split.labels).tolist())
    unseen = [label for label, i in eval_label_to_id.items()
              if label not in label_to_id and i in present]
    logger.info('%s: %d classes, %d of them unseen in training%s', path, len(present),
                len(unseen), (' (%s)' % ', '.join(unseen[:10])) if unseen else '')
    return len(unseen)


def place(setup, model, optimizer):
    """Loads --resume's final.model and final.state into `model` and `optimizer` (whose
    state, e.g. --ema's or the memory's, must be attached already), moves the model to
    the device and wraps the optimizer for data-parallel runs; rank 0 saves labels.bin
    in --out (which check_args claimed). Returns the optimizer to train with."""
    args = setup.args
    if args.resume:
        checkpoints.load_model(os.path.join(args.resume, 'final.model'), model)
        checkpoints.load_state(os.path.join(args.resume, 'final.state'), optimizer)
        # Named after the script's main(), where the line was logged before.
        logger.info('resumed from %s at epoch %d', args.resume, setup.start_epoch,
                    stacklevel=2)
    model.to_device(setup.device)
    optimizer = distributed.wrap_optimizer(setup.comm, optimizer, model)
    if distributed.is_root(setup.comm):
        checkpoints.save_labels(os.path.join(args.out, 'labels.bin'), setup.label_to_id)
    return optimizer


def run(setup, task, optimizer):
    """`training.train` with the run's flags; a TrainingError (e.g. a NaN loss) becomes
    the one-line error. Returns the per-epoch records."""
    args = setup.args
    try:
        return training.train(
            task, optimizer, args.out, epochs=args.epoch, learnrate=args.learnrate,
            seed=args.seed, warmup=args.warmup, start_epoch=setup.start_epoch,
            start_step=setup.start_step,
            plot_path=None if args.noplot else training.beside_out(args.out, '.png'),
            comm=setup.comm, meta={'text_prefix': args.text_prefix,
                                   'freeze_word_embeddings': args.freeze_word_embeddings,
                                   # For the model card of `python -m bertlib.export`.
                                   'train_file': os.path.basename(args.train),
                                   'eval_file': os.path.basename(args.eval),
                                   'learnrate': args.learnrate, 'epochs': args.epoch,
                                   'batchsize': args.batchsize, 'seed': args.seed})
    except training.TrainingError as e:
        raise UsageError(str(e))


def check_args(args, kind, same=(), comm=None):
    """Checks the shared training flags before any work. Returns (start_epoch,
    start_step): --start_epoch, or the epoch after --resume's, and the step count saved
    with --resume's model (None: `train` counts it). `args` is left as it is.

    kind: 'dml' or 'classifier', the kind of model --resume must hold; same: flags whose
    value must equal the one the resumed model was trained with (e.g. 'dim').

    Rank 0 (the one that writes) then checks that no file the training rewrites is one
    of its inputs (`check_outputs`), takes --out for itself (`fileio.DirectoryLock`),
    finishes a commit that a killed run left half-done there and in --resume, and removes
    a killed run's temporary files.
    """
    distributed.check_training_communicator(args)
    for name in ('train', 'eval'):
        bert_loading.check_file(getattr(args, name), '--%s file' % name)
    if distributed.is_root(comm):
        check_outputs(args)
        claim_out(args.out)
        if args.resume and os.path.isdir(args.resume):
            fileio.DirectoryLock.acquire(args.resume, '--resume', required=False)
            fileio.recover(args.resume)
    if args.resume:
        start_epoch, start_step = check_resume(args, kind, same)
    else:
        start_epoch, start_step = args.start_epoch or 1, None
    if start_epoch > args.epoch:
        raise UsageError('--start_epoch %d is past --epoch %d: nothing to train'
                         % (start_epoch, args.epoch))
    return start_epoch, start_step


# The files a training writes into --out, besides early_stopped-*.model.
WRITTEN = ('labels.bin', 'final.model', 'final.state', training.LOG_NAME)


def check_outputs(args):
    """A UsageError if a file the training will replace is one of its input files (by
    file identity): a model, labels.bin or the log in --out, or the pictures <out>.png and
    <out>-cm-*.png beside it. --resume's files are not inputs here: resuming into the
    folder itself (--resume DIR --out DIR) is how a training goes on."""
    inputs = flags.input_files(args)
    out = os.path.normpath(args.out)
    if os.path.isdir(out):
        for name in sorted(os.listdir(out)):
            if name in WRITTEN or (name.startswith('early_stopped-') and name.endswith('.model')):
                fileio.check_not_input(os.path.join(out, name), inputs, '--out',
                                       follow_symlinks=False)
    parent, base = os.path.split(out)
    if args.noplot or not os.path.isdir(parent or '.'):
        return
    for name in sorted(os.listdir(parent or '.')):
        if name == base + '.png' or (name.startswith(base + '-cm-') and name.endswith('.png')):
            fileio.check_not_input(os.path.join(parent, name), inputs, '--out')


def claim_out(out):
    """Creates --out if needed and locks it for this process; finishes a half-done
    commit and removes the temporary files of a killed run."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError('--out %s exists and is not a folder' % out)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise fileio.write_error(out, e)
    fileio.DirectoryLock.acquire(out)
    moved = fileio.recover(out)
    if moved:
        logger.info('%s: finished saving %s, interrupted by a kill', out, ', '.join(moved))
    removed = fileio.remove_leftovers(out)
    if removed:
        logger.info('%s: removed %d temporary files of a killed run', out, len(removed))


def check_resume(args, kind, same):
    """--resume DIR must hold a final.model of this kind and flags, and the final.state
    saved with it (same step count). Returns (start_epoch, start_step): the epoch after
    the saved one and its step count, unless --start_epoch names another epoch (then
    (--start_epoch, None))."""
    model_path, state_path = (os.path.join(args.resume, name)
                              for name in ('final.model', 'final.state'))
    for path in (model_path, state_path):
        if not os.path.isfile(path):
            raise UsageError('--resume %s: %s is missing' % (args.resume, path))
    meta = checkpoints.read_meta(model_path)
    if meta.get('kind', kind) != kind:
        raise UsageError('--resume %s holds a %s model, not a %s one'
                         % (args.resume, meta['kind'], kind))
    for key in same:
        if key in meta and meta[key] != getattr(args, key):
            raise UsageError('--resume %s was trained with --%s %s, not %s'
                             % (args.resume, key, meta[key], getattr(args, key)))
    step = checkpoints.state_step(state_path)
    if 'step' in meta and step != meta['step']:
        raise UsageError('--resume %s: final.model (epoch %s, step %d) and final.state '
                         '(step %d) were not saved together; resume from a pair of one '
                         'epoch' % (args.resume, meta.get('epoch', '?'), meta['step'], step))
    if args.start_epoch is None or args.start_epoch == meta.get('epoch', 0) + 1:
        return meta.get('epoch', 0) + 1, meta.get('step')
    return args.start_epoch, None
