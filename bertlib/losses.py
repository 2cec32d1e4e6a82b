"""Metric-learning losses for fine-tuning BERT sentence embeddings, chosen by `--loss`.

Every batch loss takes embeddings `x` (Variable or array, (B, D), float32 or float64) and
integer labels `t` ((B,)), on NumPy or CuPy, and returns a scalar Variable. Only
`chainer.functions` carry the differentiable part; which pairs a loss looks at (the
"mining") is decided on the array values, with no gradient through the decision.

    name                 what                                            reference
    'triplet'            F.triplet on sampled (a, p, n) sentence triples  the original's method
    'batch_hard'         hardest positive / negative per anchor           Hermans et al. 2017
    'multi_similarity'   mined pairs, soft-weighted by similarity         Wang et al. 2019
    'arcface'            additive angular margin to learned proxies       Deng et al. 2019
    'supcon'             supervised contrastive, L_out                    Khosla et al. 2020
    'supcon_ce'          weighted supcon + softmax cross-entropy          Gunel et al. 2021

`build(name, ...)` returns everything a `--loss` needs as one `Loss`: its sampler (which
sentences a step embeds, from `bertlib.samplers`), its function
of a batch's embeddings and labels, and the `chainer.Link` holding its parameters, if it
has any (ArcFace's class proxies, supcon_ce's classifier), which a training script
registers as a child of its model so that they are updated, moved to the GPU and saved
with it. 'triplet' is the original BERT-DML's: `samplers.sample_triplets` draws index
triples over the whole training set and `triplet_loss` scores them. The batch losses want
batches that hold several examples of each class: `samplers.pk_batches` yields them (P
classes x K examples).
Adding a loss means a function (or Link) here and one line in `_KINDS`; each flag's
default is the one in that function's signature.

`supcon` and `multi_similarity` (and `supcon_ce`'s supcon part) also take `memory`: the
unit-length embeddings and labels of earlier batches (`CrossBatchMemory`, Wang et al.
2020), constants that serve as extra positives and negatives of every anchor.
"""

import functools
import inspect
import math

import chainer
import chainer.functions as F
import numpy as np

from bertlib import samplers


# F.normalize divides by |x| + eps. Sentence embeddings have norms around 1 to 20, so
# 1e-12 leaves z exact even in float64; an all-zero row still gives 0, not NaN.
_NORM_EPS = 1e-12


# ---------------------------------------------------------------------------------------
# Shared pieces


def _inputs(x, t):
    """x as a Variable, t as an int32 array on x's device, and x's array module."""
    x = chainer.as_variable(x)
    xp = chainer.backend.get_array_module(x)
    t = xp.asarray(getattr(t, 'array', t)).astype(np.int32, copy=False)
    if x.ndim != 2 or t.shape != (x.shape[0],):
        raise ValueError('expected x of shape (B, D) and t of shape (B,), got %s and %s'
                         % (x.shape, t.shape))
    return x, t, xp


def _pair_masks(t, xp):
    """(B,) labels -> positive mask (same label, not itself) and negative mask, (B, B) bool."""
    same = t[:, None] == t[None, :]
    positive = same & ~xp.eye(t.shape[0], dtype=bool)
    return positive, ~same


def _zero_loss(x):
    """A 0 loss that is still connected to x, so backward runs and gives zero gradients.

    The sum over an empty slice is exactly 0 whatever x holds (no 0 * inf = NaN).
    """
    return F.sum(x[:0])


def _l2_normalize(x):
    """(B, D) -> rows of unit length, (B, D)."""
    return F.normalize(x, eps=_NORM_EPS, axis=1)


def _cosine_similarity(x):
    """(B, D) -> (B, B) cosine similarities of the rows."""
    z = _l2_normalize(x)
    return F.matmul(z, z, transb=True)


