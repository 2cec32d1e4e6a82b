"""Leave-one-out retrieval metrics of embeddings under cosine similarity.

The definitions follow Musgrave et al. 2020, "A Metric Learning Reality Check": every item
queries all the other items, ranked by cosine similarity. For a query with label y, R is
the number of *other* items labelled y and rel(k) says whether the k-th ranked item is
labelled y:

- precision@1 = rel(1);
- R-precision = (sum_{k<=R} rel(k)) / R;
- MAP@R       = (1/R) * sum_{k<=R} P(k) * rel(k), with P(k) = (sum_{j<=k} rel(j)) / k.

Each is averaged over the queries. Queries whose class is a singleton (R = 0) have no
right answer and are left out of all three averages; they still take part as retrieved
items for the other queries.

Ranking is by (-similarity, index), as a stable sort on -similarity would give: equal
similarities keep index order, so the result is deterministic. Identical input vectors
(duplicate sentences) get bitwise identical similarities, since they share one column of
the product, so their ties are real ties broken by index, whatever the BLAS kernel does
at block edges. Similarities are float64.
"""

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

try:
    import chainer
except ImportError:  # NumPy input needs nothing else
    chainer = None


def retrieval_metrics(embeddings, labels, batch_size=1024, workers=None, per_query=False):
    """Precision@1, R-precision and MAP@R of leave-one-out cosine retrieval.

    embeddings: (N, D) float array (NumPy, or CuPy when Chainer is importable).
    labels: (N,) hashable labels (ints, strings, ...); equal labels mean same class.
    batch_size: queries per block; memory is O(workers * batch_size * N), never O(N^2).
    workers: blocks scored at once in threads (default: the CPU count, at most 4). NumPy
        releases the GIL in the partition and sort that take half of a block's time, which
        the BLAS product's own threads leave to one core.

    Returns {'precision_at_1', 'r_precision', 'map_at_r': float, 'count': int}, where
    count is the number of queries averaged over (items whose class has another member);
    per_query: also 'per_query', {metric name: (count,) float64 values}, e.g. for
    standard errors.
    Singleton classes are excluded as queries; when every class is a singleton, count is
    0 and the three metrics are NaN. A zero vector has similarity 0 to everything.
    """
    x = _to_numpy(embeddings)
    codes = _encode_labels(labels, len(x))
    if batch_size < 1:
        raise ValueError('batch_size must be positive, got %r' % (batch_size,))
    n_relevant = np.bincount(codes)[codes] - 1            # (N,) R of every item
    queries = np.flatnonzero(n_relevant > 0)
    unit, column = _unique_unit_rows(x)

    def score(start):
        block = queries[start:start + batch_size]
        sims = _similarity_rows(unit, column, block)
        return _block_scores(sims, codes, n_relevant, block)

    return _averages(_map_blocks(score, queries.size, batch_size, workers), per_query)


def retrieval_and_neighbours(embeddings, labels, k, batch_size=1024, workers=None):
    """`retrieval_metrics` and `nearest_neighbours` in one pass: each block of the
    similarity product serves both, so the (N, N) product is computed once, not twice.

    Arguments as those two functions'. Returns (scores, indices, similarities): the
    scores as retrieval_metrics returns them (equal up to rounding in the last bit, as
    at another batch_size) and the (N, k) neighbours as nearest_neighbours does.
    """
    x = _to_numpy(embeddings)
    codes = _encode_labels(labels, len(x))
    n_relevant = np.bincount(codes)[codes] - 1            # (N,) R of every item
    k = min(int(k), len(x) - 1)
    if k < 1:
        raise ValueError('nearest neighbours need k >= 1 and at least 2 items')
    unit, column = _unique_unit_rows(x)
    indices = np.empty((len(x), k), dtype=np.int64)
    similarities = np.empty((len(x), k), dtype=np.float64)

    def block(start):
        rows = np.arange(start, min(start + batch_size, len(x)))
        sims = _similarity_rows(unit, column, rows)
        indices[rows], similarities[rows] = _block_neighbours(sims, k)
        is_query = n_relevant[rows] > 0
        return _block_scores(sims[is_query], codes, n_relevant, rows[is_query])

    scores = _averages(_map_blocks(block, len(x), batch_size, workers))
    return scores, indices, similarities


