"""Deep metric learning on BERT: the embedding model and its training task.

The model is by default the original BERT-DML's: BERT sentence vector (`--pooling`) ->
dropout 0.1 -> Linear to `--dim` (`--head linear`); `--head none` trains the loss on the
sentence vector itself. The task feeds `bertlib.training.train` with the batches and the loss of a
`losses.Loss` (`losses.build`): stacked anchor/positive/negative triples for `triplet`, P
classes x K sentences (or random batches, `--sampling random`) for the others.

After every epoch the mean of the fixed training sample's unit-length embeddings, the
*centre*, is saved in the model's metadata; `centred` subtracts it and re-normalises, which
is what extraction and the logged T/ and D/ scores use (unit-length embeddings of a
fine-tuned model share a large common component that cosine retrieval does not need).

With `--distill WEIGHT` the task adds WEIGHT x `losses.similarity_distillation` of each
batch's embeddings toward the pre-trained BERT's sentence vectors of the same sentences
(`teacher_vectors`, computed once before training, in test mode): the model learns its
classes while keeping the pre-trained neighbourhoods, which is what classes unseen in
training are retrieved by. `interpolate` blends a fine-tuned BERT with the pre-trained
one in weight space at extraction (WiSE-FT, Wortsman et al. 2022).
"""

import logging

import chainer
import chainer.functions as F
import chainer.links as L
import numpy as np

from bertlib import checkpoints, distributed, dropout, losses, metrics, modeling, training
from bertlib.errors import UsageError

logger = logging.getLogger(__name__)

# At most this many training sentences are embedded after each epoch for T/acc1, T/acc2.
TRAIN_SAMPLE = 2000


HEADS = ('linear', 'none')


class DMLModel(chainer.Chain):
    """Sentence embedding: BERT -> dropout -> Linear(hidden, dim) (head 'linear', the
    original's), or the BERT sentence vector itself (head 'none', dim = hidden size).

    Parameters: `bert/...` (the BERT tree), `output/{W,b}` with the linear head, and
    `loss/...` when the loss has parameters of its own (ArcFace's class proxies, the
    classifier of supcon_ce), which extraction ignores. `centre` ((dim,) float32 or None)
    is what `features` subtracts from the unit-length embeddings.
    """

    def __init__(self, bert, dim=512, pooling='pooled', loss_link=None, dropout=0.1,
                 head='linear'):
        super(DMLModel, self).__init__()
        if head not in HEADS:
            raise ValueError('head must be one of %s, got %r' % (HEADS, head))
        self.pooling = pooling
        self.dropout = dropout
        self.head = head
        self.centre = None
        with self.init_scope():
            self.bert = bert
            if head == 'linear':
                self.output = linear_head(bert.config.hidden_size, dim)
            if loss_link is not None:
                self.loss = loss_link

    @property
    def dim(self):
        if self.head == 'none':
            return self.bert.config.hidden_size
        return int(self.output.W.shape[0])

    def embed(self, input_ids, input_mask):
        """(B, T) token ids and mask -> (B, dim) embeddings, what the loss is trained on."""
        sentence = self.bert.encode(input_ids, input_mask, pooling=self.pooling)
        if self.head == 'none':
            return sentence
        return self.output(dropout.dropout(sentence, self.dropout))

    def features(self, input_ids, input_mask):
        """(B, T) -> (B, dim) features for extraction: the embeddings, centred on
        `centre` and re-normalised when the model has one."""
        x = self.embed(input_ids, input_mask)
        if self.centre is None:
            return x
        z = F.normalize(x, eps=1e-12, axis=1) - self.xp.asarray(self.centre)
        return F.normalize(z, eps=1e-12, axis=1)


def linear_head(hidden, dim):
    """The Linear(hidden, dim) of head 'linear': W (dim, hidden) drawn from N(0, 0.02^2)
    with NumPy's global generator (seeded by `training.seed_everything`), b zero."""
    return L.Linear(hidden, dim, initialW=chainer.initializers.Normal(0.02))