def _with_memory(x, t, xp, memory):
    """Cosine similarities of the batch's rows to the batch and the memory, and masks.

    x: (B, D) Variable; t: (B,) labels; memory: None or (z, labels), (M, D) unit rows and
    (M,) labels on x's device, constants. Returns s (B, B + M) Variable, positive and
    negative masks (B, B + M) bool (an anchor is never its own positive) and `others`
    (every column but the anchor itself).
    """
    if memory is None:
        positive, negative = _pair_masks(t, xp)
        return _cosine_similarity(x), positive, negative, ~xp.eye(t.shape[0], dtype=bool)
    z_memory, t_memory = memory
    z = _l2_normalize(x)
    columns = F.concat([z, xp.asarray(z_memory, dtype=x.dtype)], axis=0)
    t_all = xp.concatenate([t, xp.asarray(t_memory, dtype=t.dtype)])
    b, m = t.shape[0], t_memory.shape[0]
    others = xp.concatenate([~xp.eye(b, dtype=bool), xp.ones((b, m), dtype=bool)], axis=1)
    same = t[:, None] == t_all[None, :]
    return F.matmul(z, columns, transb=True), same & others, ~same, others


# ---------------------------------------------------------------------------------------
# 1. Triplet loss on sampled triples (the original BERT-DML's method)


def triplet_loss(anchor, positive, negative, margin):
    """mean_i max(0, |a_i - p_i|^2 - |a_i - n_i|^2 + margin); a, p, n: (N, D) -> scalar.

    Chainer's `F.triplet`, which uses squared Euclidean distances.
    """
    return F.triplet(anchor, positive, negative, margin=margin, reduce='mean')


def stacked_triplet_loss(x, t, margin=0.2):
    """`triplet_loss` of a (3 N, D) batch stacked as anchors | positives | negatives (as
    `TripletSampler` draws it); t is not used: the sampler chose the triples."""
    n = x.shape[0] // 3
    return triplet_loss(x[:n], x[n:2 * n], x[2 * n:], margin=margin)


# ---------------------------------------------------------------------------------------
# 2. Batch-hard triplet loss (Hermans, Beyer and Leibe 2017)

# Inside the square root, so d = sqrt(d^2 + eps) has a finite gradient where two
# embeddings coincide (1 / (2 sqrt(eps)) times a gradient of d^2 that is then 0).
_DISTANCE_EPS = 1e-12


def _euclidean_distances(x):
    """(B, D) -> (B, B) Euclidean distances sqrt(|x_i|^2 + |x_j|^2 - 2 x_i.x_j + eps).

    One matrix product instead of a (B, B, D) difference tensor. Rounding can make the
    squared distance of (near) duplicates slightly negative; relu clamps it at 0.
    """
    square = F.sum(x * x, axis=1)
    d2 = square[:, None] + square[None, :] - 2 * F.matmul(x, x, transb=True)
    return F.sqrt(F.relu(d2) + _DISTANCE_EPS)


def batch_hard_triplet_loss(x, t, margin=0.2):
    """Batch-hard triplet loss: (B, D) embeddings, (B,) labels -> scalar.

    For each anchor i, the hardest positive is the farthest example of its class (not
    itself) and the hardest negative the closest of another class:
        l_i = max(0, max_p d(i, p) - min_n d(i, n) + margin)
    averaged over the anchors that have at least one positive and one negative; 0 if
    none has. Distances are Euclidean, not squared (as in the paper).
    """
    x, t, xp = _inputs(x, t)
    positive, negative = _pair_masks(t, xp)
    valid = positive.any(axis=1) & negative.any(axis=1)
    n_valid = int(valid.sum())
    if n_valid == 0:
        return _zero_loss(x)

    d = _euclidean_distances(x)
    # Pick the hardest pairs on the values; the gradient then flows through just those
    # two distances per anchor. Anchors without a positive or negative pick an arbitrary
    # column here and are masked out below.
    hardest_p = xp.where(positive, d.array, -xp.inf).argmax(axis=1).astype(np.int32)
    hardest_n = xp.where(negative, d.array, xp.inf).argmin(axis=1).astype(np.int32)
    hinge = F.relu(F.select_item(d, hardest_p) - F.select_item(d, hardest_n) + margin)
    return F.sum(hinge * valid.astype(x.dtype)) / n_valid


