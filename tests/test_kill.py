"""The kill suite: training killed (SIGKILL) at random moments and at every file-system
step of its saves, then resumed, must end exactly as an uninterrupted run: the same
final.model, final.state and early-stopped models to the bit, a complete log.jsonl, and
no temporary files left behind.

Each run is a forked copy of this process (Chainer is imported once), so a kill costs
milliseconds, not an interpreter start. The default suite kills at every step of the saves
and at a dozen random moments; `-m slow` adds a hundred random kills.
"""

import json
import os
import random
import signal
import time

import numpy as np
import pytest

import train_dml
from bertlib import checkpoints
from conftest import WORDS, model_flags, write_random_bert, write_random_lines

pytestmark = pytest.mark.skipif(not hasattr(os, 'fork'), reason='needs os.fork')

EPOCHS = 2
TIMING = ('T/sec', 'T/sentences_per_sec', 'D/sec', 'remaining_sec')


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    """A tiny BERT, data, and the reference: an uninterrupted run and its step count."""
    root = tmp_path_factory.mktemp('kill')
    bert = write_random_bert(root / 'bert', WORDS, hidden_size=16, num_hidden_layers=1,
                             intermediate_size=32)
    write_random_lines(root, (('train.txt', 32), ('eval.txt', 8)))
    counter = root / 'steps'
    whole = root / 'whole'
    assert run(root, bert, whole, count_into=counter) == 0
    # The random kills are drawn over a warm run's length: the first run also pays for
    # one-time compilation, and kills drawn over its length mostly came too late.
    started = time.time()
    assert run(root, bert, root / 'warm') == 0
    return root, bert, whole, int(counter.read_text()), time.time() - started


def argv(root, bert, out, resume):
    return (['--train', str(root / 'train.txt'), '--eval', str(root / 'eval.txt'),
             '--out', str(out), '--batchsize', '8', '--dim', '8', '--noplot',
             '--epoch', str(EPOCHS), '--loss', 'batch_hard', '--samples_per_class', '4',
             '--seed', '5', '--learnrate', '1e-3'] + model_flags(bert)
            + (['--resume', str(out)] if resume else []))


def run(root, bert, out, kill_at=None, kill_after=None, count_into=None):
    """Trains into `out` in a forked child (resuming when `out` holds a final.model).

    kill_at: the child SIGKILLs itself just before its kill_at-th file-system step (an
    os.replace or os.fsync, the steps of every save). kill_after: seconds after which
    the parent SIGKILLs it. count_into: a file the child writes its number of steps to.
    Returns the child's exit status, or -9 when it was killed."""
    resume = (out / 'final.model').exists()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 1
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            os.dup2(null, 2)
            steps = [0]
            for name in ('replace', 'fsync'):
                original = getattr(os, name)

                def step(*args, _original=original):
                    steps[0] += 1
                    if steps[0] == kill_at:
                        os.kill(os.getpid(), signal.SIGKILL)
                    return _original(*args)
                setattr(os, name, step)
            train_dml.main(argv(root, bert, out, resume))
            if count_into is not None:
                with open(count_into, 'w') as f:
                    f.write(str(steps[0]))
            status = 0
        except BaseException:
            import traceback
            with open(str(out) + '.error', 'w') as f:
                traceback.print_exc(file=f)
            status = 3
        finally:
            os._exit(status)
    if kill_after is not None:
        deadline = time.time() + kill_after
        while time.time() < deadline:
            if os.waitpid(pid, os.WNOHANG) != (0, 0):
                return 0
            time.sleep(0.005)
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def finish(root, bert, out):
    """Resumes until the run is complete (a fresh start if no epoch was saved). A run
    killed while renaming its last epoch's files into place is completed by the resumed
    run's recovery, which then has nothing left to train."""
    for _ in range(EPOCHS + 1):
        if (out / 'final.model').exists() and not (out / '.commit.json').exists() and \
                checkpoints.read_meta(str(out / 'final.model'))['epoch'] == EPOCHS:
            return
        if run(root, bert, out) != 0:
            error = open(str(out) + '.error').read()
            assert 'nothing to train' in error, error
    raise AssertionError('the run never completed')


def arrays(path):
    with np.load(path) as archive:
        return {k: archive[k] for k in archive.files}


def assert_same_run(whole, out):
    names = sorted(n for n in os.listdir(whole) if not n.startswith('.'))
    assert sorted(n for n in os.listdir(out) if not n.startswith('.')) == names
    for name in names:
        if name.endswith(('.model', '.state')):
            a, b = arrays(whole / name), arrays(out / name)
            assert sorted(a) == sorted(b), name
            for key in a:
                assert np.array_equal(a[key], b[key]), (name, key)
    logs = [[{k: v for k, v in json.loads(line).items() if k not in TIMING}
             for line in (folder / 'log.jsonl').read_text().splitlines()]
            for folder in (whole, out)]
    assert [r['epoch'] for r in logs[1]] == list(range(1, EPOCHS + 1))
    assert logs[0] == logs[1]
    # A killed run's temporary files and half-done commit are gone.
    assert [n for n in os.listdir(out) if n.endswith('.tmp') or n == '.commit.json'] == []


def test_a_kill_at_every_step_of_the_saves_resumes_to_the_same_weights(setup, tmp_path):
    root, bert, whole, steps, _ = setup
    assert steps >= 2 * EPOCHS * 5  # model, state, log, journal and renames per epoch
    for kill_at in range(1, steps + 1):
        out = tmp_path / ('at%d' % kill_at)
        assert run(root, bert, out, kill_at=kill_at) == -signal.SIGKILL
        finish(root, bert, out)
        assert_same_run(whole, out)


def random_kills(setup, tmp_path, runs, seed):
    root, bert, whole, _, seconds = setup
    rng = random.Random(seed)
    killed = 0
    for index in range(runs):
        out = tmp_path / ('random%d' % index)
        # Kill the first run and a resumed one, each at a random moment of a whole run.
        for _ in range(2):
            if run(root, bert, out, kill_after=rng.uniform(0, seconds)) == -signal.SIGKILL:
                killed += 1
        finish(root, bert, out)
        assert_same_run(whole, out)
    print('%d runs, %d random kills landed, all resumed to identical weights'
          % (runs, killed))
    return killed


def test_kills_at_random_moments_resume_to_the_same_weights(setup, tmp_path):
    # Timing on a shared machine varies: a kill that comes after the run ended does not
    # count, so only a share of the 12 tries is required to land.
    assert random_kills(setup, tmp_path, runs=6, seed=0) >= 3


@pytest.mark.slow
def test_a_hundred_random_kills(setup, tmp_path):
    assert random_kills(setup, tmp_path, runs=50, seed=1) >= 25