def train_sample_rows(n, seed):
    """(min(n, TRAIN_SAMPLE),) sorted int64 rows of a training split of n sentences: the
    fixed sample that T/ scores and the centre are computed on."""
    return np.sort(np.random.RandomState(seed).permutation(n)[:TRAIN_SAMPLE])


def unit_rows(x):
    """(N, D) -> (N, D) rows of unit length (zero rows stay zero), float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1, norms)


def centre_of(embeddings):
    """(N, D) embeddings -> (D,) float32 mean of their unit-length rows."""
    return unit_rows(embeddings).mean(axis=0).astype(np.float32)


def centred(embeddings, centre):
    """(N, D) embeddings and a (D,) centre -> (N, D) unit rows of normalise(x) - centre."""
    return unit_rows(unit_rows(embeddings) - centre)


def read_meta(path):
    """The metadata of a DML model file (`checkpoints.read_meta`), with its head and
    pooling checked: an unknown one is refused here, not in the middle of an extraction.
    The defaults are those of the original BERT-DML's models, which have no metadata."""
    meta = checkpoints.read_meta(path)
    for key, choices, default in (('head', HEADS, 'linear'),
                                  ('pooling', modeling.POOLINGS, 'pooled')):
        value = meta.setdefault(key, default)
        if value not in choices:
            raise UsageError('%s: model metadata %s is %r, not one of %s'
                             % (path, key, value, ', '.join(choices)))
    return meta


def read_centre(meta, dim, path):
    """The (dim,) float32 centre saved in a model's metadata, or None without one."""
    value = meta.get('centre')
    if value is None:
        return None
    if (not isinstance(value, list) or len(value) != dim
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                       for v in value)):
        raise UsageError('%s: model metadata centre is not a list of %d finite numbers'
                         % (path, dim))
    # Checked in float32, where it is used: 1e300 is finite in JSON, infinite there.
    with np.errstate(over='ignore'):
        centre = np.array(value, dtype=np.float32)
    if not np.isfinite(centre).all():
        raise UsageError('%s: model metadata centre is not a list of %d finite numbers '
                         '(in float32, up to %g)' % (path, dim, np.finfo(np.float32).max))
    return centre


def teacher_vectors(bert, split, pooling, batchsize, xp, comm=None):
    """(N, hidden) float32 sentence vectors of `split` by `bert` (the pre-trained one,
    before any step) with `pooling`, in test mode and without gradients: the targets of
    --distill, one row per training sentence."""
    def encode(input_ids, input_mask):
        return bert.encode(input_ids, input_mask, pooling=pooling)
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        return distributed.encode_sorted(comm, split.ids, encode, batchsize, xp)


def interpolate(bert, pretrained, alpha):
    """Sets every parameter of `bert` to alpha * its value + (1 - alpha) * the same
    parameter of `pretrained` (a BertModel of the same config), in place. alpha 1 keeps
    the fine-tuned weights, 0 gives the pre-trained BERT."""
    if not 0 <= alpha <= 1:
        raise ValueError('alpha must be between 0 and 1, got %r' % alpha)
    others = dict(pretrained.namedparams())
    for name, param in bert.namedparams():
        param.array[...] = alpha * param.array + (1 - alpha) * others[name].array