# ---------------------------------------------------------------------------------------
# 3. Multi-similarity loss (Wang, Han, Huang, Dong and Scott 2019)


def _log1p_sum_exp(a, mask):
    """(B, N) Variable, (B, N) bool -> (B,) log(1 + sum_j mask_ij exp(a_ij)), stably.

    With m = max(0, max_j a_ij) per row: m + log(exp(-m) + sum_j mask_ij exp(a_ij - m)).
    m is a constant (no gradient needed: it cancels). Masked-out entries are set to m
    before exp, so a large unmasked value cannot overflow into inf * 0 = NaN.
    """
    xp = chainer.backend.get_array_module(a)
    m = xp.maximum(xp.where(mask, a.array, -xp.inf).max(axis=1, keepdims=True), 0)
    m = m.astype(a.dtype, copy=False)
    shifted = F.where(mask, a, xp.broadcast_to(m, a.shape)) - m
    total = F.sum(F.exp(shifted) * mask.astype(a.dtype), axis=1)
    return m[:, 0] + F.log(xp.exp(-m[:, 0]) + total)


def multi_similarity_loss(x, t, alpha=2.0, beta=50.0, base=0.5, epsilon=0.1, memory=None):
    """Multi-similarity loss: (B, D) embeddings, (B,) labels -> scalar.

    S_ij is the cosine similarity. Pair mining, per anchor i (on the values):
        positive j kept if S_ij - epsilon < max_{k negative} S_ik
        negative k kept if S_ik + epsilon > min_{j positive} S_ij
    Weighting:
        l_i = 1/alpha log(1 + sum_kept_j exp(-alpha (S_ij - base)))
            + 1/beta  log(1 + sum_kept_k exp( beta (S_ik - base)))
    and the loss is sum_i l_i / B (anchors with no kept pairs add 0), as in the
    authors' reference code. Defaults are the paper's (alpha 2, beta 50, lambda 0.5,
    epsilon 0.1).

    The anchor itself is left out of its positives by index. (The reference code drops
    positives with S_ij >= 1 - epsilon instead, which also drops near-duplicates.)
    For an anchor with both positives and negatives the two kept sets are empty
    together (both mean min_pos S - epsilon >= max_neg S), so the paper's formula and
    the reference code's skipping of such anchors agree.

    memory: None or ((M, D) unit rows, (M,) labels) of earlier batches, mined and
    weighted as further pairs of each anchor (the sum is still divided by B).
    """
    x, t, xp = _inputs(x, t)
    s, positive, negative, _ = _with_memory(x, t, xp, memory)
    sa = s.array
    hardest_negative = xp.where(negative, sa, -xp.inf).max(axis=1, keepdims=True)
    hardest_positive = xp.where(positive, sa, xp.inf).min(axis=1, keepdims=True)
    keep_positive = positive & (sa - epsilon < hardest_negative)
    keep_negative = negative & (sa + epsilon > hardest_positive)
    if not (keep_positive.any() or keep_negative.any()):
        return _zero_loss(x)

    pull = _log1p_sum_exp(-alpha * (s - base), keep_positive) / alpha
    push = _log1p_sum_exp(beta * (s - base), keep_negative) / beta
    return F.sum(pull + push) / x.shape[0]


# ---------------------------------------------------------------------------------------
# 4. ArcFace: additive angular margin to learned class proxies (Deng, Guo, Xue and
#    Zafeiriou 2019)


