"""BERT's optimizer in Chainer: AdamW, a linear learning-rate schedule, clipping.

As Google's `optimization.py`: Adam with decoupled weight decay on weight matrices only
(not biases or LayerNorm), eps 1e-6, gradients clipped to global norm 1, the learning
rate warmed up linearly (optionally) and then decayed linearly to 0. The CPU update is one
fused loop per parameter (Chainer's makes six NumPy passes over 22M numbers a step).

A frozen parameter (`modeling.BertModel.freeze_word_embeddings`) has its update rule
disabled: it gets no gradient (none is allocated), no Adam moments, no clipping and no
weight average, and final.state holds its step count only.

Two ways to keep a fine-tuned BERT near its pre-trained weights (what classes unseen in
training need, see docs/unseen-classes.md): `add_l2sp`, a penalty toward the starting
weights, and `apply_layer_decay`, smaller learning rates for the lower layers.

Training state kept beside the optimizer's (the raw weights of `WeightAverage`, the
queue of a cross-batch memory) is registered with `keep_state` and saved in and restored
from `final.state` with Adam's moments, so a resumed run stays bit-exact.
"""

import math

import chainer
import numpy as np
from chainer.optimizers import adam

from bertlib.compat import numba

# Parameters that BERT excludes from weight decay: biases and LayerNorm scales/shifts.
_NO_DECAY = ('/b', '/gamma', '/beta')


@numba.njit(cache=True, fastmath=True)
def _adamw_update(param, grad, m, v, alpha_t, beta1, beta2, eps, eta, weight_decay_rate):
    """In place over flat float32 arrays; the same arithmetic as Chainer's AdamRule."""
    decay = 1.0 - eta * weight_decay_rate
    for i in range(param.shape[0]):
        g = grad[i]
        m[i] += (1.0 - beta1) * (g - m[i])
        v[i] += (1.0 - beta2) * (g * g - v[i])
        param[i] = decay * param[i] - eta * (alpha_t / (math.sqrt(v[i]) + eps)) * m[i]


class FusedAdamRule(adam.AdamRule):
    """Chainer's AdamRule with the float32 CPU update fused into one loop."""

    def update_core_cpu(self, param):
        hp = self.hyperparam
        if (param.grad is None or param.dtype != np.float32 or hp.amsgrad or hp.adabound
                or not param.data.flags.c_contiguous or not numba.compiled):
            return super(FusedAdamRule, self).update_core_cpu(param)
        _adamw_update(param.data.reshape(-1), param.grad.reshape(-1),
                      self.state['m'].reshape(-1), self.state['v'].reshape(-1),
                      self.alpha_t, hp.beta1, hp.beta2, hp.eps, hp.eta,
                      hp.weight_decay_rate)


class AdamW(chainer.optimizers.AdamW):
    """chainer.optimizers.AdamW with `FusedAdamRule`, whose serialisation also covers
    the arrays of the objects registered with `keep_state`."""

    def create_update_rule(self):
        return FusedAdamRule(self.hyperparam)

    def reallocate_cleared_grads(self):
        """As Chainer's (zeros for every parameter that got no gradient, before and after
        the hooks), but a frozen parameter keeps none: zeros for it would cost a (vocab,
        hidden) array for the word embedding at every step."""
        for param in self.target.params(False):
            if param.grad is None and not is_frozen(param):
                param.grad = param.xp.zeros_like(param.array)

    def extra_state(self):
        """{name: array} of the registered objects' state (saved in place, restored in
        place: a deserializer copies into these very arrays)."""
        arrays = {}
        for owner in getattr(self, 'state_owners', ()):
            arrays.update(owner.state())
        return arrays

    def serialize(self, serializer):
        super(AdamW, self).serialize(serializer)
        for name, array in sorted(self.extra_state().items()):
            serializer(name, array)


def is_frozen(param):
    """True for a parameter whose update rule is disabled (see the module docstring)."""
    return param.update_rule is not None and not param.update_rule.enabled


