"""Tests of `bertlib.losses`.

Each loss is compared with a reference written here from the paper's formula with plain
NumPy loops over anchors and pairs (no vectorised tricks, nothing from the module), and
its gradient is checked by finite differences in float64 on inputs where no mining
decision, hinge or branch is near a tie (asserted, so a finite difference cannot cross
one).
"""

import math

import chainer
import chainer.gradient_check
import numpy as np
import pytest

from bertlib import losses, samplers

LABELS = np.array([0, 0, 0, 1, 1, 2, 2, 3], dtype=np.int32)  # class 3 has no positive
TOLERANCE = {np.float32: {'rtol': 1e-5, 'atol': 1e-5}, np.float64: {'rtol': 1e-10, 'atol': 1e-10}}


# ---------------------------------------------------------------------------------------
# References, from the formulas


def unit(v):
    return v / math.sqrt(sum(c * c for c in v))


def distance(u, v):
    return math.sqrt(sum((a - b) ** 2 for a, b in zip(u, v)))


def cosine(u, v):
    return float(np.dot(unit(u), unit(v)))


def reference_triplet(a, p, n, margin):
    return np.mean([max(0.0, distance(a[i], p[i]) ** 2 - distance(a[i], n[i]) ** 2 + margin)
                    for i in range(len(a))])


def reference_batch_hard(x, t, margin):
    terms = []
    for i in range(len(x)):
        d_pos = [distance(x[i], x[j]) for j in range(len(x)) if j != i and t[j] == t[i]]
        d_neg = [distance(x[i], x[j]) for j in range(len(x)) if t[j] != t[i]]
        if d_pos and d_neg:
            terms.append(max(0.0, max(d_pos) - min(d_neg) + margin))
    return np.mean(terms) if terms else 0.0


def ms_kept_pairs(x, t, epsilon):
    """Per anchor, the kept positive and negative similarities of the MS mining rule."""
    kept = []
    for i in range(len(x)):
        s_pos = [cosine(x[i], x[j]) for j in range(len(x)) if j != i and t[j] == t[i]]
        s_neg = [cosine(x[i], x[j]) for j in range(len(x)) if t[j] != t[i]]
        kept.append(([s for s in s_pos if s_neg and s - epsilon < max(s_neg)],
                     [s for s in s_neg if s_pos and s + epsilon > min(s_pos)]))
    return kept


def reference_multi_similarity(x, t, alpha, beta, base, epsilon):
    total = 0.0
    for s_pos, s_neg in ms_kept_pairs(x, t, epsilon):
        total += math.log(1 + sum(math.exp(-alpha * (s - base)) for s in s_pos)) / alpha
        total += math.log(1 + sum(math.exp(beta * (s - base)) for s in s_neg)) / beta
    return total / len(x)


def reference_arcface(x, t, w, scale, margin):
    total = 0.0
    for i in range(len(x)):
        logits = []
        for j in range(len(w)):
            c = cosine(x[i], w[j])
            if j == t[i]:
                theta = math.acos(c)
                c = math.cos(theta + margin) if theta + margin <= math.pi \
                    else c - margin * math.sin(margin)
            logits.append(scale * c)
        total += -logits[t[i]] + math.log(sum(math.exp(v) for v in logits))
    return total / len(x)


def reference_supcon(x, t, temperature):
    terms = []
    for i in range(len(x)):
        positives = [p for p in range(len(x)) if p != i and t[p] == t[i]]
        if not positives:
            continue
        denominator = sum(math.exp(cosine(x[i], x[a]) / temperature)
                          for a in range(len(x)) if a != i)
        terms.append(-sum(math.log(math.exp(cosine(x[i], x[p]) / temperature) / denominator)
                          for p in positives) / len(positives))
    return np.mean(terms) if terms else 0.0


def clustered(seed, dtype=np.float64, labels=LABELS, dim=6, spread=0.6):
    """Embeddings around one random centre per class, so mining has easy and hard pairs."""
    rng = np.random.RandomState(seed)
    centres = rng.randn(labels.max() + 1, dim)
    return (centres[labels] + spread * rng.randn(len(labels), dim)).astype(dtype)