class ArcFace(chainer.Link):
    """Softmax over s * cos(angle to each class proxy), the target angle widened by m.

    W: (n_classes, dim) proxies. For embeddings x (B, dim) and labels t (B,):
        cos_ij = normalise(x_i) . normalise(W_j)
        logit_ij = s cos(theta_ij + m)  if j = t_i,  s cos_ij otherwise
    and the loss is the mean softmax cross-entropy. When theta + m passes pi, cos(theta
    + m) would grow again; there (cos theta < cos(pi - m)) the target logit is
    s (cos theta - m sin m) instead, the usual fallback.

    Defaults, for sentence embeddings: s = 30 instead of the face papers' 64, because a
    sentence task has few classes (tens, not 85k identities), and s = 30 already lets the
    target's softmax probability approach 1 (e^30 against C - 1 others) without the
    logits saturating early. m = 0.3 rad instead of 0.5, because topic or intent classes
    overlap far more than face identities and a BERT fine-tuned on a few thousand
    sentences cannot open a 0.5 rad gap between all of them: the loss then stays high
    and pushes more examples into the fallback region.
    """

    def __init__(self, n_classes, dim, scale=30.0, margin=0.3):
        super().__init__()
        if n_classes < 2:
            raise ValueError('ArcFace needs at least 2 classes, got %d' % n_classes)
        if not 0 <= margin < math.pi / 2:
            raise ValueError('margin must be in [0, pi/2) radians, got %r' % margin)
        self.n_classes = n_classes
        self.dim = dim
        self.scale = scale
        self.margin = margin
        self._cos_m = math.cos(margin)
        self._sin_m = math.sin(margin)
        self._threshold = math.cos(math.pi - margin)
        self._fallback = margin * math.sin(margin)
        with self.init_scope():
            # The scale does not matter (the proxies are normalised); small keeps the
            # first updates from being dominated by the random start.
            self.W = chainer.Parameter(chainer.initializers.Normal(0.01), (n_classes, dim))

    def cosine(self, x):
        """(B, dim) -> (B, n_classes) cosine of each embedding with each class proxy."""
        return F.matmul(_l2_normalize(x), _l2_normalize(self.W), transb=True)

    def logits(self, x, t):
        """(B, dim), (B,) -> (B, n_classes) scaled logits with the margin on the target."""
        x, t, xp = _inputs(x, t)
        cos = self.cosine(x)
        cos_t = F.select_item(cos, t)
        # cos(theta + m) = cos theta cos m - sin theta sin m; the clip keeps sin theta
        # (and its gradient 1 / sin) away from 0 when cos theta rounds to +-1.
        c = F.clip(cos_t, -1.0 + 1e-7, 1.0 - 1e-7)
        sin_t = F.sqrt(1.0 - c * c)
        with_margin = c * self._cos_m - sin_t * self._sin_m
        target = F.where(cos_t.array > self._threshold, with_margin, cos_t - self._fallback)
        is_target = xp.arange(self.n_classes)[None, :] == t[:, None]
        return self.scale * F.where(is_target, F.broadcast_to(target[:, None], cos.shape),
                                    cos)

    def forward(self, x, t):
        """(B, dim) embeddings, (B,) labels -> scalar mean cross-entropy."""
        x, t, _ = _inputs(x, t)
        return F.softmax_cross_entropy(self.logits(x, t), t)


# ---------------------------------------------------------------------------------------
# 5. Supervised contrastive loss, L_out (Khosla et al. 2020)


def supcon_loss(x, t, temperature=0.1, memory=None):
    """Supervised contrastive loss: (B, D) embeddings, (B,) labels -> scalar.

    z = normalise(x). For each anchor i with positives P(i) (same label, not i):
        l_i = -1/|P(i)| sum_{p in P(i)} log( exp(z_i.z_p / tau) / sum_{a != i} exp(z_i.z_a / tau) )
    averaged over the anchors that have positives; 0 if none has. The batch holds one
    view per sentence (no augmentation), so positives are the other sentences of the
    class. tau = 0.1 is the paper's value.

    memory: None or ((M, D) unit rows, (M,) labels) of earlier batches: further columns,
    positives where their label is the anchor's, in the denominator in any case.
    """
    x, t, xp = _inputs(x, t)
    similarity, positive, _, others = _with_memory(x, t, xp, memory)
    n_positive = positive.sum(axis=1)
    valid = n_positive > 0
    n_valid = int(valid.sum())
    if n_valid == 0:
        return _zero_loss(x)

    logits = similarity / temperature
    # Subtracting each row's largest off-diagonal logit (a constant: it cancels between
    # numerator and denominator) keeps exp <= 1 and the denominator >= 1.
    row_max = xp.where(others, logits.array, -xp.inf).max(axis=1, keepdims=True)
    shifted = logits - row_max.astype(x.dtype, copy=False)
    # The diagonal (1/tau above the row max at most) is left out of the sum: zero it
    # before exp so that a small tau cannot overflow there into inf * 0 = NaN.
    off_diagonal = F.where(others, shifted, xp.zeros_like(shifted.array))
    denominator = F.sum(F.exp(off_diagonal) * others.astype(x.dtype), axis=1, keepdims=True)
    log_prob = shifted - F.log(denominator)
    mean_positive = (F.sum(log_prob * positive.astype(x.dtype), axis=1)
                     / xp.maximum(n_positive, 1).astype(x.dtype))
    return -F.sum(mean_positive * valid.astype(x.dtype)) / n_valid


