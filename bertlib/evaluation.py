"""Scores of one feature set, so that feature sets can be compared side by side.

Retrieval scores (precision@1, MAP@R, R-precision) come from `bertlib.metrics`, the same
code as the training log's acc1/acc2. Clustering and probe scores come from scikit-learn:

- KMeans NMI / ARI: k-means with k = number of labels on the L2-normalised features
  (cosine geometry, as the retrieval scores), compared with the labels;
- silhouette: of the *labels* under cosine distance, i.e. how well the classes are
  separated in the feature space; exact on up to `silhouette_samples` points, else on a
  seeded stratified sample of that size (the exact score is quadratic in the number of points);
- probe: accuracy on the features of a logistic regression fitted on training features
  (standardised), a linear-probe measure of how much label information they carry.
"""

import logging
import time

import numpy as np

from bertlib import metrics, projection
from bertlib.errors import UsageError

logger = logging.getLogger(__name__)

COLUMNS = (('precision_at_1', 'P@1'), ('map_at_r', 'MAP@R'), ('r_precision', 'R-prec'),
           ('kmeans_nmi', 'KMeans NMI'), ('kmeans_ari', 'KMeans ARI'),
           ('silhouette', 'silhouette'), ('probe_accuracy', 'probe acc'))


def l2_normalize(x):
    """(N, D) -> (N, D) rows of unit length (zero rows stay zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1, norms)


def score_features(labels, features, seed=0, silhouette_samples=10000, train=None):
    """All scores of one feature set.

    labels: N label strings; features: (N, D) float array; train: optional (labels,
    features) of a training set for the logistic-regression probe.
    Returns {score name: float} with the keys of COLUMNS ('probe_accuracy' only with
    `train`) and 'count' (N).
    """
    from sklearn import cluster, metrics as skm
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise UsageError('only one label (%r): nothing to compare' % classes[0])
    if len(labels) <= len(classes):
        raise UsageError('%d points for %d labels: too few to cluster'
                         % (len(labels), len(classes)))
    sample = None if len(labels) <= silhouette_samples else silhouette_samples
    if sample is not None and sample <= len(classes):
        raise UsageError('--silhouette_samples %d is not more than the %d labels: a '
                         'silhouette needs every label and one point more'
                         % (sample, len(classes)))
    scores = {'count': len(labels)}
    start = time.time()
    scores.update({k: v for k, v in metrics.retrieval_metrics(features, labels).items()
                   if k != 'count'})
    logger.info('retrieval scores: %.1f sec', time.time() - start)

    start = time.time()
    unit = l2_normalize(np.asarray(features, dtype=np.float32))
    kmeans = cluster.KMeans(n_clusters=len(classes), n_init=1, random_state=seed)
    found = kmeans.fit_predict(unit)
    scores['kmeans_nmi'] = float(skm.normalized_mutual_info_score(labels, found))
    scores['kmeans_ari'] = float(skm.adjusted_rand_score(labels, found))
    logger.info('KMeans: %.1f sec', time.time() - start)

    start = time.time()
    # Stratified, not scikit-learn's uniform draw: every label keeps its points, so a
    # small sample cannot end with one label, for which no silhouette exists.
    chosen = np.arange(len(labels)) if sample is None else \
        projection.stratified_sample(labels, sample, seed)
    scores['silhouette'] = float(skm.silhouette_score(
        unit[chosen], [labels[i] for i in chosen], metric='cosine'))
    logger.info('silhouette%s: %.1f sec',
                ' (on %d sampled points)' % sample if sample else '', time.time() - start)

    if train is not None:
        start = time.time()
        scores['probe_accuracy'] = probe_accuracy(train, (labels, features), seed)
        logger.info('probe: %.1f sec', time.time() - start)
    return scores


def probe_accuracy(train, test, seed=0):
    """Accuracy on `test` of a logistic regression fitted on `train`; each is (labels,
    (N, D) features). Test labels unseen in training count as errors."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    train_labels, train_x = train
    test_labels, test_x = test
    if train_x.shape[1] != test_x.shape[1]:
        raise UsageError('training features have %d dimensions, test features %d'
                         % (train_x.shape[1], test_x.shape[1]))
    if len(set(train_labels)) < 2:
        raise UsageError('training features have a single label: no probe to fit')
    probe = make_pipeline(StandardScaler(),
                          LogisticRegression(max_iter=1000, random_state=seed))
    probe.fit(train_x, train_labels)
    predicted = probe.predict(test_x)
    return float(np.mean(predicted == np.asarray(test_labels, dtype=object)))


def markdown_table(rows):
    """rows: [(name, scores)] -> a Markdown table, one row per feature set; columns
    with no value in any row are left out."""
    columns = [(key, title) for key, title in COLUMNS
               if any(key in scores for _, scores in rows)]
    lines = ['| features | ' + ' | '.join(title for _, title in columns) + ' |',
             '|---|' + '---|' * len(columns)]
    for name, scores in rows:
        cells = ['%.3f' % scores[key] if key in scores else '' for key, _ in columns]
        lines.append('| %s | %s |' % (name, ' | '.join(cells)))
    return '\n'.join(lines) + '\n'