def _averages(blocks, per_query=False):
    """Per-block (precision@1, R-precision, MAP@R) arrays -> the result dict of
    retrieval_metrics (NaN averages and count 0 when there is no query)."""
    p1, r_precision, map_at_r = ((np.concatenate(s) for s in zip(*blocks)) if blocks
                                 else (np.zeros(0),) * 3)
    if p1.size == 0:
        nan = float('nan')
        return {'precision_at_1': nan, 'r_precision': nan, 'map_at_r': nan, 'count': 0}
    # Averaging the concatenated per-query values (not per-block sums) keeps the rounding
    # of the averages independent of batch_size.
    result = {'precision_at_1': float(p1.mean()), 'r_precision': float(r_precision.mean()),
              'map_at_r': float(map_at_r.mean()), 'count': int(p1.size)}
    if per_query:
        result['per_query'] = {'precision_at_1': p1, 'r_precision': r_precision,
                               'map_at_r': map_at_r}
    return result


def _map_blocks(function, count, batch_size, workers):
    """[function(start) for each block start of `count` items], in threads when there
    are several blocks (default workers: the CPU count, at most 4)."""
    workers = workers or min(os.cpu_count() or 1, 4)
    starts = range(0, count, batch_size)
    if workers > 1 and len(starts) > 1:
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(function, starts))
    return [function(start) for start in starts]


def _to_numpy(embeddings):
    """(N, D) array on any Chainer device -> (N, D) float64 NumPy array, checked."""
    if chainer is not None:
        embeddings = chainer.backend.CpuDevice().send(embeddings)
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError('embeddings must be (N, D), got shape %r' % (x.shape,))
    if not np.isfinite(x).all():
        raise ValueError('embeddings contain NaN or infinity')
    return x


def _encode_labels(labels, n):
    """(N,) hashable labels -> (N,) int64 class codes 0..C-1, in order of first appearance.

    A dict rather than np.unique, so mixed or unorderable labels work and 1 != '1'.
    """
    values = labels.tolist() if hasattr(labels, 'tolist') else list(labels)
    if len(values) != n:
        raise ValueError('%d labels for %d embeddings' % (len(values), n))
    classes = {}
    return np.fromiter((classes.setdefault(v, len(classes)) for v in values), np.int64,
                       count=n)


def _unique_unit_rows(x):
    """x: (N, D) float64 -> unit: (U, D) L2-normalised distinct rows of x, and column:
    (N,) int64 such that unit[column[i]] is x[i] normalised.

    Duplicates share one row, so their similarities to any query are bitwise equal: two
    copies computed at different positions of a matrix product may differ in the last
    bit, which would turn an exact tie into an order decided by the BLAS kernel.
    """
    x = x + 0.0                # -0.0 -> +0.0: equal vectors must have equal bytes
    first = {}
    column = np.fromiter((first.setdefault(row.tobytes(), len(first)) for row in x),
                         np.int64, count=len(x))
    distinct = x[np.unique(column, return_index=True)[1]]
    norms = np.sqrt(np.einsum('ij,ij->i', distinct, distinct))
    norms[norms == 0] = 1.0    # zero vector: similarity 0 to everything instead of NaN
    return distinct / norms[:, None], column


def _similarity_rows(unit, column, rows):
    """(B, N) cosine similarities of the B items `rows` to every item, each to itself
    -inf (left out). unit: (U, D) distinct unit rows; column: (N,) row of each item in
    unit. One matrix product per block; duplicates share a column of it."""
    sims = unit[column[rows]] @ unit.T                     # (B, U)
    if unit.shape[0] < column.size:
        sims = sims[:, column]                             # (B, N)
    sims[np.arange(rows.size), rows] = -np.inf
    return sims