class SupConCE(chainer.Chain):
    """Supervised contrastive loss plus softmax cross-entropy (Gunel, Du, Conneau and
    Stoyanov 2021, for fine-tuning pre-trained language models):
        L = weight * supcon(x, t) + (1 - weight) * CE(classifier(x), t)
    `classifier` (Linear(dim, n_classes), saved under loss/ and ignored by extraction)
    reads the same embedding the supcon term normalises. Rows whose label is not a
    training class (eval classes unseen in training) take part in the supcon term only.
    The paper's best settings are weight 0.9 and temperature 0.3; the temperature
    defaults to supcon's 0.1 here, as train_dml.py's --temperature always has.
    """

    def __init__(self, n_classes, dim, temperature=0.1, weight=0.9):
        super(SupConCE, self).__init__()
        if not 0 <= weight <= 1:
            raise ValueError('weight must be between 0 and 1, got %r' % weight)
        self.n_classes = n_classes
        self.temperature = temperature
        self.weight = weight
        with self.init_scope():
            self.classifier = chainer.links.Linear(
                dim, n_classes, initialW=chainer.initializers.Normal(0.02))

    def forward(self, x, t, memory=None):
        """(B, dim) embeddings, (B,) labels -> scalar loss."""
        x, t, xp = _inputs(x, t)
        contrastive = supcon_loss(x, t, self.temperature, memory=memory)
        known = xp.flatnonzero(t < self.n_classes)
        if len(known) == 0 or self.weight == 1:
            return contrastive
        logits = self.classifier(x[known]) if len(known) < len(t) else self.classifier(x)
        cross_entropy = F.softmax_cross_entropy(logits, t[known])
        return self.weight * contrastive + (1.0 - self.weight) * cross_entropy


def similarity_distillation(x, teacher, temperature=0.05):
    """Distillation of a teacher's in-batch similarity structure: (B, D) student
    embeddings (Variable) and (B, D') teacher vectors (a constant array) -> scalar.

    For each sentence i, p_i and q_i are softmax distributions over the other sentences
    a != i of the batch, of the teacher's and the student's cosine similarities / tau:
        l = 1/B sum_i KL(p_i || q_i) = 1/B sum_i sum_{a != i} p_ia (log p_ia - log q_ia)
    The student keeps which sentences the pre-trained model holds nearest to each other,
    whatever the metric loss does to the classes it trains on; that order is what
    retrieval of classes unseen in training reads. 0 for a batch of one.
    """
    x = chainer.as_variable(x)
    xp = chainer.backend.get_array_module(x)
    b = x.shape[0]
    if x.ndim != 2 or teacher.ndim != 2 or teacher.shape[0] != b:
        raise ValueError('expected x (B, D) and teacher (B, D\'), got %s and %s'
                         % (x.shape, teacher.shape))
    if b < 2:
        return _zero_loss(x)
    others = ~xp.eye(b, dtype=bool)
    z_teacher = xp.asarray(teacher, dtype=x.dtype)
    z_teacher = z_teacher / xp.maximum(
        xp.linalg.norm(z_teacher, axis=1, keepdims=True), _NORM_EPS)
    log_p = _masked_log_softmax_array(z_teacher @ z_teacher.T / temperature, others, xp)
    p = xp.exp(log_p) * others
    logits = _cosine_similarity(x) / temperature
    row_max = xp.where(others, logits.array, -xp.inf).max(axis=1, keepdims=True)
    # As in supcon_loss: the diagonal is zeroed before exp and left out of the sum.
    shifted = F.where(others, logits - row_max.astype(x.dtype, copy=False),
                      xp.zeros_like(logits.array))
    log_q = shifted - F.log(F.sum(F.exp(shifted) * others.astype(x.dtype), axis=1,
                                  keepdims=True))
    kl = xp.sum(p * xp.where(others, log_p, 0)) - F.sum(log_q * p.astype(x.dtype))
    return kl / b


