"""Deep metric learning on BERT: the embedding model and its training task.

The model is the seed's: BERT sentence vector (`--pooling`) -> dropout 0.1 -> Linear to
`--dim`. The task feeds `bertlib.training.train` with batches for the chosen `--loss`:
anchor/positive/negative triples for `triplet`, P classes x K sentences for the others.
"""

import logging

import chainer
import chainer.links as L
import numpy as np

from bertlib import distributed, dropout, losses, metrics, training

logger = logging.getLogger('main')

# At most this many training sentences are embedded after each epoch for T/acc1, T/acc2.
TRAIN_SAMPLE = 2000


class DMLModel(chainer.Chain):
    """Sentence embedding: BERT -> dropout -> Linear(hidden, dim).

    Parameters: `bert/...` (the BERT tree), `output/{W,b}`, and `loss/...` when the loss
    has parameters of its own (ArcFace's class proxies), which extraction ignores.
    """

    def __init__(self, bert, dim=512, pooling='pooled', loss_link=None, dropout=0.1):
        super(DMLModel, self).__init__()
        self.pooling = pooling
        self.dropout = dropout
        with self.init_scope():
            self.bert = bert
            self.output = L.Linear(bert.config.hidden_size, dim,
                                   initialW=chainer.initializers.Normal(0.02))
            if loss_link is not None:
                self.loss = loss_link

    def embed(self, input_ids, input_mask):
        """(B, T) token ids and mask -> (B, dim) embeddings."""
        sentence = self.bert.encode(input_ids, input_mask, pooling=self.pooling)
        return self.output(dropout.dropout(sentence, self.dropout))


class DMLTask(training.Task):
    """Batches, loss and scores of metric learning, for `training.train`."""

    early_stopping = {'loss': ('D/loss', 'min'), 'map': ('D/acc2', 'max')}

    def __init__(self, model, loss_name, train, evaluation, batchsize, xp, hyper,
                 triplets=1000, samples_per_class=8, seed=0, comm=None):
        """comm: a ChainerMN communicator to share every batch with (the loss is still
        that of the whole batch: see bertlib/distributed.py), or None."""
        self.model = model
        self.comm = comm
        self.loss_name = loss_name
        self.train_split = train
        self.eval_split = evaluation
        self.batchsize = batchsize
        self.xp = xp
        self.hyper = hyper
        self.triplets = triplets
        self.samples_per_class = samples_per_class
        rng = np.random.RandomState(seed)
        sample = rng.permutation(len(train))[:TRAIN_SAMPLE]
        self.train_sample = train.subset(np.sort(sample))
        if loss_name == 'triplet':
            self.loss_fn = None
        elif loss_name == 'arcface':
            self.loss_fn = model.loss
        else:
            self.loss_fn = losses.make_loss(loss_name, n_classes=None, dim=None, **hyper)
        # Fixed draws for D/loss and T/ scores, so epochs are comparable.
        self.eval_batches = self._eval_draw(evaluation.labels, np.random.RandomState(seed + 1))

    # --- batches ---------------------------------------------------------------------
    def _draw(self, labels, rng):
        if self.loss_name == 'triplet':
            anchors, positives, negatives = losses.sample_triplets(labels, self.triplets, rng)
            for start in range(0, len(anchors), self.batchsize):
                stop = start + self.batchsize
                yield anchors[start:stop], positives[start:stop], negatives[start:stop]
        else:
            # P classes x K sentences; with fewer classes than batchsize / K (rt-polarity
            # has two), K grows so that a batch still holds about batchsize sentences.
            per_class = max(2, self.samples_per_class)
            classes = min(max(2, self.batchsize // per_class), len(np.unique(labels)))
            per_class = max(per_class, self.batchsize // classes)
            for indices in losses.pk_batches(labels, classes, per_class, rng):
                yield indices

    def _eval_draw(self, labels, rng):
        """The fixed D/loss batches. Eval classes unseen in training are fine for the
        losses that compare sentences; ArcFace scores a sentence against its class's
        trained proxy, so there only the rows of training classes take part."""
        rows = np.arange(len(labels))
        if self.loss_name == 'arcface':
            rows = np.flatnonzero(labels < self.model.loss.n_classes)
        if len(np.unique(labels[rows])) < 2:
            return []
        batches = self._draw(labels[rows], rng)
        if self.loss_name == 'triplet':
            return [tuple(rows[part] for part in batch) for batch in batches]
        return [rows[batch] for batch in batches]

    def batches(self, rng):
        return self._draw(self.train_split.labels, rng)

    # --- loss ------------------------------------------------------------------------
    def _embed(self, indices):
        return distributed.encode_by_length(self.comm, self.model.embed,
                                            [self.train_split.ids[i] for i in indices], self.xp)

    def _loss_of(self, embeddings, batch, labels):
        if self.loss_name == 'triplet':
            n = len(batch[0])
            return losses.triplet_loss(embeddings[:n], embeddings[n:2 * n],
                                       embeddings[2 * n:], margin=self.hyper['margin'])
        return self.loss_fn(embeddings, self.xp.asarray(labels[batch]))

    def loss(self, batch):
        if self.loss_name == 'triplet':
            indices = np.concatenate(batch)
        else:
            indices = batch
        embeddings = self._embed(indices)
        return self._loss_of(embeddings, batch, self.train_split.labels), len(indices)

    # --- scores ----------------------------------------------------------------------
    def embed_split(self, split):
        """(N, dim) float32 embeddings of a split, in test mode."""
        return distributed.encode_sorted(self.comm, split.ids, self.model.embed,
                                         self.batchsize * 2, self.xp)

    def evaluate(self, which):
        split = self.train_sample if which == 'train' else self.eval_split
        embeddings = self.embed_split(split)
        scores = metrics.retrieval_metrics(embeddings, split.labels)
        result = {'acc1': scores['precision_at_1'], 'acc2': scores['map_at_r'], 'loss': None}
        if which == 'eval':
            result['loss'] = self._fixed_loss(embeddings, split.labels)
        return result

    def _fixed_loss(self, embeddings, labels):
        """Mean loss over the fixed evaluation batches, on precomputed embeddings."""
        values = []
        x = self.xp.asarray(embeddings)
        with chainer.using_config('train', False), chainer.no_backprop_mode():
            for batch in self.eval_batches:
                if self.loss_name == 'triplet':
                    rows = np.concatenate(batch)
                    value = self._loss_of(x[rows], batch, labels)
                else:
                    value = self._loss_of(x[batch], batch, labels)
                values.append(float(value.array))
        return float(np.mean(values)) if values else float('nan')

    def meta(self):
        return {'kind': 'dml', 'pooling': self.model.pooling,
                'dim': int(self.model.output.W.shape[0]), 'loss': self.loss_name,
                'classes': int(self.train_split.labels.max()) + 1}
