"""The fine-tuning loop shared by train_dml.py and train_classifier.py.

A script supplies a `Task` (what a batch is, its loss, how to score a split) and this
module does the rest as the original BERT-DML did: Adam with decoupled weight decay on
weight matrices, gradient clipping at global norm 1, a linear learning-rate decay to 0
(after an optional warm-up), one log line per epoch in the original's format, a plot,
and `--resume`. Each
epoch's `final.model`, `final.state`, improved early-stopped models and JSON-lines log are
saved as one commit (`save_epoch`): a kill leaves the previous epoch's set or the new one.

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

from bertlib import checkpoints, distributed, dropout, figures, fileio, optimization
from bertlib.errors import UsageError
from bertlib.progress import Progress

logger = logging.getLogger(__name__)

# The per-epoch JSON-lines log in --out.
LOG_NAME = 'log.jsonl'


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
    # What the log's acc1 and acc2 are, in words, for the training curves' legend.
    score_names = ('acc1', 'acc2')

    def describe(self):
        """The kind of run and its loss in words, for the training curves' title."""
        return 'fine-tuning'

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
    """The per-epoch records of a JSON-lines log, [] if there is none. A line that is not
    a record of this program is a UsageError naming it."""
    if not os.path.lexists(path):
        return []
    # A folder received from someone else may hold a link, a FIFO or a huge file here.
    data = fileio.read_bounded(path, 'log', 'training log', follow_symlinks=False)
    try:
        text = data.decode('utf-8')
    except UnicodeDecodeError as e:
        raise UsageError('%s: cannot read the training log: %s' % (path, e))
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except RecursionError:
            raise UsageError('%s:%d: not a JSON record (nested too deeply)' % (path, number))
        except ValueError as e:
            raise UsageError('%s:%d: not a JSON record (%s)' % (path, number, e))
        if not isinstance(record, dict) or not isinstance(record.get('epoch'), int):
            raise UsageError('%s:%d: not an epoch record of this program'
                             % (path, number))
        records.append(record)
    return records


def train(task, optimizer, out, epochs, learnrate, seed, warmup=0.0, start_epoch=1,
          start_step=None, plot_path=None, comm=None, meta=None):
    """Runs epochs `start_epoch` .. `epochs`, saving into the folder `out` (the log is
    out/log.jsonl).

    learnrate: the peak learning rate (for the log; `optimizer` applies it); seed: of
    every epoch's draws (`seed_everything`); warmup: the fraction of the steps spent
    warming up; start_step: the steps done before start_epoch (from the resumed
    checkpoint), None for (start_epoch - 1) x the first epoch's. comm: a ChainerMN
    communicator (every rank calls this; `optimizer` wrapped by
    `distributed.wrap_optimizer`), or None. meta: facts of the run saved in every model's
    metadata beside the task's (e.g. {'text_prefix': 'query: '}). Only rank 0 writes and
    logs."""
    root = distributed.is_root(comm)
    log_path = os.path.join(out, LOG_NAME)
    steps_per_epoch = sum(1 for _ in task.batches(np.random.RandomState(0)))
    total_steps = steps_per_epoch * epochs
    warmup_steps = int(round(warmup * total_steps))
    records = read_log(log_path)
    dropped = [r['epoch'] for r in records if r['epoch'] >= start_epoch]
    if dropped and root:
        # Epochs this run computes again (or a tampered record): said, not silently lost.
        logger.warning('%s: dropping the records of epochs %s, from epoch %d on, which '
                       'this run trains (again)', log_path,
                       ', '.join(str(e) for e in dropped[:5]) +
                       (', ...' if len(dropped) > 5 else ''), start_epoch)
    records = [r for r in records if r['epoch'] < start_epoch]
    best = best_so_far(records, task.early_stopping)
    # The step count of a resumed run comes from the checkpoint: P x K epochs need not all
    # have the same number of batches.
    step = start_step
    if step is None:
        step = (start_epoch - 1) * steps_per_epoch
    start = time.time()
    xp = task.model.xp
    for epoch in range(start_epoch, epochs + 1):
        rng = seed_everything(seed, epoch, 0 if comm is None else comm.rank,
                              gpu=xp is not np)
        optimization.use_training_weights(optimizer)  # --ema: averaged at rest
        epoch_start = time.time()
        losses, sentences = [], 0
        # P x K epochs may differ by a batch or so: the total is that of the first epoch.
        progress = Progress(steps_per_epoch, 'batches', 'epoch %d' % epoch) if root else None
        with chainer.using_config('train', True):
            for iteration, batch in enumerate(task.batches(rng)):
                optimizer.eta = optimization.schedule(step, total_steps, warmup_steps)
                try:
                    loss, count = task.loss(batch)
                    # The loss stays on the device: reading it here would make the host
                    # wait for the GPU at every step. Losses are read where a figure is
                    # logged.
                    losses.append(loss.array)
                    if xp is np:  # free on the CPU: stop at once
                        check_losses(losses[-1:], epoch, out, first=iteration,
                                     first_step=step + 1)
                    task.model.cleargrads()
                    loss.backward()
                    optimizer.update()
                except ArithmeticError as e:  # weights out of range: a division by zero
                    check_parameters(task.model, epoch, step, out)  # names the weight
                    raise TrainingError(
                        '%s at epoch %d, iteration %d (step %d): %s; stopped before saving, '
                        'the last good model is %s' % (type(e).__name__, epoch, iteration + 1,
                                                      step + 1, e, _last_good(out)))
                sentences += count
                step += 1
                if progress is not None:
                    progress(1)
        losses = check_losses(losses, epoch, out, first_step=step - len(losses) + 1)
        check_parameters(task.model, epoch, step, out)
        if progress is not None:
            progress.close()
        train_seconds = time.time() - epoch_start
        lr = learnrate * optimization.schedule(max(step - 1, 0), total_steps, warmup_steps)

        optimization.use_averaged_weights(optimizer)  # --ema: score and save the average
        record = score_epoch(task, epoch, losses, sentences, train_seconds)
        record['lr'] = lr
        record['adam_step_factor'] = optimization.adam_step_factor(step)
        elapsed = time.time() - start
        done = epoch - start_epoch + 1
        record['remaining_sec'] = elapsed / done * (epochs - epoch)
        records.append(record)
        if not root:
            continue
        # Named after the script's main() (train <- launch.run <- main), as the
        # original BERT-DML's log lines were.
        logger.info(format_record(record), stacklevel=3)

        save_epoch(out, LOG_NAME, task, optimizer, records,
                   dict(task.meta(), **(meta or {}), epoch=epoch, step=step), best)
        if plot_path:
            figures.plot_curves(records, plot_path, task.score_names, '%s: %s' % (
                os.path.basename(os.path.normpath(out)), task.describe()))
    return records