def _masked_log_softmax_array(logits, mask, xp):
    """Row-wise log-softmax over the entries where `mask` is True (array, no graph);
    elsewhere -inf."""
    masked = xp.where(mask, logits, -xp.inf)
    shifted = masked - masked.max(axis=1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))


class CrossBatchMemory(object):
    """The unit-length embeddings and labels of the last `size` training sentences
    (Wang, Zhang, Huang and Scott 2020, "Cross-Batch Memory for Embedding Learning"), a
    ring buffer on the host. The paper starts the memory once the embeddings have
    stopped drifting fast: for the first `warmup` steps it is neither read nor filled.

    `state()` ({name: array}) is saved in final.state with the optimizer and restored in
    place, so a resumed run sees the same memory.
    """

    def __init__(self, size, dim, warmup=0):
        if size < 1 or warmup < 0:
            raise ValueError('size must be >= 1 and warmup >= 0, got %r, %r'
                             % (size, warmup))
        self.size = size
        self.warmup = warmup
        self.embeddings = np.zeros((size, dim), dtype=np.float32)
        self.labels = np.full(size, -1, dtype=np.int32)  # -1: empty slot
        self.counters = np.zeros(2, dtype=np.int64)  # steps seen, next slot

    def state(self):
        return {'memory/embeddings': self.embeddings, 'memory/labels': self.labels,
                'memory/counters': self.counters}

    def contents(self, xp=np):
        """((M, D) unit rows, (M,) labels) on xp, oldest first, or None before the
        warm-up ends or while empty."""
        filled = self.labels >= 0
        if self.counters[0] < self.warmup or not filled.any():
            return None
        order = np.roll(np.arange(self.size), -int(self.counters[1]))
        order = order[filled[order]]
        return xp.asarray(self.embeddings[order]), xp.asarray(self.labels[order])

    def push(self, x, t):
        """Counts a step and, after the warm-up, enqueues the batch's (B, D) embeddings
        (any array; normalised here) and (B,) labels, dropping the oldest."""
        self.counters[0] += 1
        if self.counters[0] <= self.warmup:
            return
        x = chainer.backend.CpuDevice().send(getattr(x, 'array', x)).astype(np.float32)
        t = chainer.backend.CpuDevice().send(getattr(t, 'array', t)).astype(np.int32)
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = x / np.maximum(norms, _NORM_EPS)
        if len(t) > self.size:
            x, t = x[-self.size:], t[-self.size:]
        slots = (int(self.counters[1]) + np.arange(len(t))) % self.size
        self.embeddings[slots] = x
        self.labels[slots] = t
        self.counters[1] = (int(self.counters[1]) + len(t)) % self.size


# ---------------------------------------------------------------------------------------
# Selection by name: the one place that knows every --loss


class _Kind(object):
    """How to build one --loss. make: a batch loss function (x, t, [memory], **params) or
    a Link class (n_classes, dim, **params) whose parameters are saved under loss/; its
    signature's defaults are the flags' defaults. flags: {flag: parameter of make}.
    triples: trained on sampled triples, not on batches. memory: takes a cross-batch
    memory. proxies: scores a sentence against its class's learned proxy, so only
    training classes can be scored."""

    def __init__(self, make, flags, triples=False, memory=False, proxies=False):
        self.make = make
        self.flags = flags
        self.triples = triples
        self.memory = memory
        self.proxies = proxies
        self.is_link = isinstance(make, type)

    def default(self, flag):
        return inspect.signature(self.make).parameters[self.flags[flag]].default