class _ParamsWithGradients(object):
    """What GradientClipping reads of an optimizer (`target.params(False)`), with the
    parameters that have no gradient (the frozen ones) left out."""

    def __init__(self, optimizer):
        self.target = self
        self.optimizer = optimizer

    def params(self, include_uninit=True):
        return [param for param in self.optimizer.target.params(include_uninit)
                if param.grad is not None]


class GradientClipping(chainer.optimizer_hooks.GradientClipping):
    """Chainer's clipping to a global norm, over the parameters that have a gradient:
    the same numbers when all have one."""

    def __call__(self, optimizer):
        super(GradientClipping, self).__call__(_ParamsWithGradients(optimizer))


def keep_state(optimizer, owner):
    """Saves and restores `owner.state()` ({name: host or device array}, names not
    clashing with parameter names) with the optimizer's own state."""
    if not hasattr(optimizer, 'state_owners'):
        optimizer.state_owners = []
    optimizer.state_owners.append(owner)


class WeightAverage(object):
    """Exponential moving average of a model's parameters, updated after every step:
    average = decay * average + (1 - decay) * weights (Polyak averaging, as in
    timm's ModelEmaV2).

    The model holds either the training weights or the average; the other copy lives
    here, and `swap` exchanges them. At rest (on creation, while scoring and saving) the
    model holds the average, so final.model and the early-stopped models are averaged
    and final.state keeps the training weights (`state`, under 'ema/'). On creation
    both copies are the model's weights; after `--resume` the state restores the
    training weights here, so the same `use_training_weights` then continues exactly.
    """

    timing = 'post'

    def __init__(self, model, decay):
        if not 0 < decay < 1:
            raise ValueError('decay must be between 0 and 1, got %r' % decay)
        self.decay = decay
        # A frozen parameter never changes: its average would be itself.
        self.params = sorted((name, param) for name, param in model.namedparams()
                             if not is_frozen(param))
        self.other = {name: param.array.copy() for name, param in self.params}
        self.holds_average = True  # the model holds the average

    def state(self):
        """The copy that is not in the model: the training weights, at rest."""
        return {'ema' + name: self.other[name] for name, _ in self.params}

    def swap(self):
        for name, param in self.params:
            param.array, self.other[name] = self.other[name], param.array
        self.holds_average = not self.holds_average

    def __call__(self, optimizer):
        """The post-update hook: fold the new training weights into the average."""
        if self.holds_average:
            raise RuntimeError('the model holds the averaged weights during training')
        for name, param in self.params:
            average = self.other[name]
            average *= self.decay
            average += (1.0 - self.decay) * param.array


def add_weight_average(optimizer, model, decay):
    """Keeps an exponential moving average of `model`'s weights with `optimizer` (see
    `WeightAverage`); call after `make_optimizer` (which freezes what the model asks)
    and before loading a final.state."""
    average = WeightAverage(model, decay)
    optimizer.add_hook(average, name='ema', timing='post')
    keep_state(optimizer, average)
    optimizer.weight_average = average
    return average


def use_training_weights(optimizer):
    """Before an epoch's steps: the model gets the training weights (no-op without an
    average)."""
    average = getattr(optimizer, 'weight_average', None)
    if average is not None and average.holds_average:
        average.swap()


def use_averaged_weights(optimizer):
    """Before scoring and saving: the model gets the averaged weights (no-op without an
    average)."""
    average = getattr(optimizer, 'weight_average', None)
    if average is not None and not average.holds_average:
        average.swap()


def make_optimizer(model, learnrate, weightdecay):
    """AdamW as BERT's: eps 1e-6, decoupled weight decay on weight matrices only; a
    BertModel's word embeddings frozen if it asks (`freeze_word_embeddings`).

    Chainer's AdamW multiplies both the step and the decay by `eta`; the schedule drives
    `eta`, so the decay is given per unit of learning rate: weightdecay * learnrate makes
    `param -= lr(t) * (adam_step + weightdecay * param)`, as in BERT.
    """
    optimizer = AdamW(alpha=learnrate, beta1=0.9, beta2=0.999, eps=1e-6,
                      weight_decay_rate=weightdecay * learnrate)
    optimizer.setup(model)
    for name, param in model.namedparams():
        if name.endswith(_NO_DECAY):
            param.update_rule.hyperparam.weight_decay_rate = 0.0
    for link in model.links():
        if getattr(link, 'word_embeddings_frozen', False):  # a BertModel
            link.word_embeddings.disable_update()
    optimizer.add_hook(GradientClipping(1.0))
    return optimizer


