"""bertlib/optimization.py: the fused AdamW against a plain NumPy AdamW, the decay mask,
gradient clipping, the learning-rate schedule and Adam's step factor."""

import math

import chainer
import chainer.links as L
import numpy as np
import pytest

from bertlib import optimization

LEARNRATE, WEIGHTDECAY = 1e-2, 0.01
BETA1, BETA2, EPS = 0.9, 0.999, 1e-6


def numpy_adamw(params, grads_per_step, etas, decays):
    """Reference AdamW of BERT, in float64: clip the step's gradients to global norm 1,
    then for each parameter m, v, the bias-corrected step and the decoupled decay
    `p -= eta * (alpha_t * m / (sqrt(v) + eps) + decay * p)`."""
    params = {k: v.astype(np.float64) for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(p) for k, p in params.items()}
    for t, (grads, eta) in enumerate(zip(grads_per_step, etas), 1):
        norm = math.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads.values()))
        scale = min(1.0, 1.0 / (norm + 1e-6))
        alpha_t = LEARNRATE * math.sqrt(1 - BETA2 ** t) / (1 - BETA1 ** t)
        for k in params:
            g = grads[k].astype(np.float64) * scale
            m[k] += (1 - BETA1) * (g - m[k])
            v[k] += (1 - BETA2) * (g * g - v[k])
            params[k] -= eta * (alpha_t * m[k] / (np.sqrt(v[k]) + EPS) + decays[k] * params[k])
    return params


def new_link():
    """A Linear(5 -> 3) link with the same random W and b at every call."""
    np.random.seed(0)
    return L.Linear(5, 3, initial_bias=np.random.randn(3).astype(np.float32))


def feed(model, optimizer, grads_per_step, etas):
    """Runs one update per step with the given gradients and learning-rate multipliers."""
    for grads, eta in zip(grads_per_step, etas):
        model.cleargrads()
        for name, param in model.namedparams():
            param.grad = grads[name].copy()
        optimizer.eta = eta
        optimizer.update()


def run_optimizer(grads_per_step, etas):
    """make_optimizer on `new_link()`, fed the given gradients; returns the starting
    parameters, the parameters after the steps and the link."""
    model = new_link()
    start = {name: param.array.copy() for name, param in model.namedparams()}
    feed(model, optimization.make_optimizer(model, LEARNRATE, WEIGHTDECAY), grads_per_step,
         etas)
    return start, {name: param.array for name, param in model.namedparams()}, model


def gradients(steps, scale, seed=1):
    rng = np.random.RandomState(seed)
    return [{'/W': (scale * rng.randn(3, 5)).astype(np.float32),
             '/b': (scale * rng.randn(3)).astype(np.float32)} for _ in range(steps)]


@pytest.mark.parametrize('scale', [0.01, 10.0], ids=['unclipped', 'clipped'])
def test_adamw_matches_a_numpy_adamw(scale):
    grads = gradients(6, scale)
    etas = [optimization.schedule(step, 6, warmup_steps=2) for step in range(6)]
    start, after, _ = run_optimizer(grads, etas)
    # Decay on the weight matrix only, given per unit of learning rate.
    expected = numpy_adamw(start, grads, etas, {'/W': WEIGHTDECAY * LEARNRATE, '/b': 0.0})
    for name in ('/W', '/b'):
        assert not np.allclose(after[name], start[name])
        np.testing.assert_allclose(after[name], expected[name], rtol=1e-5, atol=1e-7)


def test_weight_decay_skips_biases_and_layer_norm():
    _, _, model = run_optimizer(gradients(1, 0.01), [1.0])
    rates = {name: param.update_rule.hyperparam.weight_decay_rate
             for name, param in model.namedparams()}
    assert rates == {'/W': pytest.approx(WEIGHTDECAY * LEARNRATE), '/b': 0.0}
    assert all(isinstance(param.update_rule, optimization.FusedAdamRule)
               for param in model.params())


