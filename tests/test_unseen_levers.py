"""The levers that keep a fine-tuned model near the pre-trained one, for classes unseen in
training: --distill (losses.similarity_distillation), --l2sp (optimization.L2SP),
--layer_decay (optimization.apply_layer_decay) and extruct_bert_metrics.py's
--interpolate (dml.interpolate)."""

import math
import subprocess
import sys

import chainer
import chainer.gradient_check
import chainer.links as L
import numpy as np
import pytest

import extruct_bert_embed
import extruct_bert_metrics
import train_dml
from bertlib import checkpoints, dml, losses, optimization
from bertlib.errors import UsageError
from conftest import ROOT, final_arrays, model_flags, train_args


# ---------------------------------------------------------------------------------------
# losses.similarity_distillation


def reference_distillation(x, teacher, temperature):
    """1/B sum_i KL(p_i || q_i), softmaxes over a != i, from the formula with loops."""
    def cos(u, v):
        return float(np.dot(u, v) / np.linalg.norm(u) / np.linalg.norm(v))

    b, total = len(x), 0.0
    for i in range(b):
        others = [a for a in range(b) if a != i]
        t = [math.exp(cos(teacher[i], teacher[a]) / temperature) for a in others]
        s = [math.exp(cos(x[i], x[a]) / temperature) for a in others]
        p = [v / sum(t) for v in t]
        q = [v / sum(s) for v in s]
        total += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    return total / b


def test_distillation_is_the_kl_of_the_similarity_distributions():
    rng = np.random.RandomState(0)
    x, teacher = rng.randn(6, 4), rng.randn(6, 5)
    for temperature in (0.05, 0.5):
        value = losses.similarity_distillation(x, teacher, temperature).array
        assert value == pytest.approx(reference_distillation(x, teacher, temperature),
                                      rel=1e-9)


def test_distillation_is_zero_where_the_student_has_the_teachers_geometry():
    rng = np.random.RandomState(1)
    teacher = rng.randn(5, 4)
    scaled = teacher * rng.uniform(0.5, 3, size=(5, 1))  # cosines do not see the norms
    assert abs(float(losses.similarity_distillation(scaled, teacher, 0.1).array)) < 1e-12
    assert float(losses.similarity_distillation(rng.randn(5, 4), teacher, 0.1).array) > 0.01
    assert float(losses.similarity_distillation(teacher[:1], teacher[:1], 0.1).array) == 0


def test_distillation_gradient():
    rng = np.random.RandomState(2)
    x, teacher = rng.randn(5, 3), rng.randn(5, 4)
    chainer.gradient_check.check_backward(
        lambda v: losses.similarity_distillation(v, teacher, 0.2), x, np.array(1.0),
        dtype=np.float64, eps=1e-6, atol=1e-6, rtol=1e-6)


def test_distillation_refuses_mismatched_rows():
    with pytest.raises(ValueError, match='expected x'):
        losses.similarity_distillation(np.zeros((3, 2)), np.zeros((4, 2)), 0.1)


# ---------------------------------------------------------------------------------------
# optimization.L2SP and apply_layer_decay, on a model with BERT's parameter names


class Layers(chainer.Chain):
    def __init__(self, n):
        super(Layers, self).__init__()
        with self.init_scope():
            for i in range(n):
                setattr(self, 'layer_%d' % i, L.Linear(3, 3))


class FakeBert(chainer.Chain):
    def __init__(self, n=2):
        super(FakeBert, self).__init__()
        with self.init_scope():
            self.word_embeddings = L.EmbedID(4, 3)
            self.encoder = Layers(n)


class FakeDML(chainer.Chain):
    def __init__(self):
        super(FakeDML, self).__init__()
        with self.init_scope():
            self.bert = FakeBert()
            self.output = L.Linear(3, 2)


def gradients_of(model, value=1.0):
    for param in model.params():
        param.grad = np.full_like(param.array, value)