def check_gradient(function, x, params=()):
    chainer.gradient_check.check_backward(function, x, None, params=params, eps=1e-5,
                                          atol=1e-7, rtol=1e-6, dtype=np.float64)


def finite_gradient(function, x):
    x = chainer.Variable(np.array(x))
    loss = function(x)
    loss.backward()
    return np.isfinite(loss.array) and x.grad is not None and np.isfinite(x.grad).all()


# ---------------------------------------------------------------------------------------
# 1. Triplet loss and triple sampling


def test_triplet_loss_value_and_gradient():
    rng = np.random.RandomState(0)
    a, p, n = (rng.randn(6, 4) for _ in range(3))
    margin = 0.7
    hinge = [distance(a[i], p[i]) ** 2 - distance(a[i], n[i]) ** 2 + margin for i in range(6)]
    assert min(abs(h) for h in hinge) > 0.05 and min(hinge) < 0 < max(hinge)
    value = losses.triplet_loss(a.astype(np.float32), p.astype(np.float32),
                                n.astype(np.float32), margin=margin).array
    assert value.dtype == np.float32
    np.testing.assert_allclose(value, reference_triplet(a, p, n, margin), **TOLERANCE[np.float32])
    chainer.gradient_check.check_backward(
        lambda a, p, n: losses.triplet_loss(a, p, n, margin), (a, p, n), None,
        eps=1e-5, atol=1e-7, rtol=1e-6)


SAMPLING_LABELS = np.array([3, 3, 3, 7, 7, 9, 5, 5, 5, 5, 3])  # 9 is a singleton


def test_sample_triplets_properties():
    y = SAMPLING_LABELS
    a, p, n = samplers.sample_triplets(y, 3000, np.random.RandomState(0))
    assert a.shape == p.shape == n.shape == (3000,)
    assert (y[a] == y[p]).all()
    assert (a != p).all()
    assert (y[a] != y[n]).all()
    assert 5 not in a and 5 not in p  # the singleton is never an anchor or a positive ...
    assert 5 in n  # ... but it is a negative
    # Every other member of the class is drawn as a positive, every other-class example
    # as a negative.
    assert set(zip(a, p)) == {(i, j) for i in range(len(y)) for j in range(len(y))
                              if i != j and y[i] == y[j]}
    assert set(zip(a, n)) == {(i, j) for i in range(len(y)) if i != 5
                              for j in range(len(y)) if y[i] != y[j]}
    # Anchors are taken pass by pass: each eligible example equally often (3000 / 10).
    assert (np.bincount(a, minlength=len(y))[np.arange(len(y)) != 5] == 300).all()


def test_sample_triplets_count_zero_is_one_pass():
    a, p, n = samplers.sample_triplets(SAMPLING_LABELS, 0, np.random.RandomState(1))
    eligible = [i for i in range(len(SAMPLING_LABELS)) if i != 5]
    assert sorted(a) == eligible
    assert len(p) == len(n) == len(eligible)


def test_sample_triplets_is_reproducible():
    first = samplers.sample_triplets(SAMPLING_LABELS, 50, np.random.RandomState(42))
    again = samplers.sample_triplets(SAMPLING_LABELS, 50, np.random.RandomState(42))
    other = samplers.sample_triplets(SAMPLING_LABELS, 50, np.random.RandomState(43))
    for u, v in zip(first, again):
        np.testing.assert_array_equal(u, v)
    assert any((u != v).any() for u, v in zip(first, other))


@pytest.mark.parametrize('labels, message', [
    ([4, 4, 4], 'at least 2 classes'),
    ([0, 1, 2], 'at least 2 examples'),
])
def test_sample_triplets_rejects_labels_without_triples(labels, message):
    with pytest.raises(ValueError, match=message):
        samplers.sample_triplets(np.array(labels), 0, np.random.RandomState(0))


# ---------------------------------------------------------------------------------------
# 2. Batch-hard triplet loss


