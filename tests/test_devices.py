"""The GPU paths that a CPU machine can check: device choice and its errors, seeding,
the training loop's loss checks. CuPy is replaced by stand-ins where needed, so these run
with or without CuPy installed."""

import sys
import types

import numpy as np
import pytest

import train_dml
from bertlib import devices, distributed, features, length_batching, training
from bertlib.errors import UsageError
from conftest import write_random_bert, model_flags

WORDS = ['good', 'great', 'fine', 'nice', 'bad', 'awful', 'poor', 'dull', 'the', 'film']


def fake_cupy(count=1, count_error=None, seed_error=None):
    """A stand-in `cupy` module: getDeviceCount returns `count` or raises `count_error`;
    random.seed records its value or raises `seed_error`."""
    seeds = []

    def get_device_count():
        if count_error is not None:
            raise count_error
        return count

    def seed(value):
        if seed_error is not None:
            raise seed_error
        seeds.append(value)

    module = types.ModuleType('cupy')
    module.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(
        getDeviceCount=get_device_count))
    module.random = types.SimpleNamespace(seed=seed)
    module.seeds = seeds
    return module


class CudaRuntimeError(RuntimeError):
    """What CuPy raises on a login node: cudaErrorNoDevice / InsufficientDriver."""


def test_cpu_runs_never_touch_cupy(monkeypatch):
    broken = fake_cupy(seed_error=CudaRuntimeError('cudaErrorNoDevice: no CUDA-capable device'))
    monkeypatch.setitem(sys.modules, 'cupy', broken)
    rng = training.seed_everything(3, 1)
    assert isinstance(rng, np.random.RandomState)
    working = fake_cupy()
    monkeypatch.setitem(sys.modules, 'cupy', working)
    training.seed_everything(3, 1, rank=2, gpu=True)
    assert working.seeds == [(3 * 100003 + 1 + 2 * 7919) % 2 ** 32]


def test_cpu_training_on_a_machine_with_cupy_but_no_gpu(tmp_path, monkeypatch, capsys):
    """A login node: CuPy imports, any CUDA call fails. --gpu -1 must train."""
    monkeypatch.setitem(sys.modules, 'cupy', fake_cupy(
        count_error=CudaRuntimeError('no driver'),
        seed_error=CudaRuntimeError('cudaErrorInsufficientDriver')))
    tiny = write_random_bert(tmp_path / 'bert', WORDS, hidden_size=16, num_hidden_layers=1,
                             intermediate_size=32)
    lines = ''.join('%s\tthe film %s\n' % ('pos' if i % 2 else 'neg', WORDS[i % 8])
                    for i in range(24))
    (tmp_path / 'train.txt').write_text(lines)
    (tmp_path / 'eval.txt').write_text(lines)
    train_dml.main(['--train', str(tmp_path / 'train.txt'), '--eval',
                    str(tmp_path / 'eval.txt'), '--out', str(tmp_path / 'out'), '--epoch',
                    '1', '--batchsize', '8', '--dim', '8', '--noplot', '--triplets', '8',
                    '--gpu', '-1'] + model_flags(tiny))
    assert (tmp_path / 'out' / 'final.model').exists()


@pytest.mark.parametrize('cupy, message', [
    (None, '--gpu 0: CuPy is not installed; install it with `make gpu`'),
    (fake_cupy(count_error=CudaRuntimeError('cudaErrorInsufficientDriver: driver too old')),
     '--gpu 0: no usable CUDA GPU (cudaErrorInsufficientDriver: driver too old); run on '
     'the CPU with --gpu -1'),
    (fake_cupy(count=0), '--gpu 0: no CUDA GPU visible'),
])
def test_gpu_without_cupy_or_driver_says_how_to_fix_it(monkeypatch, cupy, message):
    monkeypatch.setitem(sys.modules, 'cupy', cupy)
    with pytest.raises(UsageError) as error:
        devices.select_device(0)
    assert str(error.value).startswith(message)


def test_gpu_index_past_the_visible_ones(monkeypatch):
    monkeypatch.setitem(sys.modules, 'cupy', fake_cupy(count=1))
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '3')
    with pytest.raises(UsageError, match=r'--gpu 2: only 1 GPU\(s\) visible '
                                         r'\(CUDA_VISIBLE_DEVICES=3\)'):
        devices.select_device(2)


def test_cupy_that_chainer_cannot_use(monkeypatch):
    """CuPy imports but its cuBLAS does not load: Chainer's CUDA support is off."""
    from chainer.backends import cuda
    monkeypatch.setitem(sys.modules, 'cupy', fake_cupy(count=1))
    monkeypatch.setattr(cuda, 'available', False)
    monkeypatch.setattr(cuda, '_resolution_error', ImportError(
        'Failure finding "libcublasLt.so.13": No such file\nsecond line'), raising=False)
    with pytest.raises(UsageError) as error:
        devices.select_device(0)
    assert str(error.value) == (
        '--gpu 0: Chainer cannot use CuPy (Failure finding "libcublasLt.so.13": No such '
        'file); reinstall CuPy for your CUDA with `make gpu` or `make gpu CUDA=13`')