def test_l2sp_adds_the_pull_toward_the_starting_weights_to_bert_only():
    model = FakeDML()
    hook = optimization.L2SP(model, 0.5)
    start = {name: p.array.copy() for name, p in model.namedparams()}
    for param in model.params():
        param.array += 2.0
    gradients_of(model, 0.0)
    hook(None)
    for name, param in model.namedparams():
        expected = 0.5 * 2.0 if name.startswith('/bert/') else 0.0
        assert np.allclose(param.grad, expected), name
        assert np.allclose(hook.start.get(name, start[name]), start[name])
    with pytest.raises(ValueError):
        optimization.L2SP(model, 0)


def test_l2sp_is_the_gradient_of_half_the_squared_distance():
    """One SGD-free check: with the loss gradient zero, the hook's gradient is that of
    weight / 2 * ||w - w0||^2 (by finite difference on one weight)."""
    model = FakeDML()
    hook = optimization.L2SP(model, 0.3)
    w = model.bert.word_embeddings.W
    w.array[0, 0] += 0.7
    gradients_of(model, 0.0)
    hook(None)

    def penalty(value):
        return 0.3 / 2 * (value - hook.start['/bert/word_embeddings/W'][0, 0]) ** 2
    v = float(w.array[0, 0])
    numeric = (penalty(v + 1e-3) - penalty(v - 1e-3)) / 2e-3
    assert float(w.grad[0, 0]) == pytest.approx(numeric, rel=1e-3)


def test_layer_decay_scales_each_depths_step():
    model = FakeDML()
    optimizer = optimization.make_optimizer(model, 1e-3, 0.0)
    scales = optimization.apply_layer_decay(optimizer, model, 0.5, n_layers=2)
    assert scales['/bert/word_embeddings/W'] == 0.5 ** 3
    assert scales['/bert/encoder/layer_0/W'] == 0.5 ** 2
    assert scales['/bert/encoder/layer_1/b'] == 0.5
    assert scales['/output/W'] == 1
    before = {name: p.array.copy() for name, p in model.namedparams()}
    optimizer.eta = 1.0
    gradients_of(model)
    optimizer.update()
    # Adam's first step moves every weight by alpha (times eta) whatever the gradient.
    for name, param in model.namedparams():
        step = np.abs(param.array - before[name]).max()
        assert step == pytest.approx(1e-3 * scales[name], rel=1e-3), name
    with pytest.raises(ValueError):
        optimization.apply_layer_decay(optimizer, model, 0, n_layers=2)


# ---------------------------------------------------------------------------------------
# dml.interpolate


def test_interpolate_blends_every_bert_weight():
    a, b = FakeBert(), FakeBert()
    before = {name: p.array.copy() for name, p in a.namedparams()}
    others = {name: p.array.copy() for name, p in b.namedparams()}
    dml.interpolate(a, b, 0.25)
    for name, param in a.namedparams():
        assert np.allclose(param.array, 0.25 * before[name] + 0.75 * others[name]), name
    with pytest.raises(ValueError):
        dml.interpolate(a, b, 1.5)


# ---------------------------------------------------------------------------------------
# train_dml.py and extruct_bert_metrics.py

LEVERS = ('--loss', 'supcon', '--samples_per_class', '4', '--distill', '0.5',
          '--distill_temperature', '0.2', '--l2sp', '0.1', '--layer_decay', '0.8')


@pytest.mark.parametrize('flag, value, message', [
    ('--distill', '-1', '--distill must be a number of at least 0'),
    ('--distill_temperature', '0', '--distill_temperature must be a number above 0'),
    ('--l2sp', 'nan', '--l2sp must be a number of at least 0'),
    ('--layer_decay', '0', '--layer_decay must be a number above 0 and at most 1'),
    ('--layer_decay', '1.5', '--layer_decay must be a number above 0 and at most 1'),
])
def test_out_of_range_levers(tmp_path, tiny, flag, value, message):
    with pytest.raises(UsageError, match=message):
        train_dml.main(train_args(tmp_path, tiny, tmp_path / 'x', flag, value))


