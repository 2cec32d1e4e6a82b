import math

import numpy as np
import pytest

from bertlib.metrics import retrieval_metrics

KEYS = ('precision_at_1', 'r_precision', 'map_at_r')


def brute_force(embeddings, labels, tie_sign=1):
    """The definitions, one query at a time: rank the others by (-cosine, index), keep the
    top R and score them. Plain Python floats, so equal vectors give equal cosines.
    tie_sign=-1 breaks ties by descending index instead."""
    units = []
    for row in np.asarray(embeddings, dtype=np.float64).tolist():
        norm = math.sqrt(sum(a * a for a in row)) or 1.0
        units.append([a / norm for a in row])
    labels = list(labels)
    n = len(labels)
    p1, r_precision, map_at_r = [], [], []
    for i in range(n):
        r = sum(1 for j in range(n) if j != i and labels[j] == labels[i])
        if r == 0:
            continue
        cosine = {j: sum(a * b for a, b in zip(units[i], units[j])) for j in range(n)}
        others = [j for j in range(n) if j != i]
        ranked = sorted(others, key=lambda j: (-cosine[j], tie_sign * j))
        rel = [labels[j] == labels[i] for j in ranked[:r]]
        p1.append(1.0 if rel[0] else 0.0)
        r_precision.append(sum(rel) / r)
        map_at_r.append(sum(sum(rel[:k]) / k for k in range(1, r + 1) if rel[k - 1]) / r)
    count = len(p1)
    return {'precision_at_1': sum(p1) / count, 'r_precision': sum(r_precision) / count,
            'map_at_r': sum(map_at_r) / count, 'count': count}


def random_dataset(seed, n, dim, n_classes, n_singletons=0, n_duplicates=0, zero=False):
    """(n, dim) float32 Gaussian vectors around class centres, with singleton classes,
    copies of earlier vectors (often under another label: ties that matter) and a zero
    vector."""
    rng = np.random.RandomState(seed)
    labels = rng.randint(0, n_classes, n)
    labels[:n_singletons] = n_classes + np.arange(n_singletons)
    centres = rng.randn(n_classes + n_singletons, dim)
    x = (centres[labels] + rng.randn(n, dim)).astype(np.float32)
    for target in rng.choice(n, n_duplicates, replace=False):
        x[target] = x[rng.randint(n)]
    if zero:
        x[rng.randint(n)] = 0
    return x, labels


DATASETS = {
    'small': dict(seed=0, n=30, dim=4, n_classes=3),
    'ties': dict(seed=1, n=200, dim=8, n_classes=6, n_singletons=5, n_duplicates=60,
                 zero=True),
    'many_classes': dict(seed=2, n=150, dim=3, n_classes=40, n_singletons=10,
                         n_duplicates=10, zero=True),
    'two_classes': dict(seed=3, n=120, dim=16, n_classes=2, n_duplicates=30),
    'planar': dict(seed=4, n=60, dim=2, n_classes=5, n_singletons=3, n_duplicates=20,
                   zero=True),
}


@pytest.mark.parametrize('name', sorted(DATASETS))
def test_matches_brute_force_at_any_batch_size(name):
    x, labels = random_dataset(**DATASETS[name])
    expected = brute_force(x, labels)
    for batch_size, workers in ((1, 1), (7, 1), (7, 3), (1000, 2)):
        got = retrieval_metrics(x, labels, batch_size=batch_size, workers=workers)
        assert got['count'] == expected['count']
        for key in KEYS:
            assert abs(got[key] - expected[key]) <= 1e-12, (batch_size, workers, key)


def test_duplicates_really_tie():
    """The data sets with duplicates exercise ties that change the scores: ranking ties by
    descending index instead gives other results."""
    for name in ('ties', 'many_classes', 'planar'):
        x, labels = random_dataset(**DATASETS[name])
        assert brute_force(x, labels) != brute_force(x, labels, tie_sign=-1), name