def _block_scores(sims, codes, n_relevant, queries):
    """Per-query precision@1, R-precision, MAP@R of one block of B queries.

    sims: (B, N) from _similarity_rows; codes: (N,) class codes; n_relevant: (N,) R per
    item; queries: (B,) item indices, all with R >= 1. Returns three (B,) float64 arrays.
    """
    if queries.size == 0:  # a block of retrieval_and_neighbours without a query
        return np.zeros(0), np.zeros(0), np.zeros(0)
    b = np.arange(queries.size)
    r = n_relevant[queries]                                # (B,)
    k = int(r.max())                                       # enough ranks for every row
    keep = _top_k_mask(sims, k)                            # (B, N), k True per row
    # Boolean selection keeps column order and reads memory in sequence (a gather by
    # index is ~3x slower): values and relevance of the k kept, (B, k), by column.
    values = sims[keep].reshape(-1, k)
    same = (codes == codes[queries][:, None])[keep].reshape(-1, k)
    order = _rank_order(values)                            # (B, k)
    rel = np.take_along_axis(same, order, axis=1) & (np.arange(k) < r[:, None])
    hits = np.cumsum(rel, axis=1, dtype=np.int32)          # (B, k) relevant in top 1..k
    precision_at_1 = rel[:, 0].astype(np.float64)
    r_precision = hits[b, r - 1] / r
    map_at_r = np.where(rel, hits / np.arange(1, k + 1), 0.0).sum(axis=1) / r
    return precision_at_1, r_precision, map_at_r


def _top_k_mask(sims, k):
    """sims: (B, N) float64 -> (B, N) bool, True at each row's first k columns in the
    order (-similarity, column index). Requires 1 <= k <= N.

    A partition finds each row's k-th largest value t; the first k are the columns above
    t plus the lowest-indexed ones equal to t (a partition picks arbitrary ones).
    """
    n = sims.shape[1]
    cut = np.partition(sims, n - k, axis=1)[:, n - k, None]   # (B, 1) k-th largest
    keep = sims >= cut                                         # >= k per row
    crowded = np.flatnonzero(np.count_nonzero(keep, axis=1) > k)
    if crowded.size:                                           # ties at the cut
        s, t = sims[crowded], cut[crowded]
        above, equal = s > t, s == t
        missing = k - np.count_nonzero(above, axis=1)          # how many equal to t fit
        keep[crowded] = above | (equal & (np.cumsum(equal, axis=1) <= missing[:, None]))
    return keep


def _rank_order(values):
    """values: (B, k) similarities in column order -> (B, k) argsort by (-value, position).

    Quicksort is ~3.5x faster than a stable sort but orders ties arbitrarily, so rows that
    hold equal values are sorted again, stably.
    """
    order = np.argsort(-values, axis=1)
    ranked = np.take_along_axis(values, order, axis=1)
    tied = np.flatnonzero((ranked[:, 1:] == ranked[:, :-1]).any(axis=1))
    if tied.size:
        order[tied] = np.argsort(-values[tied], axis=1, kind='stable')
    return order


def nearest_neighbours(embeddings, k, batch_size=1024, workers=None):
    """The k nearest other items of every item under cosine similarity, ranked as the
    retrieval metrics above rank them: by (-similarity, index), duplicates tied.

    embeddings: (N, D) float array; k: neighbours per item, at most N - 1 (larger is
    clipped). Memory is O(workers * batch_size * N). Returns (indices, similarities):
    (N, k) int64 and (N, k) float64, nearest first, each item itself left out. So
    labels[indices[:, 0]] == labels is the per-query precision@1 of `retrieval_metrics`.
    """
    # Every item its own class: there is no query to score, only neighbours to find.
    _, indices, similarities = retrieval_and_neighbours(
        embeddings, np.arange(len(embeddings)), k, batch_size, workers)
    return indices, similarities


def _block_neighbours(sims, k):
    """(B, N) similarities -> the (B, k) indices and similarities of each row's k
    nearest, ranked by (-similarity, index)."""
    keep = _top_k_mask(sims, k)
    columns = np.nonzero(keep)[1].reshape(-1, k)               # (B, k) in column order
    values = sims[keep].reshape(-1, k)
    order = _rank_order(values)
    return (np.take_along_axis(columns, order, axis=1),
            np.take_along_axis(values, order, axis=1))
