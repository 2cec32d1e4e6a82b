"""The fine-tuned classifier baseline: BERT pooled output -> dropout 0.1 -> Linear(K).

Its `pooled output` after fine-tuning is the original BERT-DML's "Classified (fine-tuning)"
feature.
`ClassifierTask` feeds `bertlib.training.train`: acc1 is accuracy, acc2 is UAR
(unweighted average recall, i.e. macro recall).
"""

import chainer
import chainer.functions as F
import chainer.links as L
import numpy as np

from bertlib import distributed, dropout, figures, training

TRAIN_SAMPLE = 2000


class ClassifierModel(chainer.Chain):
    """Parameters: `bert/...` and `output/{W,b}` with W of shape (K, hidden)."""

    def __init__(self, bert, n_classes, dropout_ratio=0.1):
        super(ClassifierModel, self).__init__()
        self.dropout_ratio = dropout_ratio
        with self.init_scope():
            self.bert = bert
            self.output = L.Linear(bert.config.hidden_size, n_classes,
                                   initialW=chainer.initializers.Normal(0.02))

    def features(self, input_ids, input_mask):
        """The fine-tuned pooled output, (B, hidden): the extracted feature."""
        return self.bert.encode(input_ids, input_mask, pooling='pooled')

    def logits(self, input_ids, input_mask):
        """(B, K) class scores."""
        pooled = self.features(input_ids, input_mask)
        return self.output(dropout.dropout(pooled, self.dropout_ratio))


def class_weights(labels, n_classes, mode):
    """None, or 'balanced' weights n / (K * count) as scikit-learn's, float32 (K,)."""
    if mode == 'none':
        return None
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    weights = np.where(counts > 0, len(labels) / (n_classes * np.maximum(counts, 1)), 0.0)
    return weights.astype(np.float32)


def unweighted_average_recall(y_true, y_pred, n_classes):
    """Mean over the classes present in y_true of their recall."""
    recalls = [np.mean(y_pred[y_true == k] == k) for k in range(n_classes)
               if np.any(y_true == k)]
    return float(np.mean(recalls)) if recalls else float('nan')


class ClassifierTask(training.Task):
    """Shuffled mini-batches, softmax cross-entropy, accuracy and UAR."""

    early_stopping = {'loss': ('D/loss', 'min'), 'uar': ('D/acc2', 'max')}
    score_names = ('accuracy', 'UAR')

    def describe(self):
        weighted = '' if self.weights is None else 'class-weighted '
        return 'classifier, %ssoftmax cross-entropy loss' % weighted

    def __init__(self, model, train, evaluation, n_classes, batchsize, xp, weights=None,
                 seed=0, comm=None):
        """comm: a ChainerMN communicator to share every batch with (the loss is still
        that of the whole batch: see bertlib/distributed.py), or None."""
        self.model = model
        self.comm = comm
        self.train_split = train
        self.eval_split = evaluation
        self.n_classes = n_classes
        self.batchsize = batchsize
        self.xp = xp
        self.weights = None if weights is None else xp.asarray(weights)
        sample = np.random.RandomState(seed).permutation(len(train))[:TRAIN_SAMPLE]
        self.train_sample = train.subset(np.sort(sample))

    def batches(self, rng):
        order = rng.permutation(len(self.train_split))
        return [order[i:i + self.batchsize] for i in range(0, len(order), self.batchsize)]

    def loss(self, batch):
        logits = distributed.encode_by_length(self.comm, self.model.logits,
                                              [self.train_split.ids[i] for i in batch], self.xp)
        t = self.xp.asarray(self.train_split.labels[batch])
        return F.softmax_cross_entropy(logits, t, class_weight=self.weights), len(batch)

    def logits_of(self, split):
        """(N, K) logits of a split in test mode (every rank calls it and gets them)."""
        return distributed.encode_sorted(self.comm, split.ids, self.model.logits,
                                         self.batchsize * 2, self.xp)

    def evaluate(self, which):
        split = self.train_sample if which == 'train' else self.eval_split
        logits = self.logits_of(split)
        predicted = logits.argmax(axis=1)
        result = {'acc1': float(np.mean(predicted == split.labels)),
                  'acc2': unweighted_average_recall(split.labels, predicted, self.n_classes),
                  'loss': None}
        if which == 'eval':
            weights = None if self.weights is None else chainer.backend.CpuDevice().send(
                self.weights)
            result['loss'] = float(F.softmax_cross_entropy(
                logits, split.labels, class_weight=weights).array)
        return result

    def meta(self):
        return {'kind': 'classifier', 'classes': self.n_classes}


def confusion(y_true, y_pred, k):
    """(K, K) counts (rows: true, columns: predicted) and their row-normalised rates."""
    import sklearn.metrics
    matrix = sklearn.metrics.confusion_matrix(y_true, y_pred, labels=list(range(k)))
    rows = matrix.sum(axis=1, keepdims=True)
    rates = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    return matrix, rates


def report(y_true, y_pred, names):
    """Confusion matrix (counts and row-normalised rates), UAR and scikit-learn's
    classification report, as text. y_true, y_pred: int arrays; names: label names."""
    import sklearn.metrics
    k = len(names)
    matrix, rates = confusion(y_true, y_pred, k)
    width = max(8, max(len(n) for n in names) + 1)
    lines = ['confusion matrix (rows: true, columns: predicted), counts:']
    header = ' ' * width + ''.join('%*s' % (width, n) for n in names)
    lines.append(header)
    for name, row in zip(names, matrix):
        lines.append('%*s' % (width, name) + ''.join('%*d' % (width, v) for v in row))
    lines.append('rates:')
    lines.append(header)
    for name, row in zip(names, rates):
        lines.append('%*s' % (width, name) + ''.join('%*.3f' % (width, v) for v in row))
    lines.append('accuracy: %.4f' % float(np.mean(y_true == y_pred)))
    lines.append('UAR: %.4f' % unweighted_average_recall(y_true, y_pred, k))
    present = sorted(set(np.unique(y_true)) | set(np.unique(y_pred)))
    lines.append(sklearn.metrics.classification_report(
        y_true, y_pred, labels=present, target_names=[names[i] for i in present],
        digits=4, zero_division=0))
    return '\n'.join(lines)


def draw_confusion(y_true, y_pred, names, path, title):
    """The confusion matrix as a picture, as the original BERT-DML's
    `<out>-cm-<model>.png` (figures.draw_confusion)."""
    matrix, rates = confusion(y_true, y_pred, len(names))
    figures.draw_confusion(matrix, rates, names, path, title)
