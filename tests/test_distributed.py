"""Data-parallel training and sharded extraction under `mpiexec -n 2` (ChainerMN, CPU).

The multi-process tests start mpiexec from the virtual environment (`make mpi` installs
it; `make test` too) and skip when it is absent. Every run has a timeout, so a hang
fails instead of blocking the suite.
"""

import json
import os
import subprocess
import sys

import chainer
import numpy as np
import pytest

from bertlib import distributed, dml, dropout, length_batching, modeling, training
from conftest import (MPI_TIMEOUT as TIMEOUT, ROOT, WORDS, final_arrays, model_flags,
                      mpi_missing, mpirun, write_random_bert)

needs_mpi = pytest.mark.skipif(mpi_missing() is not None, reason=str(mpi_missing()))


def python(argv, timeout=TIMEOUT):
    """One plain process, as a user without mpiexec runs the script."""
    env = dict(os.environ, OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable] + [str(a) for a in argv], capture_output=True,
                          text=True, timeout=timeout, cwd=str(ROOT), env=env)


def ok(result):
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture
def tiny(tmp_path):
    """A random 1-layer BERT (with BERT's 0.1 dropouts) and small labelled files."""
    folder = write_random_bert(tmp_path / 'bert', WORDS, hidden_size=16, num_hidden_layers=1,
                               intermediate_size=32)
    rng = np.random.RandomState(0)

    def sentences(n, classes=2):
        lines = []
        for i in range(n):
            label = i % classes
            words = WORDS[:4] if label % 2 == 0 else WORDS[4:8]
            text = ' '.join(['the', 'film', 'was'] + list(rng.choice(words, 1 + i % 5)))
            lines.append('c%d\t%s' % (label, text))
        return '\n'.join(lines) + '\n'
    (tmp_path / 'train.txt').write_text(sentences(160))
    (tmp_path / 'eval.txt').write_text(sentences(24))
    (tmp_path / 'train4.txt').write_text(sentences(45, classes=4))
    (tmp_path / 'eval4.txt').write_text(sentences(12, classes=4))
    return folder


def dml_args(tmp_path, tiny, out, *extra):
    return (['train_dml.py', '--train', tmp_path / 'train.txt',
             '--eval', tmp_path / 'eval.txt', '--out', out, '--dim', '8', '--noplot',
             '--learnrate', '1e-3', '--seed', '3'] + model_flags(tiny) + list(extra))


def assert_same_training(one, two, rtol=1e-4):
    """The same per-epoch T/loss (and D/loss) to rtol.

    Final weights are not compared: where the true gradient is 0 (the output bias under
    a distance loss), Adam turns rounding noise of 1e-9 into steps of the learning rate,
    in one process as in two."""
    a, b = training.read_log(str(one / 'log.jsonl')), training.read_log(str(two / 'log.jsonl'))
    assert [r['epoch'] for r in a] == [r['epoch'] for r in b]
    for x, y in zip(a, b):
        for key in ('T/loss', 'D/loss'):
            assert abs(x[key] - y[key]) <= rtol * abs(x[key]), (key, x, y)


def wrapper(tmp_path, name, code):
    """A script that runs `code` (with `rank` set), then the script named by its first
    argument as __main__: a way to inject faults into one rank."""
    path = tmp_path / name
    path.write_text('import runpy, sys\n'
                    'from mpi4py import MPI\n'
                    'rank = MPI.COMM_WORLD.rank\n'
                    '%s\n'
                    'sys.argv = sys.argv[1:]\n'
                    'runpy.run_path(sys.argv[0], run_name="__main__")\n' % code)
    return path


# --- without MPI ---------------------------------------------------------------------------

