"""Samplers: which sentences a metric-learning step embeds (pytorch-metric-learning keeps
them apart from the losses in the same way).

A sampler is called with the (N,) integer labels of a split (host array) and a
`numpy.random.RandomState`, the only source of randomness, and yields one epoch of (B,)
int64 index arrays: `TripletSampler` stacks anchor | positive | negative triples
(`sample_triplets`, the original BERT-DML's draw), `PKSampler` takes P classes x K
sentences (`pk_batches`) and `RandomSampler` shuffled sentences. `losses.build` picks one
for each --loss.
"""

import numpy as np


class TripletSampler(object):
    """`count` triples per epoch (0: one per sentence that can be an anchor), `batchsize`
    triples a step, each batch stacked as anchors | positives | negatives ((3 b,))."""

    def __init__(self, count, batchsize):
        self.count = count
        self.batchsize = batchsize

    def __call__(self, labels, rng):
        anchors, positives, negatives = sample_triplets(labels, self.count, rng)
        for start in range(0, len(anchors), self.batchsize):
            part = slice(start, start + self.batchsize)
            yield np.concatenate([anchors[part], positives[part], negatives[part]])


class PKSampler(object):
    """P classes x K sentences a batch (`pk_batches`), K = `samples_per_class`. With fewer
    classes than batchsize / K (rt-polarity has two), K grows so that a batch still holds
    about `batchsize` sentences."""

    def __init__(self, batchsize, samples_per_class):
        self.batchsize = batchsize
        self.samples_per_class = samples_per_class

    def __call__(self, labels, rng):
        per_class = max(2, self.samples_per_class)
        classes = min(max(2, self.batchsize // per_class), len(np.unique(labels)))
        per_class = max(per_class, self.batchsize // classes)
        yield from pk_batches(labels, classes, per_class, rng)


class RandomSampler(object):
    """Shuffled sentences, `batchsize` a batch (--sampling random)."""

    def __init__(self, batchsize):
        self.batchsize = batchsize

    def __call__(self, labels, rng):
        order = rng.permutation(len(labels))
        for start in range(0, len(order), self.batchsize):
            yield order[start:start + self.batchsize]


# ---------------------------------------------------------------------------------------
# Triples over a whole split


def sample_triplets(labels, count, rng):
    """Draw anchor / positive / negative index triples from the labels of a data set.

    labels: (N,) integer labels (host array). count: how many triples; 0 means one pass,
    i.e. one triple per example that can be an anchor. rng: a `numpy.random.RandomState`.
    Returns three (count,) int64 index arrays (a_idx, p_idx, n_idx).

    - Anchors come only from classes with at least 2 examples; a class with one example
      can be a negative but never an anchor or a positive. They are taken pass by pass
      over the shuffled eligible examples, so each is an anchor equally often.
    - The positive is uniform over the anchor's class without the anchor itself.
    - The negative is uniform over all examples with another label, so classes are
      negatives in proportion to their size.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError('labels must be 1-D, got shape %s' % (labels.shape,))
    if count < 0:
        raise ValueError('count must be >= 0 (0: one triple per anchor), got %d' % count)
    classes, inverse, sizes = np.unique(labels, return_inverse=True, return_counts=True)
    if len(classes) < 2:
        raise ValueError('triplets need at least 2 classes for negatives, got %d'
                         % len(classes))
    if sizes.max() < 2:
        raise ValueError('triplets need a class with at least 2 examples (an anchor and '
                         'a positive); every one of the %d classes has 1' % len(classes))

    # Example indices grouped by class: class c is order[start[c]:start[c] + size[c]],
    # and example i sits at order[start[inverse[i]] + rank[i]].
    n = len(labels)
    order = np.argsort(inverse, kind='stable')
    start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - start[inverse[order]]

    eligible = np.flatnonzero(sizes[inverse] >= 2)
    passes = max(1, -(-count // len(eligible)))
    anchors = np.concatenate([rng.permutation(eligible) for _ in range(passes)])
    if count:
        anchors = anchors[:count]

    c = inverse[anchors]
    size, begin = sizes[c], start[c]
    # Positive: move 1 .. size-1 places around the class's block, which never lands on
    # the anchor and reaches every other member with equal chance.
    shift = rng.randint(1, size)
    positives = order[begin + (rank[anchors] + shift) % size]
    # Negative: a uniform position among the n - size examples outside the anchor's block.
    r = rng.randint(0, n - size)
    negatives = order[np.where(r >= begin, r + size, r)]
    return anchors.astype(np.int64), positives.astype(np.int64), negatives.astype(np.int64)


# ---------------------------------------------------------------------------------------
# P x K batches


def pk_batches(labels, p, k, rng):
    """Yield one epoch of batches of P classes x K examples, as (P * K,) int64 indices.

    labels: (N,) integer labels (host array); rng: a `numpy.random.RandomState`, the only
    source of randomness, so a seed gives the same epoch. Each batch lists its P distinct
    classes one after another, K indices each.

    - Each class is shuffled and cut into groups of K. A last, short group is topped up
      with other members of the class; a class with fewer than K examples (a single
      example included: K copies of it) is sampled with replacement. So every example
      appears at least once per epoch and only the top-ups appear twice.
    - Batches take P distinct classes with probability proportional to the groups they
      have left, so large classes are spread over the epoch instead of piling up at its
      end. When fewer than P classes have groups left, the batch is completed with fresh
      groups of other classes, so imbalanced data end the epoch oversampling small
      classes rather than dropping the rest of a large one.

    The batch losses need P >= 2 (negatives) and K >= 2 (positives); classes of one
    example only give copies of one sentence as each other's positives.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) == 0:
        raise ValueError('labels must be a non-empty 1-D array, got shape %s'
                         % (labels.shape,))
    if p < 1 or k < 1:
        raise ValueError('P and K must be >= 1, got P=%d K=%d' % (p, k))
    _, inverse = np.unique(labels, return_inverse=True)
    order = np.argsort(inverse, kind='stable')
    members = np.split(order, np.cumsum(np.bincount(inverse))[:-1])
    if len(members) < p:
        raise ValueError('P=%d classes per batch but the labels have only %d classes'
                         % (p, len(members)))

    def fresh_group(c):
        return rng.choice(members[c], k, replace=len(members[c]) < k)

    groups = []
    for c, m in enumerate(members):
        shuffled = rng.permutation(m)
        n_groups = -(-len(m) // k)
        short = n_groups * k - len(m)
        if short:
            rest = shuffled[:len(m) - (k - short)]  # members not in the last group
            top_up = (rng.choice(rest, short, replace=False) if len(rest) >= short
                      else rng.choice(m, short, replace=True))
            shuffled = np.concatenate([shuffled, top_up])
        groups.append(list(shuffled.reshape(n_groups, k)))

    left = np.array([len(g) for g in groups])
    while left.any():
        live = np.flatnonzero(left)
        if len(live) >= p:
            chosen = rng.choice(live, p, replace=False, p=left[live] / left[live].sum())
            batch = [groups[c].pop() for c in chosen]
            left[chosen] -= 1
        else:
            others = np.setdiff1d(np.arange(len(members)), live)
            fill = rng.choice(others, p - len(live), replace=False)
            batch = [groups[c].pop() for c in live] + [fresh_group(c) for c in fill]
            left[live] -= 1
        yield np.concatenate(batch).astype(np.int64)
