"""The original BERT-DML's clustering comparison: scikit-learn's ten algorithms of
"Comparing different clustering algorithms on toy datasets", run on sentence features and
scored against the labels.

Each algorithm runs in a forked child process, so that one that fails, exhausts memory or
runs past its time limit is reported as such while the others still run.
"""

import collections
import logging
import multiprocessing
import signal
import time
import warnings

import numpy as np

from bertlib import projection

logger = logging.getLogger(__name__)

ALGORITHMS = ('MiniBatchKMeans', 'AffinityPropagation', 'MeanShift', 'SpectralClustering',
              'Ward', 'AgglomerativeClustering', 'DBSCAN', 'OPTICS', 'Birch',
              'GaussianMixture')

# Graph-based algorithms (Spectral, Ward, average linkage) join each point to this many
# nearest neighbours, and DBSCAN/OPTICS call a point dense with this many neighbours.
NEIGHBOURS = 10
# DBSCAN's eps: this quantile of the distance from each point to its NEIGHBOURS-th
# nearest neighbour (the k-distance graph of Ester et al.). At the median, half the points
# are core points; the rest join a core point's cluster or are noise.
DBSCAN_QUANTILE = 0.5
# AffinityPropagation keeps several N x N float64 matrices and updates them all at each
# of up to 200 iterations: on 5,197 points it ran past 2 minutes. Above this many points
# it finds its exemplars on a seeded random sample of them, and every point then joins
# its nearest exemplar (AffinityPropagation.predict).
AFFINITY_POINTS = 2500
# MeanShift climbs from this many seed points (a seeded sample) instead of from every
# point: the cost is seeds x N x D per step, and the seeds converge onto the same modes.
MEANSHIFT_SEEDS = 300
# estimate_bandwidth is quadratic: it looks at this many points.
BANDWIDTH_POINTS = 1000
# GaussianMixture's full covariances are D x D per component: with more dimensions than
# this they are diagonal.
FULL_COVARIANCE_DIMS = 16
# The silhouette needs all pairwise distances: at most this many points (a seeded sample).
SILHOUETTE_POINTS = 6000

Outcome = collections.namedtuple('Outcome', 'status value seconds')


def clustering_space(features, xy=None):
    """The points the algorithms cluster: the (N, D) features centred on their mean and
    L2-normalised, or with `xy` given the (N, 2) projection, standardised.

    Sentence embeddings are compared by cosine, and on unit vectors Euclidean distance
    orders pairs as cosine does, so every algorithm sees that geometry. Centring first
    removes a common offset, which would otherwise make all vectors nearly parallel
    (a DML run that collapsed gave features 12.6 long varying by 0.0004 per dimension,
    below GaussianMixture's covariance regularisation). The 2-D coordinates are
    standardised, as in scikit-learn's example.
    """
    if xy is not None:
        from sklearn.preprocessing import StandardScaler
        return StandardScaler().fit_transform(np.asarray(xy, dtype=np.float64))
    X = np.asarray(features, dtype=np.float64)
    X = X - X.mean(axis=0)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(norms > 0, norms, 1.0)


def fit_predict(name, X, n_clusters, seed):
    """Clusters (N, D) points with algorithm `name`; (N,) int cluster ids, -1 for noise.

    Data-dependent parameters (bandwidth, eps, neighbour graph) are computed here, so
    they count in the algorithm's time. AffinityPropagation finds its exemplars on a
    seeded sample of AFFINITY_POINTS when N is larger.
    """
    import sklearn
    with projection.one_openmp_thread(), sklearn.config_context(assume_finite=True):
        # The features were checked finite when read; scikit-learn's re-checks of the
        # whole distance matrix at each of OPTICS's N neighbour queries took most of its
        # time.
        estimator = make_estimator(name, X, n_clusters, seed)
        if name == 'AffinityPropagation' and len(X) > AFFINITY_POINTS:
            rng = np.random.default_rng(seed)
            sample = X[np.sort(rng.choice(len(X), AFFINITY_POINTS, replace=False))]
            return np.asarray(estimator.fit(sample).predict(X), dtype=np.int64)
        if name == 'OPTICS':
            # OPTICS visits the points one by one, each time measuring the distances to
            # all unvisited ones with a tree query that cannot prune in hundreds of
            # dimensions: one (N, N) matrix up front is much faster, same result.
            from sklearn.metrics import pairwise_distances
            X = pairwise_distances(X)
        return np.asarray(estimator.fit_predict(X), dtype=np.int64)


