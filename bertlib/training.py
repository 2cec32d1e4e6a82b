"""The fine-tuning loop shared by train_dml.py and train_classifier.py.

A script supplies a `Task` (what a batch is, its loss, how to score a split) and this
module does the rest as the seed did: Adam with decoupled weight decay on weight matrices,
gradient clipping at global norm 1, a linear learning-rate decay to 0 (after an optional
warm-up), one log line per epoch in the seed's format, atomic saves of `final.model` and
`final.state` every epoch, early-stopped models, a JSON-lines log, a plot, and `--resume`.

Reproducibility: every random draw of epoch e (batch order, triples, dropout) comes from
generators seeded with (seed, e), and the optimizer state is saved with the model, so a
run resumed at epoch e on the CPU ends with the same weights as an uninterrupted one.

Under mpiexec (`comm`, see bertlib/distributed.py) every rank runs this loop on the same
batches; the task shares the encoding out, and rank 0 alone writes and logs.
"""

import json
import logging
import math
import os
import time

import chainer
import numpy as np

from bertlib import checkpoints, cli, distributed, dropout, optimization
from bertlib.errors import UsageError

logger = logging.getLogger('main')

class TrainingError(Exception):
    """Training cannot go on (e.g. the loss became NaN); the last good model is kept."""


def seed_everything(seed, epoch, rank=0, gpu=False):
    """Seeds the generators Chainer draws from (NumPy's global one, the CPU dropout
    masks, and on GPU runs CuPy's, which draws the GPU dropout masks) and returns a
    RandomState for the task's own draws in this epoch.

    gpu: also seed CuPy. Only GPU runs may touch it: seeding CuPy opens a CUDA context
    on GPU 0, and fails where CuPy is installed without a usable GPU.
    rank: of a data-parallel process. CuPy's dropout masks cannot be replayed row by row
    as the CPU ones are (dropout.rows), so each GPU rank draws its own stream instead of
    repeating rank 0's masks on other sentences."""
    np.random.seed((seed * 100003 + epoch) % (2 ** 32))
    dropout.seed((seed * 100003 + epoch) % (2 ** 32))
    if gpu:
        import cupy
        cupy.random.seed((seed * 100003 + epoch + rank * 7919) % (2 ** 32))
    return np.random.RandomState((seed * 7919 + epoch * 104729 + 1) % (2 ** 32))


class Task(object):
    """What a training script supplies to `train`.

    Attributes:
        model: the chainer.Chain being trained.
        early_stopping: {file suffix: (metric name in the log, 'min' or 'max')}, e.g.
            {'loss': ('D/loss', 'min'), 'map': ('D/acc2', 'max')}.
    """

    model = None
    early_stopping = {}

    def batches(self, rng):
        """The training batches of one epoch, drawn with `rng`."""
        raise NotImplementedError

    def loss(self, batch):
        """(loss Variable, number of sentences encoded) of one batch, in train mode."""
        raise NotImplementedError

    def evaluate(self, split):
        """{'loss': ..., 'acc1': ..., 'acc2': ...} of 'train' (a fixed sample) or 'eval'.
        For 'train', 'loss' may be None: the epoch's mean training loss is used."""
        raise NotImplementedError

    def meta(self):
        """JSON-able facts saved inside every model file (pooling, dim, ...)."""
        return {}


def read_log(path):
    """The per-epoch records of a JSON-lines log, [] if there is none."""
    if not os.path.exists(path):
        return []
    with open(path, encoding='utf-8') as f:
        return [json.loads(line) for line in f if line.strip()]