def circle(degrees, radii=None):
    """(N, 2) points at the given angles; radii (N,) scale them (cosine ignores it)."""
    t = np.radians(degrees)
    r = np.ones(len(t)) if radii is None else np.asarray(radii)
    return np.stack([np.cos(t), np.sin(t)], axis=1) * r[:, None]


def test_hand_computed_example():
    """Classes of 3 (R = 2). Ranked neighbours by angle, the first R of each query:
    0 deg A: 10 A, 30 B  -> P@1 1, RP 1/2, MAP 1/2
    10 A:    0 A, 30 B   -> 1, 1/2, 1/2
    30 B:    45 A, 10 A  -> 0, 0, 0
    45 A:    30 B, 65 B  -> 0, 0, 0
    65 B:    45 A, 30 B  -> 0, 1/2, (1/2)(1/2) = 1/4
    180 B:   65 B, 45 A  -> 1, 1/2, 1/2
    The singleton C at 300 deg is nobody's top-2 and is no query."""
    x = circle([0, 10, 30, 45, 65, 180], radii=[1, 2, 3, 4, 5, 6])
    labels = ['A', 'A', 'B', 'A', 'B', 'B']
    expected = {'precision_at_1': 3 / 6, 'r_precision': 2 / 6, 'map_at_r': 1.75 / 6,
                'count': 6}
    got = retrieval_metrics(x, labels)
    assert got == pytest.approx(expected, abs=1e-15)
    with_singleton = retrieval_metrics(np.concatenate([x, circle([300])]), labels + ['C'])
    assert with_singleton == pytest.approx(expected, abs=1e-15)


def test_ties_keep_index_order_and_zero_vectors_give_no_nan():
    """All-zero vectors: every similarity is 0, so each query ranks the others by index.
    Labels [0, 0, 1, 1] -> the first neighbour is item 1 for query 0 and item 0 for the
    others: right for queries 0 and 1 only."""
    got = retrieval_metrics(np.zeros((4, 3), np.float32), np.array([0, 0, 1, 1]))
    assert got == {'precision_at_1': 0.5, 'r_precision': 0.5, 'map_at_r': 0.5, 'count': 4}


def test_perfect_clusters_score_one_and_singletons_are_not_counted():
    rng = np.random.RandomState(5)
    labels = np.repeat([0, 1, 2], 4)
    x = np.eye(5)[labels] + 0.01 * rng.rand(12, 5)
    x = np.concatenate([x, np.eye(5)[[3, 4]]])                 # two singleton classes
    labels = np.concatenate([labels, [3, 4]])
    got = retrieval_metrics(x.astype(np.float32), labels)
    assert got == {'precision_at_1': 1.0, 'r_precision': 1.0, 'map_at_r': 1.0, 'count': 12}


def test_only_singletons_give_nan_and_zero_count():
    got = retrieval_metrics(np.eye(3), ['a', 'b', 'c'])
    assert got['count'] == 0
    assert all(math.isnan(got[key]) for key in KEYS)


def test_labels_are_compared_as_python_values():
    """1 and '1' are different classes (np.asarray would turn both into '1')."""
    x = circle([0, 5, 20, 30])
    assert retrieval_metrics(x, [1, '1', 1, '1'])['precision_at_1'] == 0.0
    assert retrieval_metrics(x, [1, 1, '1', '1'])['precision_at_1'] == 1.0


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        retrieval_metrics(np.zeros((3, 2)), [0, 0])
    with pytest.raises(ValueError):
        retrieval_metrics(np.array([[0.0, np.nan], [1.0, 0.0]]), [0, 0])
    with pytest.raises(ValueError):
        retrieval_metrics(np.zeros(4), [0, 0, 1, 1])
    with pytest.raises(ValueError):
        retrieval_metrics(np.zeros((2, 2)), [0, 0], batch_size=0)


def test_runs_on_5000_by_384():
    """Speed sanity: finishes (no timing assert); scores stay in range."""
    x, labels = random_dataset(seed=6, n=5000, dim=384, n_classes=50)
    got = retrieval_metrics(x, labels)
    assert got['count'] == 5000
    assert all(0.0 <= got[key] <= 1.0 for key in KEYS)