@pytest.mark.parametrize('dtype', [np.float32, np.float64])
def test_batch_hard_value(dtype):
    x = clustered(0)
    loss = losses.batch_hard_triplet_loss(x.astype(dtype), LABELS, margin=0.5)
    assert loss.dtype == dtype
    np.testing.assert_allclose(loss.array, reference_batch_hard(x, LABELS, 0.5), **TOLERANCE[dtype])


def batch_hard_gaps(x, t, margin):
    """Smallest gap between the hardest and next-hardest pair, and from the hinge to 0."""
    gaps = []
    for i in range(len(x)):
        d_pos = sorted(distance(x[i], x[j]) for j in range(len(x)) if j != i and t[j] == t[i])
        d_neg = sorted(distance(x[i], x[j]) for j in range(len(x)) if t[j] != t[i])
        if d_pos and d_neg:
            gaps.append(abs(d_pos[-1] - d_neg[0] + margin))
            gaps += [d_pos[-1] - d_pos[-2]] if len(d_pos) > 1 else []
            gaps += [d_neg[1] - d_neg[0]] if len(d_neg) > 1 else []
    return min(gaps)


def test_batch_hard_gradient():
    x = clustered(1)
    assert batch_hard_gaps(x, LABELS, 0.5) > 1e-2
    assert reference_batch_hard(x, LABELS, 0.5) > 0
    check_gradient(lambda x: losses.batch_hard_triplet_loss(x, LABELS, margin=0.5), x)


def test_batch_hard_identical_embeddings_have_finite_gradients():
    x = np.ones((6, 4), dtype=np.float32)
    t = np.array([0, 0, 1, 1, 2, 2], dtype=np.int32)
    loss = losses.batch_hard_triplet_loss(x, t, margin=0.2)
    np.testing.assert_allclose(loss.array, 0.2, atol=1e-6)  # d_ap = d_an
    assert finite_gradient(lambda x: losses.batch_hard_triplet_loss(x, t), x)


# ---------------------------------------------------------------------------------------
# 3. Multi-similarity loss

MS = {'alpha': 2.0, 'beta': 10.0, 'base': 0.5, 'epsilon': 0.1}


@pytest.mark.parametrize('dtype', [np.float32, np.float64])
@pytest.mark.parametrize('hyper', [MS, {}], ids=['beta10', 'paper'])
def test_multi_similarity_value(dtype, hyper):
    x = clustered(2)
    full = {'alpha': 2.0, 'beta': 50.0, 'base': 0.5, 'epsilon': 0.1, **hyper}
    # The example exercises the mining: some pairs kept, some dropped.
    kept = ms_kept_pairs(x, LABELS, full['epsilon'])
    n_kept = sum(len(pos) + len(neg) for pos, neg in kept)
    n_pairs = sum((LABELS == c).sum() * ((LABELS == c).sum() - 1) for c in range(4)) \
        + sum((LABELS != LABELS[i]).sum() for i in range(len(LABELS)))
    assert 0 < n_kept < n_pairs
    loss = losses.multi_similarity_loss(x.astype(dtype), LABELS, **hyper)
    assert loss.dtype == dtype
    np.testing.assert_allclose(loss.array, reference_multi_similarity(x, LABELS, **full),
                               **TOLERANCE[dtype])


def multi_similarity_gaps(x, t, epsilon):
    """Smallest distance of any pair from its mining threshold."""
    gaps = []
    for i in range(len(x)):
        s_pos = [cosine(x[i], x[j]) for j in range(len(x)) if j != i and t[j] == t[i]]
        s_neg = [cosine(x[i], x[j]) for j in range(len(x)) if t[j] != t[i]]
        if s_pos and s_neg:
            gaps += [abs(s - epsilon - max(s_neg)) for s in s_pos]
            gaps += [abs(s + epsilon - min(s_pos)) for s in s_neg]
    return min(gaps)


def test_multi_similarity_gradient():
    x = clustered(3)
    assert multi_similarity_gaps(x, LABELS, 0.1) > 1e-2
    check_gradient(lambda x: losses.multi_similarity_loss(x, LABELS, **MS), x)