_KINDS = {
    'triplet': _Kind(stacked_triplet_loss, {'margin': 'margin'}, triples=True),
    'batch_hard': _Kind(batch_hard_triplet_loss, {'margin': 'margin'}),
    'multi_similarity': _Kind(multi_similarity_loss, {}, memory=True),
    'arcface': _Kind(ArcFace, {'scale': 'scale', 'margin': 'margin'}, proxies=True),
    'supcon': _Kind(supcon_loss, {'temperature': 'temperature'}, memory=True),
    'supcon_ce': _Kind(SupConCE, {'temperature': 'temperature', 'supcon_weight': 'weight'},
                       memory=True),
}

LOSSES = tuple(_KINDS)

# The losses that take a cross-batch memory.
MEMORY_LOSSES = tuple(name for name, kind in _KINDS.items() if kind.memory)

# train_dml.py's flags that are loss parameters.
FLAGS = ('margin', 'scale', 'temperature', 'supcon_weight')


def flag_default(flag, name):
    """The default of a loss flag (e.g. 'margin') under --loss `name`: that loss's own
    default, or, for a loss that does not take the flag, that of the first loss taking it
    (the value train_dml.py prints among its arguments)."""
    owners = [kind for kind in _KINDS.values() if flag in kind.flags]
    kind = _KINDS[name] if flag in _KINDS[name].flags else owners[0]
    return kind.default(flag)


class Loss(object):
    """One --loss, ready to train (made by `build`).

    Attributes:
        name: the --loss name.
        link: a chainer.Link with the loss's own parameters (ArcFace's proxies,
            supcon_ce's classifier), to register as the model's child `loss`; or None.
        memory: whether the loss takes a cross-batch memory.
        proxies: whether only training classes can be scored (see `_Kind`).
    """

    def __init__(self, name, function, sampler, link=None, memory=False, proxies=False):
        self.name = name
        self.link = link
        self.memory = memory
        self.proxies = proxies
        self._function = function
        self._sampler = sampler

    def batches(self, labels, rng):
        """One epoch of (B,) int64 sentence indices into `labels`, drawn with rng."""
        return self._sampler(labels, rng)

    def __call__(self, x, t, memory=None):
        """(B, D) embeddings of a batch's sentences, their (B,) labels -> scalar loss.
        memory: see `CrossBatchMemory.contents`."""
        if memory is None:
            return self._function(x, t)
        return self._function(x, t, memory=memory)


def build(name, n_classes, dim, batchsize, triplets, samples_per_class, sampling='pk',
          **flags):
    """The --loss `name` with its sampler, function and parameters.

    n_classes: training classes; dim: embedding size; batchsize: sentences (triples for
    'triplet') per step; triplets: triples drawn per epoch ('triplet'); samples_per_class:
    K of P x K batches; sampling: 'pk' or 'random' for the batch losses. flags: the loss
    flags of `FLAGS`, None or absent for the loss's default; those the loss does not take
    are ignored. A Link is built here (drawing its initial weights from NumPy's global
    generator). Raises ValueError for an unknown name.
    """
    if name not in _KINDS:
        raise ValueError('unknown loss %r; choose from %s' % (name, ', '.join(LOSSES)))
    kind = _KINDS[name]
    params = {parameter: flags[flag] for flag, parameter in kind.flags.items()
              if flags.get(flag) is not None}
    if kind.triples:
        sampler = samplers.TripletSampler(triplets, batchsize)
    elif sampling == 'random':
        sampler = samplers.RandomSampler(batchsize)
    else:
        sampler = samplers.PKSampler(batchsize, samples_per_class)
    link = kind.make(n_classes, dim, **params) if kind.is_link else None
    function = link if link is not None else functools.partial(kind.make, **params)
    return Loss(name, function, sampler, link=link, memory=kind.memory,
                proxies=kind.proxies)