@pytest.mark.parametrize('gpu, count, rank, size, expected', [
    (0, 4, 0, 2, 0), (0, 4, 1, 2, 1), (2, 4, 1, 2, 3),  # a node's GPUs shared out
    (0, 1, 0, 2, 0), (0, 1, 1, 2, 0),  # CUDA_VISIBLE_DEVICES: one GPU per process
    (0, 1, 0, 1, 0),
])
def test_gpu_for_rank(gpu, count, rank, size, expected):
    assert devices.gpu_for_rank(gpu, count, rank, size) == expected


def test_too_many_processes_for_the_gpus():
    with pytest.raises(UsageError, match='process 3 of 3 on this node needs GPU 3 but only '
                                         '3 are visible: start at most 2 processes'):
        devices.gpu_for_rank(1, 3, 2, 3)


def test_two_processes_on_one_gpu_are_refused():
    devices.check_distinct_gpus([('a', '0000:01:00.0'), ('a', '0000:02:00.0'),
                             ('b', '0000:01:00.0')], 0)
    with pytest.raises(UsageError, match='processes 0 and 1 on a both use the GPU at '
                                         '0000:01:00.0'):
        devices.check_distinct_gpus([('a', '0000:01:00.0'), ('a', '0000:01:00.0')], 0)


@pytest.mark.parametrize('name, gpu, refused', [
    ('naive', 0, True), ('flat', 1, True), ('pure_nccl', 0, False), ('naive', -1, False),
    (None, 0, False)])
def test_training_on_gpus_needs_pure_nccl(name, gpu, refused):
    args = types.SimpleNamespace(communicator=name, gpu=gpu)
    if not refused:
        distributed.check_training_communicator(args)
        return
    with pytest.raises(distributed.AgreedError,
                       match='--communicator %s --gpu %d: .*with --communicator pure_nccl'
                             % (name, gpu)):
        distributed.check_training_communicator(args)


def test_losses_are_checked_in_one_copy():
    assert training.check_losses([np.float32(1.5), np.float32(2.0)], 1, 'out') == [1.5, 2.0]
    with pytest.raises(training.TrainingError,
                       match='loss became nan at epoch 2, iteration 5;'):
        training.check_losses([np.float32(1), np.float32('nan')], 2, 'out', first=3)


def test_gpu_batches_are_not_cut_by_length():
    assert length_batching.length_pieces(np) == 4
    assert length_batching.length_pieces(types.SimpleNamespace()) == 1


class CountingTokenizer(object):
    """ids = one id per word; records the thread that tokenised each text."""

    def __init__(self):
        self.threads = set()

    def encode(self, text, max_seq_length):
        import threading
        self.threads.add(threading.current_thread().name)
        if text == 'boom':
            raise UsageError('input.txt:%s: bad line' % text)
        return [1] * len(text.split()), False


def _examples(texts):
    from bertlib import data
    return [data.Example(i + 1, 'l%d' % i, text) for i, text in enumerate(texts)]


def test_extraction_tokenises_ahead_and_keeps_input_order():
    """Chunks of 2 batches of 2: the next chunk is tokenised in a thread while this one
    is encoded; rows come out in input order, the vector being each sentence's length."""
    texts = ['a ' * (1 + (7 * i) % 5) for i in range(11)]
    tokenizer = CountingTokenizer()

    def encode(input_ids, input_mask):
        return input_mask.sum(axis=1, keepdims=True).astype(np.float32)
    extractor = features.FeatureExtractor(tokenizer, encode, batchsize=2, chunk_batches=2)
    pairs = list(extractor(_examples(texts)))
    assert [example.label for example, _ in pairs] == ['l%d' % i for i in range(11)]
    assert [int(vector[0]) for _, vector in pairs] == [len(t.split()) for t in texts]
    assert tokenizer.threads and 'MainThread' not in tokenizer.threads
    assert extractor.count == 11


def test_an_error_in_a_later_chunk_comes_out_after_the_earlier_rows():
    extractor = features.FeatureExtractor(
        CountingTokenizer(), lambda ids, mask: mask.sum(axis=1, keepdims=True) * 1.0,
        batchsize=1, chunk_batches=2)
    seen = []
    with pytest.raises(UsageError, match='input.txt:boom: bad line'):
        for example, _ in extractor(_examples(['a', 'b c', 'd', 'boom'])):
            seen.append(example.label)
    assert seen == ['l0', 'l1']