def test_multi_similarity_large_beta_does_not_overflow():
    # beta (1 - base) = 150: exp of it overflows float32 unless the sum is shifted.
    x = np.array([[1, 0], [1, 0.1], [1, 0.05], [1, -0.1]], dtype=np.float32)
    t = np.array([0, 1, 0, 1], dtype=np.int32)
    expected = reference_multi_similarity(x.astype(np.float64), t, 2.0, 300.0, 0.5, 0.1)
    loss = losses.multi_similarity_loss(x, t, beta=300.0)
    np.testing.assert_allclose(loss.array, expected, rtol=1e-5)
    assert finite_gradient(lambda x: losses.multi_similarity_loss(x, t, beta=300.0), x)


# ---------------------------------------------------------------------------------------
# 4. ArcFace


def arcface_example(dtype):
    """Embeddings, labels and proxies; example 0 points away from its proxy (theta > pi - m)."""
    rng = np.random.RandomState(4)
    w = rng.randn(4, 6)
    x = w[LABELS] + 0.8 * rng.randn(len(LABELS), 6)
    x[0] = -w[LABELS[0]] + 0.3 * rng.randn(6)
    return x.astype(dtype), w.astype(dtype)


def make_arcface(w, **hyper):
    with chainer.using_config('dtype', w.dtype):
        link = losses.ArcFace(w.shape[0], w.shape[1], **hyper)
    link.W.array[...] = w
    return link


@pytest.mark.parametrize('dtype', [np.float32, np.float64])
@pytest.mark.parametrize('scale, margin', [(30.0, 0.3), (64.0, 0.5), (1.0, 0.0)])
def test_arcface_value(dtype, scale, margin):
    x, w = arcface_example(np.float64)
    assert math.acos(cosine(x[0], w[LABELS[0]])) > math.pi - 0.3  # the fallback is used
    link = make_arcface(w.astype(dtype), scale=scale, margin=margin)
    loss = link(x.astype(dtype), LABELS)
    assert loss.dtype == dtype
    tolerance = {'rtol': 1e-5, 'atol': 1e-5 * scale} if dtype == np.float32 else TOLERANCE[dtype]
    np.testing.assert_allclose(loss.array, reference_arcface(x, LABELS, w, scale, margin),
                               **tolerance)


def test_arcface_gradient_reaches_embeddings_and_proxies():
    x, w = arcface_example(np.float64)
    margin = 0.5
    for i in range(len(x)):  # no target cosine near the branch point or the clip
        c = cosine(x[i], w[LABELS[i]])
        assert abs(c - math.cos(math.pi - margin)) > 1e-2 and abs(c) < 1 - 1e-2
    link = make_arcface(w, scale=4.0, margin=margin)
    check_gradient(lambda x: link(x, LABELS), x, params=(link.W,))


def test_arcface_proxies_are_parameters_that_learn():
    initial = losses.ArcFace(50, 200)
    assert initial.W.shape == (50, 200) and initial.W.dtype == np.float32
    assert abs(initial.W.array.std() - 0.01) < 0.001  # N(0, 0.01); 10,000 draws
    assert [name for name, _ in initial.namedparams()] == ['/W']
    x, _ = arcface_example(np.float32)
    link = make_arcface(0.01 * np.random.RandomState(13).randn(4, 6).astype(np.float32))
    optimizer = chainer.optimizers.SGD(lr=0.5)
    optimizer.setup(link)
    first = float(link(x, LABELS).array)
    for _ in range(20):
        link.cleargrads()
        loss = link(x, LABELS)
        loss.backward()
        optimizer.update()
    assert float(loss.array) < first


def test_arcface_default_hyper_parameters():
    link = losses.ArcFace(3, 5)
    assert (link.scale, link.margin) == (30.0, 0.3)


# ---------------------------------------------------------------------------------------
# 5. Supervised contrastive loss