def schedule(step, total_steps, warmup_steps=0):
    """Learning-rate multiplier at `step`: linear warm-up over `warmup_steps`, then a
    linear decay reaching 0 at `total_steps`."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    remaining = total_steps - step
    return max(0.0, remaining / max(1, total_steps - warmup_steps))


def adam_step_factor(step, beta1=0.9, beta2=0.999):
    """Adam's bias correction sqrt(1 - beta2^t) / (1 - beta1^t) after `step` updates:
    what Chainer's `optimizer.lr` reports for alpha 1, the original BERT-DML log's `lr`
    column (there alpha was 1 and `eta` the learning rate). 0 before the first update."""
    if step < 1:
        return 0.0
    return math.sqrt(1.0 - beta2 ** step) / (1.0 - beta1 ** step)


class L2SP(object):
    """The L2-SP penalty (Li, Grandvalet and Davoine 2018) as a gradient hook: adds
    weight * (w - w0) to the gradient of every trained BERT parameter, the gradient of
    weight / 2 * ||w - w0||^2, where w0 are the weights when the hook was made (the
    pre-trained ones: `add_l2sp` is called before --resume loads a checkpoint).

    It runs after the clipping hook, so the pull toward w0 is not scaled down with the
    metric loss's gradient; Adam then normalises the sum. The head and the loss's own
    parameters have no pre-trained value and are not pulled.
    """

    name = 'l2sp'
    timing = 'pre'

    def __init__(self, model, weight, prefix='/bert/'):
        if not weight > 0:
            raise ValueError('weight must be positive, got %r' % weight)
        self.weight = weight
        self.params = sorted((name, param) for name, param in model.namedparams()
                             if name.startswith(prefix) and not is_frozen(param))
        self.start = {name: param.array.copy() for name, param in self.params}

    def to_device(self, device):
        """Moves the starting weights where the model is (after `model.to_device`)."""
        self.start = {name: device.send(w) for name, w in self.start.items()}

    def __call__(self, optimizer):
        for name, param in self.params:
            if param.grad is not None:
                param.grad += self.weight * (param.array - self.start[name])


def add_l2sp(optimizer, model, weight):
    """Adds `L2SP(model, weight)` to `optimizer` (after its clipping hook); returns it."""
    hook = L2SP(model, weight)
    optimizer.add_hook(hook, name='l2sp', timing='pre')
    return hook


def layer_depth(name, n_layers):
    """Depth of a DML model's parameter for layer-wise learning-rate decay: 0 for
    BERT's embeddings, i + 1 for encoder layer_i, n_layers + 1 for the rest (pooler,
    head, loss)."""
    if name.startswith('/bert/encoder/layer_'):
        return int(name[len('/bert/encoder/layer_'):].split('/', 1)[0]) + 1
    if name.startswith('/bert/') and 'embedding' in name:
        return 0
    return n_layers + 1


def apply_layer_decay(optimizer, model, decay, n_layers):
    """Layer-wise learning-rate decay (Howard and Ruder 2018; Clark et al. 2020): the
    Adam step of a parameter at depth d (`layer_depth`) is scaled by
    decay ** (n_layers + 1 - d), so the top (pooler, head) learns at the full rate and
    each layer below at `decay` times the one above. The schedule's `eta` still drives
    every parameter; the decoupled weight decay is not scaled. Call after
    `make_optimizer`. Returns {name: scale}."""
    if not 0 < decay <= 1:
        raise ValueError('decay must be in (0, 1], got %r' % decay)
    scales = {}
    for name, param in model.namedparams():
        if param.update_rule is None:
            continue
        scale = decay ** (n_layers + 1 - layer_depth(name, n_layers))
        param.update_rule.hyperparam.alpha = optimizer.alpha * scale
        scales[name] = scale
    return scales
