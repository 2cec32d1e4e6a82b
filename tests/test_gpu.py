"""CPU against GPU: the building blocks, one epoch of each trainer, the three extractors,
resuming across devices and a 2-process pure_nccl run. Every test is marked `gpu` and
skips where no usable GPU is (tests/conftest.py); tools/gpu_check.sh runs them on a GPU
machine with `pytest -m gpu`.

BERTLIB_GPU_DRY_RUN=1 runs them with the CPU standing in for the GPU (`tools/gpu_check.sh
dry-run`): it checks the tests' own logic on a machine without a GPU, nothing more."""

import copy
import json
import os

import chainer
import numpy as np
import pytest

import extruct_bert_classified
import extruct_bert_embed
import extruct_bert_metrics
import train_classifier
import train_dml
from bertlib import activations, checkpoints, dropout, modeling, normalization, optimization
from conftest import (WORDS, model_flags, mpi_missing, mpirun, write_labelled,
                      write_random_bert)

pytestmark = pytest.mark.gpu

FEATURE_TOLERANCE = 1e-4  # the bound on CPU vs GPU features
DRY_RUN = os.environ.get('BERTLIB_GPU_DRY_RUN') == '1'
GPU = '-1' if DRY_RUN else '0'  # --gpu of the scripts


def gpu():
    return chainer.get_device('@numpy' if DRY_RUN else '@cupy:0')


def seed_gpu(value):
    if DRY_RUN:
        dropout.seed(value)
    else:
        import cupy
        seed_gpu(value)


def to_cpu(array):
    return chainer.backend.CpuDevice().send(getattr(array, 'array', array))


@pytest.fixture
def tiny(tmp_path):
    """A random 2-layer BERT as files and two small labelled files."""
    folder = write_random_bert(tmp_path / 'bert', WORDS, hidden_size=32, num_hidden_layers=2,
                               num_attention_heads=4, intermediate_size=64)
    write_labelled(tmp_path, train=48, evaluation=16, spread=5)
    return folder


# --- building blocks ----------------------------------------------------------------------

def test_gelu_forward_and_backward():
    rng = np.random.RandomState(0)
    x = (rng.randn(64, 96) * 3).astype(np.float32)
    gy = rng.randn(64, 96).astype(np.float32)
    results = []
    for device in (chainer.get_device('@numpy'), gpu()):
        v = chainer.Variable(device.send(x))
        y = activations.gelu(v)
        y.grad = device.send(gy)
        y.backward()
        results.append((to_cpu(y), to_cpu(v.grad)))
    np.testing.assert_allclose(results[1][0], results[0][0], atol=1e-6, rtol=1e-6)
    np.testing.assert_allclose(results[1][1], results[0][1], atol=1e-5, rtol=1e-5)


def test_layer_normalization_forward_and_backward():
    rng = np.random.RandomState(1)
    x = (rng.randn(40, 32) * 2 + 1).astype(np.float32)
    gy = rng.randn(40, 32).astype(np.float32)
    cpu_link = normalization.LayerNormalization(32, eps=1e-12)
    cpu_link.gamma.array[:] = rng.randn(32)
    gpu_link = copy.deepcopy(cpu_link).to_device(gpu())
    outputs = []
    for link in (cpu_link, gpu_link):
        v = chainer.Variable(link.device.send(x))
        y = link(v)
        y.grad = link.device.send(gy)
        y.backward()
        outputs.append((to_cpu(y), to_cpu(v.grad), to_cpu(link.gamma.grad)))
    for cpu_value, gpu_value in zip(*outputs):
        np.testing.assert_allclose(gpu_value, cpu_value, atol=1e-4, rtol=1e-4)


def test_dropout_is_identity_in_test_mode_and_seeded_in_training():
    x = gpu().send(np.ones((8, 16), np.float32))
    with chainer.using_config('train', False):
        assert (to_cpu(dropout.dropout(x, 0.1)) == 1).all()
    with chainer.using_config('train', True):
        seed_gpu(5)
        first = to_cpu(dropout.dropout(x, 0.5))
        seed_gpu(5)
        again = to_cpu(dropout.dropout(x, 0.5))
        seed_gpu(6)
        other = to_cpu(dropout.dropout(x, 0.5))
    assert set(np.unique(first)) <= {0.0, 2.0}
    assert (first == again).all() and not (first == other).all()