@pytest.mark.parametrize('dtype', [np.float32, np.float64])
@pytest.mark.parametrize('temperature', [0.1, 0.5])
def test_supcon_value(dtype, temperature):
    x = clustered(5)
    loss = losses.supcon_loss(x.astype(dtype), LABELS, temperature=temperature)
    assert loss.dtype == dtype
    np.testing.assert_allclose(loss.array, reference_supcon(x, LABELS, temperature),
                               **TOLERANCE[dtype])


def test_supcon_gradient():
    check_gradient(lambda x: losses.supcon_loss(x, LABELS, temperature=0.5), clustered(6))


def test_supcon_small_temperature_is_stable():
    # 1 / tau = 1000: exp overflows even float64 unless each row is shifted by its max.
    x = clustered(7, dtype=np.float32)
    t = LABELS
    loss = losses.supcon_loss(x, t, temperature=1e-3)
    assert np.isfinite(loss.array) and loss.array > 0
    assert finite_gradient(lambda x: losses.supcon_loss(x, t, temperature=1e-3), x)


# ---------------------------------------------------------------------------------------
# Edge cases shared by the batch losses

BATCH_LOSSES = {
    'batch_hard': losses.batch_hard_triplet_loss,
    'multi_similarity': losses.multi_similarity_loss,
    'supcon': losses.supcon_loss,
}


@pytest.mark.parametrize('name', BATCH_LOSSES)
@pytest.mark.parametrize('labels', [[0, 1, 2, 3, 4], [7]], ids=['distinct', 'single'])
def test_batch_without_positives_gives_zero(name, labels):
    t = np.array(labels, dtype=np.int32)
    x = chainer.Variable(np.random.RandomState(8).randn(len(t), 3).astype(np.float32))
    loss = BATCH_LOSSES[name](x, t)
    assert loss.array == 0 and loss.dtype == np.float32
    loss.backward()  # still part of the graph: zero gradients, no NaN
    np.testing.assert_array_equal(x.grad, 0)


@pytest.mark.parametrize('name', ['batch_hard', 'multi_similarity'])
def test_batch_without_negatives_gives_zero(name):
    x = np.random.RandomState(9).randn(4, 3).astype(np.float32)
    assert BATCH_LOSSES[name](x, np.zeros(4, np.int32)).array == 0


@pytest.mark.parametrize('name', BATCH_LOSSES)
@pytest.mark.parametrize('case', ['identical', 'zero_row'])
def test_degenerate_embeddings_have_finite_gradients(name, case):
    t = np.array([0, 0, 1, 1], dtype=np.int32)
    x = np.ones((4, 3), dtype=np.float32) if case == 'identical' \
        else np.random.RandomState(10).randn(4, 3).astype(np.float32)
    if case == 'zero_row':
        x[1] = 0
    assert finite_gradient(lambda x: BATCH_LOSSES[name](x, t), x)


def test_labels_may_be_int64_and_inputs_plain_arrays():
    x = clustered(11, dtype=np.float32)
    for function in BATCH_LOSSES.values():
        a = function(x, LABELS).array
        b = function(chainer.Variable(x), LABELS.astype(np.int64)).array
        assert a == b


def test_shape_mismatch_is_reported():
    with pytest.raises(ValueError, match='shape'):
        losses.supcon_loss(np.zeros((4, 3), np.float32), np.zeros(5, np.int32))


# ---------------------------------------------------------------------------------------
# Selection by name


def built(name, **flags):
    """`losses.build` for 4 classes of 6-dimensional embeddings, 8 sentences a batch."""
    return losses.build(name, n_classes=4, dim=6, batchsize=8, triplets=0,
                        samples_per_class=2, **flags)