def make_estimator(name, X, n_clusters, seed):
    """The scikit-learn estimator for `name`, with parameters suited to (N, D) `X`."""
    from sklearn import cluster, mixture
    if name == 'MiniBatchKMeans':
        return cluster.MiniBatchKMeans(n_clusters=n_clusters, n_init=3, random_state=seed)
    if name == 'AffinityPropagation':
        return cluster.AffinityPropagation(damping=0.9, preference=_ap_preference(X),
                                           random_state=seed)
    if name == 'MeanShift':
        return cluster.MeanShift(bandwidth=_bandwidth(X, n_clusters, seed),
                                 seeds=_seeds(X, seed))
    if name == 'SpectralClustering':
        return cluster.SpectralClustering(n_clusters=n_clusters, eigen_solver='arpack',
                                          affinity='nearest_neighbors',
                                          n_neighbors=min(NEIGHBOURS, len(X) - 1),
                                          random_state=seed)
    if name == 'Ward':
        return cluster.AgglomerativeClustering(n_clusters=n_clusters, linkage='ward',
                                               connectivity=_connectivity(X))
    if name == 'AgglomerativeClustering':
        return cluster.AgglomerativeClustering(n_clusters=n_clusters, linkage='average',
                                               metric='cityblock',
                                               connectivity=_connectivity(X))
    if name == 'DBSCAN':
        return cluster.DBSCAN(eps=_dbscan_eps(X), min_samples=NEIGHBOURS)
    if name == 'OPTICS':
        # A cluster must hold at least a quarter of an average class.
        return cluster.OPTICS(min_samples=NEIGHBOURS, xi=0.05, metric='precomputed',
                              min_cluster_size=max(2, len(X) // (4 * n_clusters)))
    if name == 'Birch':
        return cluster.Birch(n_clusters=n_clusters, threshold=_birch_threshold(X))
    if name == 'GaussianMixture':
        covariance = 'full' if X.shape[1] <= FULL_COVARIANCE_DIMS else 'diag'
        return mixture.GaussianMixture(n_components=n_clusters, covariance_type=covariance,
                                       random_state=seed)
    raise ValueError('unknown algorithm %r' % name)


def _kth_neighbour_distance(X, k):
    """(N,) distance from each point to its k-th nearest other point."""
    from sklearn.neighbors import NearestNeighbors
    k = min(k, len(X) - 1)
    distances, _ = NearestNeighbors(n_neighbors=k + 1).fit(X).kneighbors(X)
    return distances[:, k]


def _connectivity(X):
    """Symmetric k-nearest-neighbour graph, as in scikit-learn's example."""
    from sklearn.neighbors import kneighbors_graph
    graph = kneighbors_graph(X, n_neighbors=min(NEIGHBOURS, len(X) - 1), include_self=False)
    return 0.5 * (graph + graph.T)


def _dbscan_eps(X):
    return float(np.quantile(_kth_neighbour_distance(X, NEIGHBOURS), DBSCAN_QUANTILE))


def _birch_threshold(X):
    """Half the median nearest-neighbour distance: subclusters stay finer than the data's
    own spacing (scikit-learn's fixed 0.5 merges unit vectors far too coarsely or too
    finely depending on D)."""
    return max(0.5 * float(np.median(_kth_neighbour_distance(X, 1))), 1e-6)


def _ap_preference(X):
    """The smallest similarity (-squared distance) of a seeded sample of pairs.

    The default, the median, makes hundreds of exemplars on thousands of points; the
    minimum is the usual choice for a small number of clusters.
    """
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, len(X), size=(2, min(100000, len(X) ** 2)))
    return -float(np.max(np.sum((X[i] - X[j]) ** 2, axis=1)))


def _bandwidth(X, n_clusters, seed):
    """The mean distance to the nearest 1/(2 n_clusters) of the points: about half an
    average class. scikit-learn's example uses the nearest 30%, which in hundreds of
    dimensions (where distances concentrate) spans several classes and finds one mode."""
    from sklearn.cluster import estimate_bandwidth
    bandwidth = estimate_bandwidth(X, quantile=min(0.3, 0.5 / n_clusters),
                                   n_samples=min(BANDWIDTH_POINTS, len(X)), random_state=seed)
    return max(bandwidth, 1e-6)


def _seeds(X, seed):
    rng = np.random.default_rng(seed)
    return X[rng.choice(len(X), size=min(MEANSHIFT_SEEDS, len(X)), replace=False)]


def run_guarded(function, args, timeout=None):
    """Runs function(*args) in a forked child process. Returns Outcome(status, value,
    seconds): status 'ok' (value is the result), 'ok (did not converge)' after a
    ConvergenceWarning, 'timeout' (the child was killed after `timeout` seconds; None: no
    limit) or 'failed: reason'. Seconds are the child's run time.

    GNU libgomp is not fork-safe: `function` must run scikit-learn's OpenMP code on one
    thread (projection.one_openmp_thread), else it hangs whenever the parent has run
    OpenMP code before.
    """
    context = multiprocessing.get_context('fork')
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_child_main, args=(sender, function, args), daemon=True)
    start = time.time()
    child.start()
    sender.close()
    try:
        if not receiver.poll(timeout):
            return Outcome('timeout', None, time.time() - start)
        try:
            status, value, seconds = receiver.recv()
        except EOFError:
            child.join()
            return Outcome(_death(child.exitcode), None, time.time() - start)
        return Outcome(status, value, seconds)
    finally:
        receiver.close()
        _stop(child)