def test_fused_kernel_is_chainers_adamw_update():
    """The fused loop against Chainer's own AdamRule on the same state, decay included."""
    rng = np.random.RandomState(2)
    param, grad = rng.randn(50).astype(np.float32), rng.randn(50).astype(np.float32)
    m, v = (0.1 * rng.randn(50)).astype(np.float32), (0.1 * rng.rand(50)).astype(np.float32)
    alpha_t, eta, decay = 0.003, 0.7, 0.05
    p2, m2, v2 = param.copy(), m.copy(), v.copy()
    optimization._adamw_update(p2, grad, m2, v2, alpha_t, BETA1, BETA2, EPS, eta, decay)
    m_ref = m + (1 - BETA1) * (grad - m)
    v_ref = v + (1 - BETA2) * (grad * grad - v)
    p_ref = param - eta * (alpha_t * m_ref / (np.sqrt(v_ref) + EPS) + decay * param)
    np.testing.assert_allclose(m2, m_ref, rtol=1e-6)
    np.testing.assert_allclose(v2, v_ref, rtol=1e-6)
    np.testing.assert_allclose(p2, p_ref, rtol=1e-5, atol=1e-7)


def test_fused_rule_equals_chainers_rule():
    grads = gradients(4, 0.5, seed=3)
    etas = [1.0, 0.75, 0.5, 0.25]
    _, fused, _ = run_optimizer(grads, etas)
    model = new_link()
    plain = chainer.optimizers.AdamW(alpha=LEARNRATE, beta1=BETA1, beta2=BETA2, eps=EPS,
                                     weight_decay_rate=WEIGHTDECAY * LEARNRATE)
    plain.setup(model)
    model.b.update_rule.hyperparam.weight_decay_rate = 0.0
    plain.add_hook(chainer.optimizer_hooks.GradientClipping(1.0))
    feed(model, plain, grads, etas)
    for name, param in model.namedparams():
        np.testing.assert_allclose(fused[name], param.array, rtol=1e-5, atol=1e-7)


def test_schedule_warms_up_then_decays_to_zero():
    assert [optimization.schedule(s, 10) for s in (0, 5, 9, 10, 12)] == [1.0, 0.5, 0.1, 0.0, 0.0]
    warm = [optimization.schedule(s, 10, warmup_steps=4) for s in range(11)]
    assert warm[:4] == [0.25, 0.5, 0.75, 1.0]
    assert warm[4:] == pytest.approx([1.0, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6, 0.0])


def test_adam_step_factor_is_the_bias_correction():
    assert optimization.adam_step_factor(0) == 0.0
    assert optimization.adam_step_factor(1) == pytest.approx(math.sqrt(0.001) / 0.1)
    assert optimization.adam_step_factor(100) == pytest.approx(
        math.sqrt(1 - 0.999 ** 100) / (1 - 0.9 ** 100))


def test_a_frozen_parameter_gets_no_gradient_and_leaves_the_others_as_alone():
    """A disabled update rule (a frozen word table): the parameter keeps no gradient and
    no moments and does not move, and the others move exactly as in a model without it
    (the clipping norm is theirs alone)."""
    grads = gradients(4, 10.0)  # clipped: the norm matters
    etas = [1.0] * 4
    _, alone, _ = run_optimizer(grads, etas)

    model = chainer.Chain()
    with model.init_scope():
        model.trained = new_link()
        model.frozen = L.Linear(5, 3)
    frozen_before = model.frozen.W.array.copy()
    optimizer = optimization.make_optimizer(model, LEARNRATE, WEIGHTDECAY)
    model.frozen.disable_update()
    assert optimization.is_frozen(model.frozen.W)
    assert not optimization.is_frozen(model.trained.W)
    for step_grads, eta in zip(grads, etas):
        model.cleargrads()
        for name, param in model.trained.namedparams():
            param.grad = step_grads[name].copy()
        optimizer.eta = eta
        optimizer.update()
        assert model.frozen.W.grad is None and model.frozen.b.grad is None
    assert model.frozen.W.update_rule.state is None
    np.testing.assert_array_equal(model.frozen.W.array, frozen_before)
    for name, param in model.trained.namedparams():
        np.testing.assert_array_equal(param.array, alone[name])


def test_a_weight_average_leaves_frozen_parameters_out():
    model = chainer.Chain()
    with model.init_scope():
        model.trained = new_link()
        model.frozen = L.Linear(5, 3)
    optimizer = optimization.make_optimizer(model, LEARNRATE, WEIGHTDECAY)
    model.frozen.disable_update()
    average = optimization.add_weight_average(optimizer, model, 0.9)
    assert sorted(average.state()) == ['ema/trained/W', 'ema/trained/b']