def train(task, optimizer, args, log_path, plot_path=None, comm=None):
    """Runs epochs `args.start_epoch` .. `args.epoch`, saving into `args.out`.

    comm: a ChainerMN communicator (every rank calls this; `optimizer` wrapped by
    `distributed.wrap_optimizer`), or None. Only rank 0 writes and logs."""
    root = distributed.is_root(comm)
    steps_per_epoch = sum(1 for _ in task.batches(np.random.RandomState(0)))
    total_steps = steps_per_epoch * args.epoch
    warmup_steps = int(round(getattr(args, 'warmup', 0.0) * total_steps))
    records = [r for r in read_log(log_path) if r['epoch'] < args.start_epoch]
    best = {}
    for suffix, (key, mode) in task.early_stopping.items():
        values = [r[key] for r in records]
        if values:
            best[suffix] = min(values) if mode == 'min' else max(values)
    # The step count of a resumed run comes from the checkpoint: P x K epochs need not all
    # have the same number of batches.
    step = getattr(args, 'start_step', None)
    if step is None:
        step = (args.start_epoch - 1) * steps_per_epoch
    start = time.time()
    xp = task.model.xp
    for epoch in range(args.start_epoch, args.epoch + 1):
        rng = seed_everything(args.seed, epoch, 0 if comm is None else comm.rank,
                              gpu=xp is not np)
        epoch_start = time.time()
        losses, sentences = [], 0
        # P x K epochs may differ by a batch or so: the total is that of the first epoch.
        progress = cli.Progress(steps_per_epoch, 'batches', 'epoch %d' % epoch) if root else None
        with chainer.using_config('train', True):
            for iteration, batch in enumerate(task.batches(rng)):
                optimizer.eta = optimization.schedule(step, total_steps, warmup_steps)
                loss, count = task.loss(batch)
                # The loss stays on the device: reading it here would make the host wait
                # for the GPU at every step. Losses are read where a figure is logged.
                losses.append(loss.array)
                if xp is np:  # free on the CPU: stop at once
                    check_losses(losses[-1:], epoch, args.out, first=iteration)
                task.model.cleargrads()
                loss.backward()
                optimizer.update()
                sentences += count
                step += 1
                if progress is not None:
                    progress(1)
        losses = check_losses(losses, epoch, args.out)
        if progress is not None:
            progress.close()
        train_seconds = time.time() - epoch_start
        lr = args.learnrate * optimization.schedule(max(step - 1, 0), total_steps, warmup_steps)

        record = {'epoch': epoch}
        eval_start = time.time()
        train_scores = task.evaluate('train')
        record['T/loss'] = float(np.mean(losses)) if losses else float('nan')
        record['T/acc1'] = train_scores['acc1']
        record['T/acc2'] = train_scores['acc2']
        record['T/sec'] = train_seconds
        record['T/sentences_per_sec'] = sentences / max(train_seconds, 1e-9)
        eval_scores = task.evaluate('eval')
        record['D/loss'] = eval_scores['loss']
        record['D/acc1'] = eval_scores['acc1']
        record['D/acc2'] = eval_scores['acc2']
        record['D/sec'] = time.time() - eval_start
        record['lr'] = lr
        elapsed = time.time() - start
        done = epoch - args.start_epoch + 1
        record['eta'] = elapsed / done * (args.epoch - epoch)
        records.append(record)
        if not root:
            continue
        logger.info(format_record(record), stacklevel=2)

        meta = dict(task.meta(), epoch=epoch, step=step)
        checkpoints.save_model(os.path.join(args.out, 'final.model'), task.model, meta)
        checkpoints.save_state(os.path.join(args.out, 'final.state'), optimizer)
        print('saving final model at epoch %d' % epoch, flush=True)
        for suffix, (key, mode) in task.early_stopping.items():
            value = record[key]
            better = suffix not in best or (value < best[suffix] if mode == 'min'
                                            else value > best[suffix])
            if better and math.isfinite(value):
                best[suffix] = value
                checkpoints.save_model(
                    os.path.join(args.out, 'early_stopped-%s.model' % suffix), task.model,
                    dict(meta, early_stopped_on=key))
        _write_log(log_path, records)
        if plot_path:
            plot_curves(records, plot_path)
    return records