def test_dropout_rows_replay_the_whole_batch_masks(tmp_path):
    """Three 'ranks' encoding slices of each length piece (one with an empty share, which
    encodes a stand-in row) give the embeddings of one process encoding the batch."""
    folder = write_random_bert(tmp_path / 'bert', WORDS, hidden_size=16, intermediate_size=32)
    config = modeling.BertConfig.from_json_file(str(folder / 'bert_config.json'))
    model = dml.DMLModel(modeling.BertModel(config), dim=8)
    rng = np.random.RandomState(0)
    ids = [list(rng.randint(5, 20, size=rng.randint(2, 9))) for _ in range(13)]
    with chainer.using_config('train', True):
        dropout.seed(5)
        whole = length_batching.encode_by_length(model.embed, ids, np).array
        order = np.argsort([len(x) for x in ids], kind='stable')
        size = -(-len(order) // 4)
        shared = np.full_like(whole, np.nan)
        for rank in range(3):
            dropout.seed(5)
            for begin in range(0, len(order), size):
                piece = order[begin:begin + size]
                start, stop = distributed.share(len(piece), rank, 3)
                rows = piece[start:stop] if stop > start else piece[:1]
                window = (start, stop) if stop > start else (0, 1)
                length = max(len(ids[i]) for i in piece)
                input_ids, mask = length_batching.pad_batch([ids[i] for i in rows], np, length)
                with dropout.rows(window[0], window[1], len(piece)):
                    out = model.embed(input_ids, mask).array
                if stop > start:
                    shared[rows] = out
        dropout.seed(6)
        other = length_batching.encode_by_length(model.embed, ids, np).array
    np.testing.assert_allclose(shared, whole, atol=1e-6)
    assert np.abs(other - whole).max() > 1e-3  # dropout is really on


def test_skipping_draws_equals_drawing_them():
    for before in range(3):
        for count in range(7):
            dropout.seed(11)
            dropout._generator.random(before, dtype=np.float32)
            dropout._generator.random(count, dtype=np.float32)
            expected = dropout._generator.random(5, dtype=np.float32)
            dropout.seed(11)
            dropout._generator.random(before, dtype=np.float32)
            dropout._skip(count)
            assert np.array_equal(dropout._generator.random(5, dtype=np.float32), expected)


def test_shares_cover_everything_once():
    for n in range(0, 12):
        for size in range(1, 5):
            bounds = [distributed.share(n, r, size) for r in range(size)]
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
            assert max(b - a for a, b in bounds) - min(b - a for a, b in bounds) <= 1


def test_fingerprint_sees_one_changed_byte(tmp_path):
    (tmp_path / 'a').write_bytes(b'x\ty\n' * 1000)
    (tmp_path / 'b').write_bytes(b'x\ty\n' * 999 + b'x\tz\n')
    lines_a, digest_a = distributed.file_fingerprint(tmp_path / 'a')
    lines_b, digest_b = distributed.file_fingerprint(tmp_path / 'b')
    assert lines_a == lines_b == 1000 and digest_a != digest_b


def test_help_lists_the_communicators():
    for script in ('train_dml.py', 'train_classifier.py', 'extruct_bert_embed.py',
                   'extruct_bert_metrics.py', 'extruct_bert_classified.py'):
        result = ok(python([script, '--help']))
        assert '--communicator {naive,flat,pure_nccl}' in result.stdout, script


# --- under mpiexec -n 2 --------------------------------------------------------------------

GRADIENT_CHECK = r'''
import sys
import bertlib  # first: Chainer 7.8.1 on NumPy 2 (bertlib/compat.py)
import chainer, chainer.functions as F, chainermn, numpy as np
from bertlib import distributed, dml, dropout, losses, modeling
comm = chainermn.create_communicator('naive')
config = modeling.BertConfig.from_json_file({config!r})
np.random.seed(0)
model = dml.DMLModel(modeling.BertModel(config), dim=8, loss_link=losses.ArcFace(3, 8))
rng = np.random.RandomState(1)
ids = [list(rng.randint(5, 20, size=rng.randint(2, 9))) for _ in range(int(sys.argv[1]))]
labels = np.arange(len(ids), dtype=np.int32) % 3
grads = {{}}
for name, shared in (('alone', None), ('shared', comm)):
    dropout.seed(7)
    model.cleargrads()
    with chainer.using_config('train', True):
        x = distributed.encode_by_length(shared, model.embed, ids, np)
        loss = losses.batch_hard_triplet_loss(x, labels) + model.loss(x, labels)
    loss.backward()
    if shared is not None:
        comm.multi_node_mean_grad(model)
    grads[name] = {{k: p.grad.copy() for k, p in model.namedparams()}}
worst = max(float(np.abs(grads['alone'][k] - grads['shared'][k]).max()
                  / max(float(np.abs(grads['alone'][k]).max()), 1e-6))  # key/b: ~1e-11
            for k in grads['alone'])
print('rank', comm.rank, 'worst relative gradient difference', worst)
assert worst < 1e-4, worst
'''


@needs_mpi
@pytest.mark.parametrize('batch', [12, 13, 3])
def test_shared_gradient_equals_the_single_process_gradient(tmp_path, tiny, batch):
    """The all-reduced gradient of a sharded batch-level loss (batch_hard + ArcFace, whose
    proxies sit after the gather) is the gradient one process computes on the batch.
    An end-to-end loss comparison alone would miss a wrong scale: Adam ignores it."""
    script = tmp_path / 'check.py'
    script.write_text(GRADIENT_CHECK.format(config=str(tiny / 'bert_config.json')))
    result = ok(mpirun([(2, [script, batch])]))
    assert result.stdout.count('worst relative gradient difference') == 2


@needs_mpi
def test_two_processes_train_as_one_batch_hard(tmp_path, tiny):
    """Global batch 64 on 2 ranks (32 each) and batch 64 on 1: the same T/loss per epoch
    to 1e-4 (the issue's figure), dropout on; rank 0 alone writes and prints."""
    common = ('--epoch', '2', '--batchsize', '64', '--loss', 'batch_hard')
    one, two = tmp_path / 'one', tmp_path / 'two'
    ok(python(dml_args(tmp_path, tiny, one, *common)))
    result = ok(mpirun([(2, dml_args(tmp_path, tiny, two, '--communicator', 'naive',
                                     *common))]))
    assert_same_training(one, two)
    log = training.read_log(str(two / 'log.jsonl'))
    assert log[0]['T/loss'] != log[1]['T/loss']  # it trains
    assert result.stdout.count('saving final model at epoch 2') == 1
    assert result.stdout.count('"communicator": "naive"') == 1
    for name in ('final.model', 'final.state', 'labels.bin', 'early_stopped-loss.model'):
        assert (two / name).is_file(), name


@needs_mpi
@pytest.mark.parametrize('script, extra, extractor', [
    # 49 triples in batches of 16: the last batch is one triple, 3 pieces of 1 sentence,
    # so rank 0 has no row of its own in any piece.
    ('train_dml.py', ('--loss', 'triplet', '--triplets', '49', '--batchsize', '16',
                      '--dim', '8'), None),
    ('train_dml.py', ('--loss', 'arcface', '--samples_per_class', '4', '--batchsize', '16',
                      '--dim', '8'), 'extruct_bert_metrics.py'),
    # 45 sentences in batches of 16: a last batch of 13.
    ('train_classifier.py', ('--batchsize', '16',), 'extruct_bert_classified.py'),
    # The frozen table has no gradient on any rank: the all-reduce leaves it out.
    ('train_dml.py', ('--loss', 'supcon', '--samples_per_class', '4', '--batchsize', '16',
                      '--dim', '8', '--freeze_word_embeddings'), None),
])
def test_two_processes_train_as_one_other_losses(tmp_path, tiny, script, extra, extractor):
    """Then the fine-tuned model's features: the same bytes from 2 processes as from 1."""
    def argv(out, *more):
        return ([script, '--train', tmp_path / 'train4.txt', '--eval',
                 tmp_path / 'eval4.txt', '--out', out, '--noplot', '--epoch', '2',
                 '--learnrate', '1e-3'] + model_flags(tiny) + list(extra) + list(more))
    one, two = tmp_path / 'one', tmp_path / 'two'
    ok(python(argv(one)))
    ok(mpirun([(2, argv(two, '--communicator', 'naive'))]))
    assert_same_training(one, two)
    if extractor is None:
        return
    base = [extractor, '--input', tmp_path / 'train4.txt', '--batchsize', '2',
            '--model', two / 'final.model', '--label', two / 'labels.bin'] + model_flags(tiny)
    alone = ok(python(base)).stdout
    shared = ok(mpirun([(2, base + ['--communicator', 'naive'])])).stdout
    assert alone.count('\n') == 45 and shared == alone


@needs_mpi
def test_resume_under_mpi_ends_as_an_uninterrupted_run(tmp_path, tiny):
    """A 2-rank job killed after epoch 1 and resumed ends with the weights of one that
    ran through."""
    common = ('--epoch', '2', '--batchsize', '32', '--loss', 'batch_hard',
              '--communicator', 'naive')
    whole, part = tmp_path / 'whole', tmp_path / 'part'
    ok(mpirun([(2, dml_args(tmp_path, tiny, whole, *common))]))
    killer = wrapper(tmp_path, 'kill.py', (
        'import os\n'
        'from bertlib import training\n'
        'save_epoch = training.save_epoch\n'
        'def save_then_die(*args):\n'
        '    save_epoch(*args)\n'
        '    os._exit(9)\n'
        'training.save_epoch = save_then_die'))
    killed = mpirun([(2, [killer] + dml_args(tmp_path, tiny, part, *common))])
    assert killed.returncode != 0
    assert [r['epoch'] for r in training.read_log(str(part / 'log.jsonl'))] == [1]
    ok(mpirun([(2, dml_args(tmp_path, tiny, part, '--resume', part, *common))]))
    a, b = final_arrays(whole), final_arrays(part)
    assert sorted(a) == sorted(b)
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    assert [r['epoch'] for r in training.read_log(str(part / 'log.jsonl'))] == [1, 2]


@needs_mpi
def test_sharded_extraction_is_byte_identical(tmp_path, tiny):
    """150 lines in chunks of 64 (--batchsize 2): three rounds, the last one short."""
    rng = np.random.RandomState(1)
    lines = ['%s\t%s' % (i % 3, ' '.join(rng.choice(WORDS, 1 + i % 11))) for i in range(150)]
    lines[7] = 'bare text without a label'
    (tmp_path / 'in.txt').write_text('\n'.join(lines) + '\n')
    base = ['extruct_bert_embed.py', '--batchsize', '2', '--pooling', 'mean'] + \
        model_flags(tiny)
    alone = ok(python(base + ['--input', tmp_path / 'in.txt',
                              '--output', tmp_path / 'one.tsv']))
    ok(mpirun([(2, base + ['--input', tmp_path / 'in.txt', '--output', tmp_path / 'two.tsv',
                           '--communicator', 'naive'])]))
    expected = (tmp_path / 'one.tsv').read_bytes()
    assert expected.count(b'\n') == 150
    assert (tmp_path / 'two.tsv').read_bytes() == expected
    # Standard input reaches rank 0 only, and stdout is rank 0's alone.
    piped = ok(mpirun([(2, base + ['--input', '-', '--communicator', 'naive'])],
                      stdin=(tmp_path / 'in.txt').read_text()))
    assert piped.stdout.encode() == expected
    assert alone.returncode == 0


@needs_mpi
def test_mismatched_data_files_stop_every_rank(tmp_path, tiny):
    other = tmp_path / 'train-other.txt'
    other.write_text((tmp_path / 'train.txt').read_text() + 'c0\tthe film was good\n')
    first = dml_args(tmp_path, tiny, tmp_path / 'out', '--epoch', '1', '--batchsize', '16',
                     '--communicator', 'naive')
    second = list(first)
    second[second.index('--train') + 1] = other
    result = mpirun([(1, first), (1, second)], timeout=60)
    assert result.returncode != 0
    assert 'error: --train %s differs between processes' % (tmp_path / 'train.txt') \
        in result.stderr
    assert 'rank 0' in result.stderr and 'rank 1' in result.stderr
    assert result.stderr.count('error: ') == 1
    assert not (tmp_path / 'out' / 'final.model').exists()


@needs_mpi
@pytest.mark.parametrize('name, gpu, message', [
    ('pure_nccl', '-1', 'error: --communicator pure_nccl moves gradients in GPU memory and '
                        'needs --gpu'),
    ('flat', '-1', 'error: --communicator flat moves gradients in GPU memory and needs '
                   '--gpu'),
    ('pure_nccl', '0', 'error: --communicator pure_nccl --gpu 0: CuPy is not installed'),
    ('naive', '0', 'error: --communicator naive --gpu 0: naive hands GPU memory to MPI, and '
                   'this MPI has no CUDA support; train on GPUs with --communicator '
                   'pure_nccl'),
])
def test_gpu_communicators_without_gpu_say_so(tmp_path, tiny, name, gpu, message):
    try:
        import cupy  # noqa: F401
        if name == 'pure_nccl' and gpu != '-1':
            pytest.skip('CuPy is installed here')
    except ImportError:
        pass
    result = mpirun([(2, dml_args(tmp_path, tiny, tmp_path / 'out', '--epoch', '1',
                                  '--communicator', name, '--gpu', gpu))], timeout=60)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stderr.count('error: ') == 1


@needs_mpi
def test_a_rank_that_dies_mid_epoch_ends_the_job(tmp_path, tiny):
    """Rank 1 raises at its third batch; ChainerMN's hook aborts all ranks, no hang."""
    crash = wrapper(tmp_path, 'crash.py', (
        'from bertlib import dml\n'
        'calls = []\n'
        'loss = dml.DMLTask.loss\n'
        'def failing(self, batch):\n'
        '    calls.append(1)\n'
        '    if rank == 1 and len(calls) == 3:\n'
        '        raise RuntimeError("injected failure")\n'
        '    return loss(self, batch)\n'
        'dml.DMLTask.loss = failing'))
    result = mpirun([(2, [crash] + dml_args(tmp_path, tiny, tmp_path / 'out', '--epoch', '2',
                                            '--batchsize', '16', '--loss', 'batch_hard',
                                            '--communicator', 'naive'))], timeout=90)
    assert result.returncode != 0
    # MPI_Abort can cut rank 1's stderr short while Open MPI is still forwarding it (seen
    # once in CI, the traceback ending mid-frame), so its last lines (the exception, then
    # ChainerMN's banner) are checked only when they arrived.
    assert 'Traceback (most recent call last)' in result.stderr
    if 'Uncaught exception on rank 1' in result.stderr:
        assert 'RuntimeError: injected failure' in result.stderr
    assert not (tmp_path / 'out' / 'final.model').exists()