class DMLTask(training.Task):
    """Batches, loss and scores of metric learning, for `training.train`."""

    early_stopping = {'loss': ('D/loss', 'min'), 'map': ('D/acc2', 'max')}
    score_names = ('precision@1', 'MAP@R')

    def describe(self):
        return 'metric learning, %s loss' % self.metric_loss.name

    def __init__(self, model, loss, train, evaluation, batchsize, xp, seed=0, comm=None,
                 memory=None, settings=None, distill=None):
        """loss: a `losses.Loss` (its link, if any, is `model.loss`). batchsize: of the
        evaluation passes. comm: a ChainerMN communicator to share every batch with (the
        loss is still that of the whole batch: see bertlib/distributed.py), or None.
        memory: a `losses.CrossBatchMemory` read and filled by the training steps, or
        None. settings: further facts for the models' metadata (e.g. {'ema': 0.999}).
        distill: None or (weight, temperature, (N, hidden) teacher vectors of the training
        sentences, `teacher_vectors`) for the distillation term of every training step."""
        self.settings = dict(settings or {})
        self.distill = distill
        self.model = model
        self.metric_loss = loss
        self.memory = memory
        self.comm = comm
        self.train_split = train
        self.eval_split = evaluation
        self.batchsize = batchsize
        self.xp = xp
        self.train_sample = train.subset(train_sample_rows(len(train), seed))
        # Fixed draws for D/loss and T/ scores, so epochs are comparable.
        self.eval_batches = self._eval_draw(evaluation.labels, np.random.RandomState(seed + 1))

    # --- batches ---------------------------------------------------------------------
    def _eval_draw(self, labels, rng):
        """The fixed D/loss batches. Eval classes unseen in training are fine for the
        losses that compare sentences; a loss with class proxies (ArcFace) scores a
        sentence against its class's trained proxy, so there only the rows of training
        classes take part."""
        rows = np.arange(len(labels))
        if self.metric_loss.proxies:
            rows = np.flatnonzero(labels < self.model.loss.n_classes)
        if len(np.unique(labels[rows])) < 2:
            return []
        return [rows[batch] for batch in self.metric_loss.batches(labels[rows], rng)]

    def batches(self, rng):
        return self.metric_loss.batches(self.train_split.labels, rng)

    # --- loss ------------------------------------------------------------------------
    def _embed(self, indices):
        return distributed.encode_by_length(self.comm, self.model.embed,
                                            [self.train_split.ids[i] for i in indices], self.xp)

    def _loss_of(self, embeddings, batch, labels):
        t = self.xp.asarray(labels[batch])
        if self.memory is None or not chainer.config.train:
            return self.metric_loss(embeddings, t)
        # The memory holds earlier batches only; this one is enqueued after its loss.
        loss = self.metric_loss(embeddings, t, memory=self.memory.contents(self.xp))
        self.memory.push(embeddings.array, labels[batch])
        return loss

    def loss(self, batch):
        embeddings = self._embed(batch)
        loss = self._loss_of(embeddings, batch, self.train_split.labels)
        if self.distill is not None:
            weight, temperature, teacher = self.distill
            loss = loss + weight * losses.similarity_distillation(
                embeddings, self.xp.asarray(teacher[batch]), temperature)
        return loss, len(batch)

    # --- scores ----------------------------------------------------------------------
    def embed_split(self, split):
        """(N, dim) float32 embeddings of a split, in test mode."""
        return distributed.encode_sorted(self.comm, split.ids, self.model.embed,
                                         self.batchsize * 2, self.xp)

    def evaluate(self, which):
        """Scores of the centred embeddings (as extraction writes them); the training
        sample, scored first, sets the centre."""
        split = self.train_sample if which == 'train' else self.eval_split
        embeddings = self.embed_split(split)
        if which == 'train':
            self.model.centre = centre_of(embeddings)
        scores = metrics.retrieval_metrics(centred(embeddings, self.model.centre),
                                           split.labels)
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
                values.append(float(self._loss_of(x[batch], batch, labels).array))
        return float(np.mean(values)) if values else float('nan')

    def meta(self):
        meta = {'kind': 'dml', 'pooling': self.model.pooling, 'dim': self.model.dim,
                'head': self.model.head, 'loss': self.metric_loss.name,
                'classes': int(self.train_split.labels.max()) + 1}
        meta.update(self.settings)
        if self.model.centre is not None:
            meta['centre'] = [float(v) for v in self.model.centre]
        return meta