def test_adamw_update():
    rng = np.random.RandomState(2)
    cpu_link = chainer.links.Linear(16, 8, initialW=rng.randn(8, 16).astype(np.float32))
    gpu_link = copy.deepcopy(cpu_link).to_device(gpu())
    x = rng.randn(4, 16).astype(np.float32)
    for link in (cpu_link, gpu_link):
        optimizer = optimization.make_optimizer(link, 1e-2, 0.01)
        optimizer.eta = 0.5
        for _ in range(3):
            loss = chainer.functions.sum(link(link.device.send(x)) ** 2)
            link.cleargrads()
            loss.backward()
            optimizer.update()
    for name, param in cpu_link.namedparams():
        np.testing.assert_allclose(to_cpu(dict(gpu_link.namedparams())[name]), param.array,
                                   atol=1e-5, rtol=1e-5)


def test_bert_forward_and_backward(tiny):
    config = modeling.BertConfig.from_json_file(str(tiny / 'bert_config.json'))
    np.random.seed(0)
    cpu_bert = modeling.BertModel(config)
    gpu_bert = copy.deepcopy(cpu_bert).to_device(gpu())
    rng = np.random.RandomState(3)
    ids = rng.randint(5, len(WORDS) + 5, size=(6, 12)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[3:, 7:] = 0
    results = []
    with chainer.using_config('train', False):
        for bert in (cpu_bert, gpu_bert):
            bert.cleargrads()
            vectors = bert.encode(bert.device.send(ids), bert.device.send(mask), pooling='mean')
            chainer.functions.sum(vectors ** 2).backward()
            grads = {name: to_cpu(p.grad) for name, p in bert.namedparams()
                     if p.grad is not None}
            results.append((to_cpu(vectors), grads))
    np.testing.assert_allclose(results[1][0], results[0][0], atol=1e-5, rtol=1e-4)
    assert results[0][1].keys() == results[1][1].keys()
    for name, cpu_grad in results[0][1].items():
        np.testing.assert_allclose(results[1][1][name], cpu_grad, atol=1e-4, rtol=1e-3,
                                   err_msg=name)


# --- scripts ------------------------------------------------------------------------------

def dml_args(tmp_path, tiny, out, *extra):
    return (['--train', str(tmp_path / 'train.txt'), '--eval', str(tmp_path / 'eval.txt'),
             '--out', str(out), '--batchsize', '16', '--dim', '8', '--noplot',
             '--loss', 'batch_hard', '--samples_per_class', '4'] + model_flags(tiny)
            + list(extra))


def classifier_args(tmp_path, tiny, out, *extra):
    return (['--train', str(tmp_path / 'train.txt'), '--eval', str(tmp_path / 'eval.txt'),
             '--out', str(out), '--batchsize', '16', '--noplot'] + model_flags(tiny)
            + list(extra))


def weights(path):
    with np.load(path) as archive:
        return {k: archive[k] for k in archive.files if k != 'meta/json'}


def log(out):
    return [json.loads(line) for line in (out / 'log.jsonl').read_text().splitlines()]


def test_one_epoch_of_train_dml_is_repeatable(tmp_path, tiny, capsys):
    """Same --seed, same weights: GPU dropout comes from --seed, not os.urandom."""
    for name in ('a', 'b'):
        train_dml.main(dml_args(tmp_path, tiny, tmp_path / name, '--epoch', '1', '--gpu', GPU))
    capsys.readouterr()
    record, = log(tmp_path / 'a')
    assert np.isfinite(record['T/loss']) and 0 <= record['D/acc2'] <= 1
    first, second = weights(tmp_path / 'a' / 'final.model'), weights(tmp_path / 'b' / 'final.model')
    assert all((first[k] == second[k]).all() for k in first)


def test_one_epoch_of_train_classifier(tmp_path, tiny, capsys):
    train_classifier.main(classifier_args(tmp_path, tiny, tmp_path / 'out', '--epoch', '1',
                                          '--gpu', GPU))
    capsys.readouterr()
    record, = log(tmp_path / 'out')
    assert np.isfinite(record['T/loss']) and 0 <= record['D/acc1'] <= 1


def features_of(main, argv, capsys, device):
    capsys.readouterr()
    main(argv + ['--gpu', device])
    rows = [line.split('\t') for line in capsys.readouterr().out.splitlines()]
    return [r[0] for r in rows], np.array([[float(v) for v in r[1:]] for r in rows])


def assert_same_features(main, argv, capsys):
    cpu_labels, cpu_vectors = features_of(main, argv, capsys, '-1')
    gpu_labels, gpu_vectors = features_of(main, argv, capsys, GPU)
    assert cpu_labels == gpu_labels and cpu_vectors.shape == gpu_vectors.shape
    assert np.abs(cpu_vectors - gpu_vectors).max() <= FEATURE_TOLERANCE


def test_the_three_extractors_agree_with_the_cpu(tmp_path, tiny, capsys):
    text = tmp_path / 'eval.txt'
    for pooling in ('pooled', 'mean'):
        assert_same_features(extruct_bert_embed.main,
                             ['--input', str(text), '--pooling', pooling] + model_flags(tiny),
                             capsys)
    train_dml.main(dml_args(tmp_path, tiny, tmp_path / 'dml', '--epoch', '1', '--gpu', GPU))
    assert_same_features(extruct_bert_metrics.main,
                         ['--input', str(text), '--model', str(tmp_path / 'dml' / 'final.model'),
                          '--label', str(tmp_path / 'dml' / 'labels.bin')] + model_flags(tiny),
                         capsys)
    train_classifier.main(classifier_args(tmp_path, tiny, tmp_path / 'cls', '--epoch', '1',
                                          '--gpu', GPU))
    assert_same_features(extruct_bert_classified.main,
                         ['--input', str(text), '--model', str(tmp_path / 'cls' / 'final.model'),
                          '--label', str(tmp_path / 'cls' / 'labels.bin')] + model_flags(tiny),
                         capsys)


def test_resume_gpu_then_cpu_then_gpu(tmp_path, tiny, capsys):
    out = tmp_path / 'out'
    train_dml.main(dml_args(tmp_path, tiny, out, '--epoch', '1', '--gpu', GPU))
    after_one = weights(out / 'final.model')
    train_dml.main(dml_args(tmp_path, tiny, out, '--epoch', '2', '--gpu', '-1',
                            '--resume', str(out)))
    after_two = weights(out / 'final.model')
    train_dml.main(dml_args(tmp_path, tiny, out, '--epoch', '3', '--gpu', GPU,
                            '--resume', str(out)))
    capsys.readouterr()
    assert [r['epoch'] for r in log(out)] == [1, 2, 3]
    final = weights(out / 'final.model')
    for name in after_one:
        assert np.isfinite(final[name]).all(), name
    changed = [name for name in after_one if not (after_one[name] == after_two[name]).all()]
    assert changed and any(not (after_two[n] == final[n]).all() for n in changed)
    assert checkpoints.read_meta(str(out / 'final.model'))['epoch'] == 3


def test_two_process_pure_nccl_training(tmp_path, tiny):
    if DRY_RUN:
        pytest.skip('pure_nccl needs GPUs')
    import cupy
    if cupy.cuda.runtime.getDeviceCount() < 2:
        pytest.skip('needs two visible GPUs')
    if mpi_missing():
        pytest.skip(mpi_missing())
    out = tmp_path / 'out'
    result = mpirun([(2, ['train_dml.py'] + dml_args(tmp_path, tiny, out, '--epoch', '1',
                                                     '--gpu', GPU, '--communicator',
                                                     'pure_nccl'))], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    record, = log(out)
    assert np.isfinite(record['T/loss'])
    assert os.path.isfile(out / 'final.model')