def test_every_listed_loss_can_be_trained():
    """Each name of LOSSES (train_dml.py's --loss choices) draws batches and gives a finite,
    positive loss on them with a gradient; other names fail."""
    rng = np.random.RandomState(0)
    x = chainer.Variable(rng.randn(8, 6).astype(np.float32))
    t = np.array([0, 0, 1, 1, 2, 2, 3, 3], dtype=np.int32)
    for name in losses.LOSSES:
        loss = built(name)
        batch = next(iter(loss.batches(t, np.random.RandomState(1))))
        x.cleargrad()
        value = loss(x[batch], t[batch])
        value.backward()
        assert np.isfinite(value.array) and float(value.array) > 0, name
        assert np.abs(x.grad).sum() > 0, name
    with pytest.raises(ValueError, match='unknown loss'):
        built('contrastive')


@pytest.mark.parametrize('name, flags', [('batch_hard', {'margin': 0.9}),
                                         ('supcon', {'temperature': 0.3})])
def test_build_binds_the_loss_flags(name, flags):
    x = clustered(12, dtype=np.float32)
    value = built(name, **flags)(x, LABELS).array
    assert value == BATCH_LOSSES[name](x, LABELS, **flags).array
    assert value != BATCH_LOSSES[name](x, LABELS).array
    assert built(name).link is None


def test_flags_a_loss_does_not_take_are_ignored():
    x = clustered(13, dtype=np.float32)
    assert (built('multi_similarity', margin=0.9, temperature=0.3)(x, LABELS).array
            == losses.multi_similarity_loss(x, LABELS).array)


def test_each_flag_default_is_the_loss_signature_default():
    """Stated once: a flag left out (None) takes the loss's own default, and that is the
    default train_dml.py prints and uses."""
    assert losses.flag_default('margin', 'triplet') == 0.2
    assert losses.flag_default('margin', 'batch_hard') == 0.2
    assert losses.flag_default('margin', 'arcface') == 0.3
    assert losses.flag_default('margin', 'supcon') == 0.2  # not its flag: triplet's
    assert losses.flag_default('temperature', 'supcon_ce') == 0.1
    assert losses.flag_default('supcon_weight', 'triplet') == 0.9
    link = built('arcface', margin=None).link
    assert (link.scale, link.margin) == (30.0, 0.3)
    link = built('supcon_ce').link
    assert (link.temperature, link.weight) == (0.1, 0.9)


def test_arcface_and_supcon_ce_bring_a_trainable_link():
    loss = built('arcface', scale=16.0, margin=0.2)
    assert isinstance(loss.link, losses.ArcFace)
    assert (loss.link.scale, loss.link.margin) == (16.0, 0.2) and loss.proxies
    model = chainer.Chain()
    with model.init_scope():
        model.loss = loss.link
    assert [name for name, _ in model.namedparams()] == ['/loss/W']
    x = clustered(14, dtype=np.float32)
    assert loss(x, LABELS).array == loss.link(x, LABELS).array
    loss = built('supcon_ce', temperature=0.3, supcon_weight=0.5)
    assert (loss.link.temperature, loss.link.weight) == (0.3, 0.5) and not loss.proxies


def test_memory_losses_are_those_that_take_a_memory():
    assert losses.MEMORY_LOSSES == ('multi_similarity', 'supcon', 'supcon_ce')
    assert [name for name in losses.LOSSES if built(name).memory] == list(losses.MEMORY_LOSSES)


def test_triplet_batches_stack_the_drawn_triples():
    """'triplet' embeds anchors | positives | negatives of sample_triplets' draw, batchsize
    triples a step, and scores them with triplet_loss."""
    labels = np.repeat([0, 1, 2], [4, 3, 3])
    loss = losses.build('triplet', 3, 6, batchsize=4, triplets=10, samples_per_class=2)
    batches = list(loss.batches(labels, np.random.RandomState(5)))
    a, p, n = samplers.sample_triplets(labels, 10, np.random.RandomState(5))
    assert [len(batch) for batch in batches] == [12, 12, 6]
    np.testing.assert_array_equal(batches[0], np.concatenate([a[:4], p[:4], n[:4]]))
    np.testing.assert_array_equal(batches[2], np.concatenate([a[8:], p[8:], n[8:]]))
    x = np.random.RandomState(6).randn(12, 6).astype(np.float32)
    assert (loss(x, labels[batches[0]]).array
            == losses.triplet_loss(x[:4], x[4:8], x[8:], margin=0.2).array)