def best_so_far(records, early_stopping):
    """{suffix: best value} of each early-stopping metric over the records (of the
    epochs before a resumed one); a suffix without records is absent."""
    best = {}
    for suffix, (key, mode) in early_stopping.items():
        values = [r[key] for r in records]
        if values:
            best[suffix] = min(values) if mode == 'min' else max(values)
    return best


def score_epoch(task, epoch, losses, sentences, train_seconds):
    """The T/ and D/ part of an epoch's record: the mean training loss (losses: the
    epoch's floats) and the task's scores of the training sample and the eval set."""
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
    return record


def check_losses(losses, epoch, out, first=0, first_step=None):
    """Losses of iterations first, first + 1, ... of an epoch (device scalars), the
    first of them at step `first_step` of the run, as a list of floats; a TrainingError
    names the first one that is not finite. One copy from the GPU for them all."""
    values = chainer.backend.CpuDevice().send(
        chainer.backend.get_array_module(losses[-1]).stack(losses)) if losses else []
    for iteration, value in enumerate(values):
        if not math.isfinite(value):
            where = '' if first_step is None else ' (step %d)' % (first_step + iteration)
            raise TrainingError(
                'the loss became %s at epoch %d, iteration %d%s; stopped before saving, the '
                'last good model is %s'
                % (value, epoch, first + iteration + 1, where, _last_good(out)))
    return [float(value) for value in values]


def check_parameters(model, epoch, step, out):
    """A TrainingError naming the first parameter of `model` that holds a value that is
    not finite (a loss can stay finite while a weight overflows): such a model is never
    saved. One reduction per parameter, once an epoch."""
    for name, param in sorted(model.namedparams()):
        if param.array is None:
            continue
        xp = chainer.backend.get_array_module(param.array)
        if not bool(xp.isfinite(param.array).all()):
            raise TrainingError(
                'the parameter %s is not finite at epoch %d, after step %d; stopped '
                'before saving, the last good model is %s'
                % (name, epoch, step, _last_good(out)))


def _last_good(out):
    return os.path.join(out, 'final.model')


def format_record(r):
    """One line in the original BERT-DML's format, columns meaning what they meant there:
    `lr` is Adam's bias correction (Chainer's optimizer.lr at alpha 1) and `eta` the
    learning rate of the epoch's last step. log.jsonl has them as 'adam_step_factor' and
    'lr', and the estimated seconds left as 'remaining_sec'."""
    return ('[%3d] T/loss=%.6f T/acc1=%.6f T/acc2=%.6f T/sec= %.6f D/loss=%.6f '
            'D/acc1=%.6f D/acc2=%.6f D/sec= %.6f lr=%.6f eta=%.6f'
            % (r['epoch'], r['T/loss'], r['T/acc1'], r['T/acc2'], r['T/sec'], r['D/loss'],
               r['D/acc1'], r['D/acc2'], r['D/sec'], r['adam_step_factor'], r['lr']))


def beside_out(out, suffix):
    """A file next to the --out folder, named after it: `results_dml` -> `results_dml.png`
    (where the original BERT-DML wrote its curves and confusion matrices)."""
    return os.path.normpath(out) + suffix


def save_epoch(out, log_name, task, optimizer, records, meta, best):
    """Saves an epoch as one commit (bertlib.fileio.Commit): final.model, final.state,
    the early-stopped models that improved and the log all change together or not at
    all, so a kill never leaves a model and a state of different epochs. `best`
    ({suffix: value}) is updated."""
    epoch, record = meta['epoch'], records[-1]
    commit = fileio.Commit(out)
    try:
        with commit.open('final.model') as stream:
            checkpoints.write_model(stream, task.model, meta)
        with commit.open('final.state') as stream:
            checkpoints.write_state(stream, optimizer)
        improved = []
        for suffix, (key, mode) in task.early_stopping.items():
            value = record[key]
            better = suffix not in best or (value < best[suffix] if mode == 'min'
                                            else value > best[suffix])
            if better and math.isfinite(value):
                best[suffix] = value
                improved.append(suffix)
                with commit.open('early_stopped-%s.model' % suffix) as stream:
                    checkpoints.write_model(stream, task.model,
                                            dict(meta, early_stopped_on=key))
        with commit.open(log_name, 'w') as stream:
            for r in records:
                stream.write(json.dumps(r, sort_keys=True) + '\n')
        commit.apply()
    finally:
        commit.discard()
    print('saving final model at epoch %d' % epoch, flush=True)
    for suffix in improved:
        print('saving early-stopped model (%s) at epoch %d' % (suffix, epoch), flush=True)
