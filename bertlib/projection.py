"""2-D maps of sentence features: a stratified sample of the points and their t-SNE or
PCA projection. Drawing them is `bertlib.figures`.

Shared by plot_features.py, cluster_features.py, evaluate_features.py and
explore_features.py.
"""

import logging
import warnings

import numpy as np

from bertlib.errors import UsageError

logger = logging.getLogger(__name__)

METHODS = ('tsne', 'pca')
# How pictures and pages name them.
METHOD_NAMES = {'tsne': 't-SNE', 'pca': 'PCA'}

# t-SNE's neighbour search and gradient cost grow with the dimension; 50 principal
# components keep nearly all the neighbourhood structure of BERT features (the usual
# recipe of van der Maaten and of scikit-learn's own advice) at a fraction of the time.
TSNE_PCA_DIMS = 50


def stratified_sample(labels, n, seed):
    """Indices of `n` of the N points, drawn per class so that each class keeps its share.

    labels: sequence of N hashable labels. Each class gets round(n * share) points
    (largest remainders), and at least one while n is at least the number of classes.
    The draw within a class is seeded by `seed`. Returns a sorted (n,) int64 array.
    Raises UsageError when n exceeds N.
    """
    labels = np.asarray(labels, dtype=object)
    total = len(labels)
    if n > total:
        raise UsageError('a sample of %d is larger than the data (%d points)' % (n, total))
    if n < 1:
        raise UsageError('a sample must hold at least one point, got %d' % n)
    if n == total:
        return np.arange(total, dtype=np.int64)
    classes, inverse = np.unique(labels.astype(str), return_inverse=True)
    counts = np.bincount(inverse, minlength=len(classes))
    quotas = _class_quotas(counts, n)
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(inverse == k), size=q, replace=False)
              for k, q in enumerate(quotas) if q]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def _class_quotas(counts, n):
    """(K,) class sizes, sample size n -> (K,) points per class summing to n.

    Hamilton's largest-remainder rounding of n * share, then every empty class (while
    n >= K) takes one point from the class that is most over its exact share.
    """
    exact = n * counts / counts.sum()
    quotas = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - quotas), kind='stable')
    quotas[order[:n - quotas.sum()]] += 1
    if n >= len(counts):
        for k in np.flatnonzero(quotas == 0):
            donors = np.flatnonzero(quotas > 1)
            donor = donors[np.argmax(quotas[donors] - exact[donors])]
            quotas[donor] -= 1
            quotas[k] = 1
    return quotas


def project_2d(X, method='tsne', perplexity=30, seed=0, source='the features'):
    """(N, D) features -> (N, 2) float64 coordinates by t-SNE or PCA, seeded.

    t-SNE is scikit-learn's Barnes-Hut TSNE with PCA initialisation, run on the first
    50 principal components when D > 50. Its perplexity must stay below N: a larger one
    is clipped to (N - 1) / 3, with a note in the log. `source` (a file name) is named in
    the error about degenerate features.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or len(X) < 2:
        raise UsageError('a 2-D projection needs at least 2 points, got %d' % len(X))
    check_spread(X, source)
    if method not in METHODS:
        raise ValueError('method must be one of %s, got %r' % (METHODS, method))
    if method == 'tsne' and len(X) < 4:
        logger.info('t-SNE needs at least 4 points, got %d: using PCA', len(X))
    if method == 'pca' or len(X) < 4:
        return _pca(X, 2, seed)
    return _tsne(X, perplexity, seed)


def check_spread(X, source):
    """UsageError when all (N, D) rows are the same point.

    Why: scikit-learn's t-SNE then divides its PCA start by a zero spread and crashes the
    whole process in native code (segmentation fault), and no projection could show
    anything. It happens with --max_seq_length 2, where every sentence is [CLS] [SEP].
    """
    spread = float(np.ptp(X, axis=0).max()) if X.size else 0.0
    if spread <= 1e-9 * max(1.0, float(np.abs(X).max()) if X.size else 0.0):
        raise UsageError('%s: all %d feature rows are the same point, so there is nothing '
                         'to project (were they extracted with a tiny --max_seq_length, '
                         'where every sentence is [CLS] [SEP]?)' % (source, len(X)))


def _pca(X, dims, seed):
    """(N, D) -> (N, dims) principal components; zero columns pad a narrower result."""
    from sklearn.decomposition import PCA
    keep = min(dims, X.shape[1], len(X))
    out = np.zeros((len(X), dims))
    if keep:
        out[:, :keep] = PCA(n_components=keep, random_state=seed).fit_transform(X)
    return out


def _tsne(X, perplexity, seed):
    """(N, D) -> (N, 2) by scikit-learn's Barnes-Hut t-SNE."""
    from sklearn.manifold import TSNE
    limit = (len(X) - 1) / 3.0
    if perplexity > limit:
        logger.info('perplexity %g is too large for %d points: using %.1f',
                    perplexity, len(X), limit)
        perplexity = limit
    if X.shape[1] > TSNE_PCA_DIMS and len(X) > TSNE_PCA_DIMS:
        X = _pca(X, TSNE_PCA_DIMS, seed)
    tsne = TSNE(n_components=2, perplexity=perplexity, init='pca', learning_rate='auto',
                random_state=seed)
    with warnings.catch_warnings(), one_openmp_thread():
        # PCA initialisation warns about its rescaling on every call; nothing to act on.
        warnings.simplefilter('ignore', FutureWarning)
        return tsne.fit_transform(X).astype(np.float64)


def one_openmp_thread():
    """A context that runs scikit-learn's OpenMP code on one thread.

    Two reasons. On a busy 2-core machine its thread barriers cost more than the second
    thread gains: MeanShift's thousands of one-point neighbour queries ran 40x slower
    with two threads, t-SNE of 5,197 points 1.5-2x slower; the clustering algorithms
    spend their time in BLAS, which keeps its threads. And GNU libgomp is not fork-safe:
    in a forked child, a parallel region with more than one thread hangs when the parent
    had run one before, while a one-thread region runs inline.
    """
    import sklearn.utils  # noqa: F401  (loads scikit-learn's OpenMP runtime to limit it)
    from threadpoolctl import threadpool_limits
    return threadpool_limits(limits=1, user_api='openmp')