def test_pk_batches_grow_k_when_there_are_few_classes():
    labels = np.repeat([0, 1], 10)
    loss = losses.build('supcon', 2, 6, batchsize=8, triplets=0, samples_per_class=2)
    for batch in loss.batches(labels, np.random.RandomState(7)):
        assert np.bincount(labels[batch]).tolist() == [4, 4]


def test_random_sampling_is_one_shuffled_pass():
    labels = np.repeat([0, 1, 2], 5)
    loss = losses.build('supcon', 3, 6, batchsize=4, triplets=0, samples_per_class=2,
                        sampling='random')
    batches = list(loss.batches(labels, np.random.RandomState(8)))
    assert [len(batch) for batch in batches] == [4, 4, 4, 3]
    np.testing.assert_array_equal(np.concatenate(batches),
                                  np.random.RandomState(8).permutation(15))


# ---------------------------------------------------------------------------------------
# P x K batches

PK_LABELS = np.repeat([10, 11, 12, 13, 14], [5, 3, 1, 8, 2])


def test_pk_batches_structure_and_coverage():
    p, k = 3, 4
    batches = list(samplers.pk_batches(PK_LABELS, p, k, np.random.RandomState(0)))
    seen = set()
    for batch in batches:
        assert batch.shape == (p * k,) and batch.dtype == np.int64
        groups = PK_LABELS[batch].reshape(p, k)
        assert (groups == groups[:, :1]).all()  # K of each class, one class after another
        assert len(set(groups[:, 0])) == p  # P distinct classes
        seen.update(batch)
    assert seen == set(range(len(PK_LABELS)))  # every example, so every class, appears
    # About once per epoch: the 19 examples fill 2 + 1 + 1 + 2 + 1 groups of 4.
    assert sum(len(b) for b in batches) <= 3 * p * k
    single = np.flatnonzero(PK_LABELS == 12)[0]
    assert all((batch == single).sum() in (0, k) for batch in batches)


def test_pk_batches_imbalanced_classes_fill_the_tail():
    labels = np.repeat([0, 1, 2], [40, 2, 2])
    batches = list(samplers.pk_batches(labels, 2, 2, np.random.RandomState(1)))
    assert set(np.concatenate(batches)) == set(range(44))
    # Class 0's 20 groups need 20 batches (21 if one batch draws classes 1 and 2).
    assert 20 <= len(batches) <= 21
    for batch in batches:
        assert len(set(labels[batch])) == 2


def test_pk_batches_is_reproducible():
    first = list(samplers.pk_batches(PK_LABELS, 2, 3, np.random.RandomState(5)))
    again = list(samplers.pk_batches(PK_LABELS, 2, 3, np.random.RandomState(5)))
    assert len(first) == len(again)
    assert all((u == v).all() for u, v in zip(first, again))


def test_pk_batches_needs_p_classes():
    with pytest.raises(ValueError, match='only 5 classes'):
        next(samplers.pk_batches(PK_LABELS, 6, 2, np.random.RandomState(0)))


# ---------------------------------------------------------------------------------------
# GPU


@pytest.mark.gpu
def test_losses_agree_on_gpu():
    import cupy  # conftest skips `gpu` tests where no usable GPU is
    x, w = arcface_example(np.float32)
    expected = {name: f(x, LABELS).array for name, f in BATCH_LOSSES.items()}
    expected['arcface'] = make_arcface(w)(x, LABELS).array
    x_gpu = chainer.Variable(cupy.asarray(x))
    for name, f in BATCH_LOSSES.items():
        loss = f(x_gpu, cupy.asarray(LABELS))
        loss.backward()
        np.testing.assert_allclose(cupy.asnumpy(loss.array), expected[name], rtol=1e-4)
    link = make_arcface(w)
    link.to_gpu()
    np.testing.assert_allclose(cupy.asnumpy(link(x_gpu, LABELS).array), expected['arcface'],
                               rtol=1e-4)