def test_a_bad_lever_is_one_error_line_and_exit_2(tmp_path, tiny):
    for script, flags in (('train_dml.py', train_args(tmp_path, tiny, tmp_path / 'x',
                                                      '--layer_decay', '2')),
                          ('extruct_bert_metrics.py', ['--input', str(tmp_path / 'eval.txt'),
                                                       '--model', 'm', '--label', 'l',
                                                       '--interpolate', '-0.5']
                           + model_flags(tiny))):
        result = subprocess.run([sys.executable, str(ROOT / script)] + flags,
                                capture_output=True, text=True, cwd=str(ROOT))
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith('error: '), result.stderr
        assert 'must be a number' in lines[0]


def test_help_names_the_levers():
    for script, flags in (('train_dml.py', ['--distill', '--distill_temperature', '--l2sp',
                                            '--layer_decay']),
                          ('extruct_bert_metrics.py', ['--interpolate'])):
        result = subprocess.run([sys.executable, str(ROOT / script), '--help'],
                                capture_output=True, text=True, cwd=str(ROOT))
        for flag in flags:
            assert flag in result.stdout, (script, flag)


def test_levers_change_the_training_and_go_into_the_metadata(tmp_path, tiny):
    plain, levers = tmp_path / 'plain', tmp_path / 'levers'
    train_dml.main(train_args(tmp_path, tiny, plain, '--epoch', '1', *LEVERS[:4]))
    train_dml.main(train_args(tmp_path, tiny, levers, '--epoch', '1', *LEVERS))
    meta = checkpoints.read_meta(str(levers / 'final.model'))
    assert (meta['distill'], meta['distill_temperature'], meta['l2sp'],
            meta['layer_decay']) == (0.5, 0.2, 0.1, 0.8)
    assert checkpoints.read_meta(str(plain / 'final.model'))['distill'] == 0
    a, b = final_arrays(plain), final_arrays(levers)
    assert not np.array_equal(a['bert/encoder/layer_0/attention/query/W'],
                              b['bert/encoder/layer_0/attention/query/W'])


def test_resume_must_be_given_the_same_levers(tmp_path, tiny):
    """--resume refuses other values of the levers than the model's metadata holds.
    (That a resumed run with the levers is bit-exact is tested with the other
    options in tests/test_dml_methods.py.)"""
    out = tmp_path / 'out'
    train_dml.main(train_args(tmp_path, tiny, out, '--epoch', '1', *LEVERS))
    for flag, value, saved in (('--distill', '0.7', '0.5'), ('--l2sp', '0', '0.1'),
                               ('--layer_decay', '1', '0.8'),
                               ('--distill_temperature', '0.05', '0.2')):
        with pytest.raises(UsageError, match='trained with %s %s, not' % (flag, saved)):
            train_dml.main(train_args(tmp_path, tiny, tmp_path / 'again', '--epoch', '2',
                                      *LEVERS, flag, value, '--resume', str(out)))


def test_interpolate_zero_gives_the_pretrained_features(tmp_path, tiny, capsys):
    out = tmp_path / 'out'
    train_dml.main(train_args(tmp_path, tiny, out, '--epoch', '1', '--head', 'none',
                              '--pooling', 'mean', '--learnrate', '1e-2', *LEVERS[:4]))
    capsys.readouterr()
    common = ['--input', str(tmp_path / 'eval.txt')] + model_flags(tiny)
    model = ['--model', str(out / 'final.model'), '--label', str(out / 'labels.bin'),
             '--no_centre']

    def features(main, flags):
        main(common + flags)
        return np.array([[float(v) for v in line.split('\t')[1:]]
                         for line in capsys.readouterr().out.splitlines()])
    pretrained = features(extruct_bert_embed.main, ['--pooling', 'mean'])
    tuned = features(extruct_bert_metrics.main, model)
    assert np.abs(tuned - pretrained).max() > 1e-3
    assert np.allclose(features(extruct_bert_metrics.main, model + ['--interpolate', '0']),
                       pretrained, atol=2e-6)
    assert np.array_equal(features(extruct_bert_metrics.main, model + ['--interpolate', '1']),
                          tuned)
    half = features(extruct_bert_metrics.main, model + ['--interpolate', '0.5'])
    assert np.abs(half - tuned).max() > 1e-4 and np.abs(half - pretrained).max() > 1e-4