def check_losses(losses, epoch, out, first=0):
    """Losses of iterations first, first + 1, ... of an epoch (device scalars) as a list
    of floats; a TrainingError names the first one that is not finite. One copy from
    the GPU for them all."""
    values = chainer.backend.CpuDevice().send(
        chainer.backend.get_array_module(losses[-1]).stack(losses)) if losses else []
    for iteration, value in enumerate(values):
        if not math.isfinite(value):
            raise TrainingError(
                'the loss became %s at epoch %d, iteration %d; stopped before saving, the '
                'last good model is %s'
                % (value, epoch, first + iteration + 1, os.path.join(out, 'final.model')))
    return [float(value) for value in values]


def format_record(r):
    """One line in the seed's format."""
    return ('[%3d] T/loss=%.6f T/acc1=%.6f T/acc2=%.6f T/sec= %.6f D/loss=%.6f '
            'D/acc1=%.6f D/acc2=%.6f D/sec= %.6f lr=%.6f eta=%.6f'
            % (r['epoch'], r['T/loss'], r['T/acc1'], r['T/acc2'], r['T/sec'], r['D/loss'],
               r['D/acc1'], r['D/acc2'], r['D/sec'], r['lr'], r['eta']))


def _write_log(path, records):
    from bertlib.fileio import atomic_write
    with atomic_write(path) as f:
        for record in records:
            f.write(json.dumps(record, sort_keys=True) + '\n')


def plot_curves(records, path):
    """Train/eval loss and acc1/acc2 per epoch, as the seed's results_*.png."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    from bertlib.fileio import atomic_write
    epochs = [r['epoch'] for r in records]
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].plot(epochs, [r['T/loss'] for r in records], 'o-', label='train loss')
    axes[0].plot(epochs, [r['D/loss'] for r in records], 's-', label='eval loss')
    axes[0].set_xlabel('epoch')
    axes[0].set_ylabel('loss')
    axes[0].legend()
    for key, style in (('T/acc1', 'o-'), ('D/acc1', 's-'), ('T/acc2', 'o--'),
                       ('D/acc2', 's--')):
        axes[1].plot(epochs, [r[key] for r in records], style, label=key)
    axes[1].set_xlabel('epoch')
    axes[1].set_ylabel('score')
    axes[1].set_ylim(0, 1)
    axes[1].legend()
    for axis in axes:
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    figure.tight_layout()
    with atomic_write(path, 'wb') as f:
        figure.savefig(f, format='png', dpi=100)
    plt.close(figure)


def check_args(args, kind, same=()):
    """Checks the shared training flags before any work; settles args.start_epoch.

    kind: 'dml' or 'classifier', the kind of model --resume must hold; same: flags whose
    value must equal the one the resumed model was trained with (e.g. 'dim').
    """
    from bertlib import cli
    cli.check_bert_arguments(args)
    distributed.check_training_communicator(args)
    for name in ('train', 'eval'):
        cli.check_file(getattr(args, name), '--%s file' % name)
    if args.epoch < 1:
        raise UsageError('--epoch must be at least 1')
    if args.resume:
        for name in ('final.model', 'final.state'):
            path = os.path.join(args.resume, name)
            if not os.path.isfile(path):
                raise UsageError('--resume %s: %s is missing' % (args.resume, path))
        meta = checkpoints.read_meta(os.path.join(args.resume, 'final.model'))
        if meta.get('kind', kind) != kind:
            raise UsageError('--resume %s holds a %s model, not a %s one'
                             % (args.resume, meta['kind'], kind))
        for key in same:
            if key in meta and meta[key] != getattr(args, key):
                raise UsageError('--resume %s was trained with --%s %s, not %s'
                                 % (args.resume, key, meta[key], getattr(args, key)))
        if args.start_epoch is None or args.start_epoch == meta.get('epoch', 0) + 1:
            args.start_step = meta.get('step')
            args.start_epoch = meta.get('epoch', 0) + 1
    else:
        args.start_epoch = args.start_epoch or 1
    if args.start_epoch > args.epoch:
        raise UsageError('--start_epoch %d is past --epoch %d: nothing to train'
                         % (args.start_epoch, args.epoch))