def _child_main(sender, function, args):
    """In the child: runs the function and sends (status, value, seconds) back."""
    # Ctrl-C reaches the whole process group: the parent handles it and stops us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    start = time.time()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            value = function(*args)
        status = 'ok' + _convergence_note(caught)
        sender.send((status, value, time.time() - start))
    except Exception as e:  # reported to the parent, which goes on with the others
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        sender.send(('failed: %s' % reason[:200], None, time.time() - start))
    finally:
        sender.close()


def _convergence_note(caught):
    from sklearn.exceptions import ConvergenceWarning
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        return ' (did not converge)'
    return ''


def _death(exitcode):
    if exitcode is not None and exitcode < 0:
        why = ' (out of memory?)' if -exitcode == signal.SIGKILL else ''
        return 'failed: killed by signal %d%s' % (-exitcode, why)
    return 'failed: the process exited with status %s' % exitcode


def _stop(child):
    """Terminates the child if it still runs; SIGKILL when SIGTERM is not enough."""
    if child.is_alive():
        child.terminate()
        child.join(5)
    if child.is_alive():
        child.kill()
    child.join()


SCORE_COLUMNS = ('clusters', 'nmi', 'ari', 'homogeneity', 'completeness', 'v_measure',
                 'silhouette')


def silhouette_distances(X, seed):
    """Pairwise distances for the silhouette: (indices (M,), (M, M) float32), M at most
    SILHOUETTE_POINTS (a seeded sample), computed once in the parent and shared by every
    algorithm's child: each silhouette is then O(M^2), not O(M^2 D).
    """
    indices = np.arange(len(X))
    if len(X) > SILHOUETTE_POINTS:
        rng = np.random.default_rng(seed)
        indices = np.sort(rng.choice(len(X), size=SILHOUETTE_POINTS, replace=False))
    points = X[indices].astype(np.float32)
    squares = np.einsum('ij,ij->i', points, points)
    distances = squares[:, None] + squares[None, :] - 2.0 * (points @ points.T)
    np.maximum(distances, 0.0, out=distances)
    np.sqrt(distances, out=distances)
    np.fill_diagonal(distances, 0.0)
    return indices, distances


def evaluate(name, X, n_clusters, seed, truth, silhouette):
    """Runs algorithm `name` on (N, D) `X` and scores it against (N,) int `truth`.

    Meant for run_guarded's child. Returns (predicted (N,) ids numbered by size, see
    by_size; seconds of the clustering alone; scores dict).
    """
    start = time.time()
    predicted = by_size(fit_predict(name, X, n_clusters, seed))
    seconds = time.time() - start
    with projection.one_openmp_thread():
        return predicted, seconds, scores(truth, predicted, silhouette)


def by_size(predicted):
    """(N,) cluster ids renumbered 0, 1, ... from the largest cluster to the smallest
    (equal sizes in the order of their old ids); noise (-1) stays -1. The scores do not
    change; the pictures colour cluster k the same in every panel."""
    predicted = np.asarray(predicted)
    clusters, ids, sizes = np.unique(predicted, return_inverse=True, return_counts=True)
    sizes[clusters == -1] = -1  # noise is ranked last and mapped back to -1 below
    rank = np.empty(len(clusters), dtype=np.int64)
    rank[np.argsort(-sizes, kind='stable')] = np.arange(len(clusters))
    renumbered = rank[ids.ravel()]
    renumbered[predicted == -1] = -1
    return renumbered


def scores(truth, predicted, silhouette=None):
    """Scores of (N,) cluster ids `predicted` (-1: noise) against (N,) int labels `truth`.

    Noise counts as one more cluster for NMI, ARI, homogeneity, completeness and
    V-measure, and is left out of the silhouette, which is computed on the points and
    distances of `silhouette` (from silhouette_distances) and is NaN with fewer than two
    clusters. Returns a dict with SCORE_COLUMNS, and for the pictures 'sizes' (the
    clusters' sizes, largest first) and 'noise' (the number of points in no cluster).
    """
    from sklearn import metrics
    homogeneity, completeness, v_measure = metrics.homogeneity_completeness_v_measure(
        truth, predicted)
    return {
        'clusters': int(len(set(predicted.tolist()) - {-1})),
        'nmi': metrics.normalized_mutual_info_score(truth, predicted),
        'ari': metrics.adjusted_rand_score(truth, predicted),
        'homogeneity': homogeneity,
        'completeness': completeness,
        'v_measure': v_measure,
        'silhouette': _silhouette(predicted, silhouette),
        'sizes': sorted(np.unique(predicted[predicted != -1], return_counts=True)[1].tolist(),
                        reverse=True),
        'noise': int(np.sum(predicted == -1)),
    }


def _silhouette(predicted, silhouette):
    from sklearn.metrics import silhouette_score
    if silhouette is None:
        return float('nan')
    indices, distances = silhouette
    ids = predicted[indices]
    keep = ids != -1
    if not 2 <= len(np.unique(ids[keep])) <= keep.sum() - 1:
        return float('nan')
    return float(silhouette_score(distances[np.ix_(keep, keep)], ids[keep],
                                  metric='precomputed'))
