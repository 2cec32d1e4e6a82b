"""The BERT model (Devlin et al. 2019) as a Chainer `Chain`.

The parameter tree mirrors the npz files written by the widely used Chainer BERT port's
TensorFlow converter (`arrays_bert_model.ckpt.npz`), so that the checkpoints the original
BERT-DML's users already hold load as they are:

    bert/word_embeddings/W                       (vocab_size, hidden)
    bert/position_embeddings/W                   (max_position_embeddings, hidden)
    bert/token_type_embeddings/W                 (type_vocab_size, hidden)
    bert/post_embedding_ln/{gamma,beta}          (hidden,)
    bert/encoder/layer_<i>/attention/{query,key,value}/{W,b}
    bert/encoder/layer_<i>/attention_output_dense/{W,b}
    bert/encoder/layer_<i>/attention_output_ln/{gamma,beta}
    bert/encoder/layer_<i>/intermediate_dense1/{W,b}   W: (intermediate, hidden)
    bert/encoder/layer_<i>/intermediate_dense2/{W,b}   W: (hidden, intermediate)
    bert/encoder/layer_<i>/intermediate_ln/{gamma,beta}
    bert/pooler/{W,b}

Dense kernels are stored as Chainer's (out, in).
"""

import contextlib
import copy
import json
import math

import chainer
import chainer.functions as F
import chainer.links as L
import numpy as np

from bertlib import activations, checkpoints, dropout, fileio
from bertlib.errors import UsageError
from bertlib.normalization import LayerNormalization


class ConfigError(ValueError):
    """A BERT config that cannot be read or used; the message names the file (and the
    line). Command-line callers turn it into their one-line error
    (`bert_loading.read_bert_config`)."""


# What a config may ask for: far above any published BERT (BERT-large has hidden 1024, 24
# layers, intermediate 4096, 512 positions; multilingual vocabularies hold 250,002 entries),
# so a larger value is a typo or a hostile file, refused before anything is allocated.
SIZE_LIMITS = {
    'vocab_size': 1 << 22,
    'hidden_size': 1 << 16,
    'num_hidden_layers': 1 << 10,
    'num_attention_heads': 1 << 10,
    'intermediate_size': 1 << 18,
    'max_position_embeddings': 1 << 20,
    'type_vocab_size': 1 << 16,
}
# ... and in all: 4.3 billion parameters, 16 GiB of float32 (BERT-large has 335 million).
MAX_PARAMETERS = 1 << 32


def _is_number(value):
    """A finite int or float (JSON's NaN and Infinity and booleans are not)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _shown(value):
    """A config value for a message, cut short (a hostile one may be a huge list)."""
    text = json.dumps(value) if isinstance(value, (str, list, dict, bool)) or value is None \
        else repr(value)
    return text if len(text) <= 60 else text[:57] + '...'


class BertConfig(object):
    """Configuration for `BertModel`, as in Google's `bert_config.json`.

    `layer_norm_eps` is not in Google's files (TensorFlow BERT hard-codes 1e-12) but is in
    Hugging Face's `config.json`; both spellings of a config are accepted.
    """

    def __init__(self,
                 vocab_size,
                 hidden_size=768,
                 num_hidden_layers=12,
                 num_attention_heads=12,
                 intermediate_size=3072,
                 hidden_act='gelu',
                 hidden_dropout_prob=0.1,
                 attention_probs_dropout_prob=0.1,
                 max_position_embeddings=512,
                 type_vocab_size=16,
                 initializer_range=0.02,
                 layer_norm_eps=1e-12):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps

    @classmethod
    def from_dict(cls, json_object, source='<dict>'):
        """Builds a config from Google's or Hugging Face's keys; unknown keys are ignored."""
        names = cls.__init__.__code__.co_varnames[1:cls.__init__.__code__.co_argcount]
        kwargs = {k: json_object[k] for k in names if k in json_object}
        if 'vocab_size' not in kwargs:
            raise ConfigError('%s: BERT config has no "vocab_size"' % source)
        config = cls(**kwargs)
        config.validate(source)
        return config

    @classmethod
    def from_json_file(cls, json_file):
        try:
            data = fileio.read_bounded(json_file, 'config', 'BERT config')
        except UsageError as e:
            raise ConfigError(str(e))
        try:
            text = data.decode('utf-8')
        except UnicodeDecodeError as e:
            raise ConfigError('%s: BERT config is not UTF-8: %s' % (json_file, e))
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError('%s:%d: BERT config is not valid JSON: %s'
                             % (json_file, e.lineno, e.msg))
        except RecursionError:
            raise ConfigError('%s: BERT config is nested too deeply to be a config'
                             % json_file)
        except ValueError as e:  # an integer of more than 4,300 digits
            raise ConfigError('%s: BERT config is not valid JSON: %s' % (json_file, e))
        if not isinstance(obj, dict):
            raise ConfigError('%s: BERT config must be a JSON object' % json_file)
        return cls.from_dict(obj, source=json_file)

    def validate(self, source='<config>'):
        """ConfigError naming `source` and the field unless every field has its type and
        range: the sizes are integers (not booleans) from 1 to `SIZE_LIMITS`, the whole
        model at most `MAX_PARAMETERS`; probabilities are from 0 to below 1; the epsilon is
        positive, also in float32, where the model uses it."""
        for key, limit in SIZE_LIMITS.items():
            value = getattr(self, key)
            if type(value) is not int or not 1 <= value <= limit:
                raise ConfigError('%s: "%s" must be an integer from 1 to %d, got %s'
                                 % (source, key, limit, _shown(value)))
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError('%s: hidden_size %d is not a multiple of num_attention_heads %d'
                             % (source, self.hidden_size, self.num_attention_heads))
        count = sum(math.prod(shape) for shape in parameter_shapes(self).values())
        if count > MAX_PARAMETERS:
            raise ConfigError('%s: these sizes make a model of %d parameters, more than the '
                             '%d accepted (%d GiB of float32)'
                             % (source, count, MAX_PARAMETERS, MAX_PARAMETERS * 4 >> 30))
        act = self.hidden_act
        if not isinstance(act, str) or act not in activations.ACTIVATIONS:
            raise ConfigError('%s: hidden_act %s is not one of %s'
                             % (source, _shown(self.hidden_act),
                                ', '.join(activations.ACTIVATIONS)))
        for key in ('hidden_dropout_prob', 'attention_probs_dropout_prob'):
            value = getattr(self, key)
            if not _is_number(value) or not 0 <= value < 1:
                raise ConfigError('%s: "%s" must be a probability from 0 to below 1, got %s'
                                 % (source, key, _shown(value)))
        if not _is_number(self.initializer_range) or self.initializer_range < 0:
            raise ConfigError('%s: "initializer_range" must be a number of 0 or more, got %s'
                             % (source, _shown(self.initializer_range)))
        eps = self.layer_norm_eps
        # LayerNormalization computes in float32, where 1e-50 is 0: a division by zero.
        if not _is_number(eps) or not 0 < eps <= 1 or np.float32(eps) == 0:
            raise ConfigError('%s: "layer_norm_eps" must be a positive number of at most 1 '
                             '(and not 0 in float32), got %s' % (source, _shown(eps)))

    def to_dict(self):
        return copy.deepcopy(self.__dict__)

    def to_json_string(self):
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + '\n'


def create_initializer(initializer_range=0.02):
    """Weights start as N(0, initializer_range^2), as in Google's BERT.

    A range of None gives None: the weights are placeholders that a checkpoint will
    replace (`dense` and `embedding` below).
    """
    if initializer_range is None:
        return None
    return chainer.initializers.Normal(scale=initializer_range)


def _placeholder_weight(link, shape):
    """Gives `link` a float32 weight `W` of `shape` that takes no memory until written.

    For a model whose weights a checkpoint replaces (`checkpoints.load_model` swaps in
    the arrays it reads): Chainer's own parameters are written when made, and each gets
    a gradient array filled with NaN, which for multilingual-e5-small's 250,002-row word
    table alone is 0.77 GB written for nothing, and kept by the allocator
    (`process.keep_freed_memory`). np.zeros' pages stay the system's zero page until
    touched, and a Parameter made from an array has no gradient until a backward pass
    makes one."""
    with link.init_scope():
        link.W = chainer.Parameter(np.zeros(shape, dtype=np.float32))
    return link


def dense(in_size, out_size, initializer):
    """L.Linear(in_size, out_size); an initializer of None leaves its weight a
    placeholder (`_placeholder_weight`) and its bias zeros."""
    if initializer is None:
        return _placeholder_weight(L.Linear(None, out_size), (out_size, in_size))
    return L.Linear(in_size, out_size, initialW=initializer)


def embedding(rows, width, initializer):
    """L.EmbedID(rows, width); an initializer of None leaves its table a placeholder."""
    if initializer is None:
        link = L.EmbedID(0, width, initialW=chainer.initializers.Zero())
        return _placeholder_weight(link, (rows, width))
    return L.EmbedID(rows, width, initialW=initializer)


_BLAS = []  # threadpoolctl's controller of the loaded BLAS, made on first use


def one_blas_thread():
    """A context in which NumPy's BLAS runs on one thread (a no-op without threadpoolctl,
    which scikit-learn brings).

    For the attention's products: B x heads small matrices, one BLAS call each. With two
    threads, every one of those hundreds of calls hands work to the second thread and
    waits for it; when the machine is busy that thread is often not running, and a
    product of 0.1 s took 0.5 to 2 s (up to 10 s) on the shared 2-core machine, more than
    all the layer's dense products together. One thread does it in a steady 0.1 s. The
    dense products, one large call each, keep every thread."""
    if not _BLAS:
        try:
            from threadpoolctl import ThreadpoolController
            _BLAS.append(ThreadpoolController())
        except ImportError:
            _BLAS.append(None)
    if _BLAS[0] is None:
        return contextlib.nullcontext()
    return _BLAS[0].limit(limits=1, user_api='blas')


class SelfAttention(chainer.Chain):
    """Multi-head scaled dot-product self-attention; the `attention/` subtree."""

    def __init__(self, hidden_size, num_heads, initializer_range):
        super(SelfAttention, self).__init__()
        self.num_heads = num_heads
        self.head_size = hidden_size // num_heads
        init = create_initializer(initializer_range)
        with self.init_scope():
            self.query = dense(hidden_size, hidden_size, init)
            self.key = dense(hidden_size, hidden_size, init)
            self.value = dense(hidden_size, hidden_size, init)

    def __call__(self, hidden, attention_bias, batch, length, dropout_prob):
        """hidden: (B*T, H); attention_bias: (B, 1, 1, T), 0 for tokens and a large
        negative number for padding. Returns the context, (B*T, H)."""
        # One (H -> 3H) product instead of three: fewer passes over `hidden`.
        weight = F.concat((self.query.W, self.key.W, self.value.W), axis=0)
        bias = F.concat((self.query.b, self.key.b, self.value.b), axis=0)
        qkv = F.linear(hidden, weight, bias)
        qkv = F.reshape(qkv, (batch, length, 3, self.num_heads, self.head_size))
        qkv = F.transpose(qkv, (2, 0, 3, 1, 4))                # (3, B, heads, T, d)
        q, k, v = F.separate(qkv, axis=0)
        with one_blas_thread():
            scores = F.matmul(q, k, transb=True) * (1.0 / math.sqrt(self.head_size))
        scores = scores + F.broadcast_to(attention_bias, scores.shape)
        probs = dropout.dropout(F.softmax(scores, axis=3), dropout_prob)
        with one_blas_thread():
            context = F.matmul(probs, v)                         # (B, heads, T, d)
        context = F.transpose(context, (0, 2, 1, 3))
        return F.reshape(context, (batch * length, self.num_heads * self.head_size))


class TransformerLayer(chainer.Chain):
    """One encoder block: attention, add & norm, feed-forward, add & norm."""

    def __init__(self, config):
        super(TransformerLayer, self).__init__()
        hidden, inner = config.hidden_size, config.intermediate_size
        init = create_initializer(config.initializer_range)
        eps = config.layer_norm_eps
        self.activation = activations.ACTIVATIONS[config.hidden_act]
        self.hidden_dropout_prob = config.hidden_dropout_prob
        self.attention_dropout_prob = config.attention_probs_dropout_prob
        with self.init_scope():
            self.attention = SelfAttention(hidden, config.num_attention_heads,
                                           config.initializer_range)
            self.attention_output_dense = dense(hidden, hidden, init)
            self.attention_output_ln = LayerNormalization(hidden, eps=eps)
            self.intermediate_dense1 = dense(hidden, inner, init)
            self.intermediate_dense2 = dense(inner, hidden, init)
            self.intermediate_ln = LayerNormalization(hidden, eps=eps)

    def __call__(self, hidden, attention_bias, batch, length):
        """hidden: (B*T, H) -> (B*T, H)."""
        context = self.attention(hidden, attention_bias, batch, length,
                                 self.attention_dropout_prob)
        attended = dropout.dropout(self.attention_output_dense(context), self.hidden_dropout_prob)
        hidden = self.attention_output_ln(attended + hidden)
        inner = self.activation(self.intermediate_dense1(hidden))
        output = dropout.dropout(self.intermediate_dense2(inner), self.hidden_dropout_prob)
        return self.intermediate_ln(output + hidden)


class Transformer(chainer.Chain):
    """The stack of encoder layers, named layer_0 ... layer_{N-1} as in checkpoints."""

    def __init__(self, config):
        super(Transformer, self).__init__()
        self.layer_names = ['layer_%d' % i for i in range(config.num_hidden_layers)]
        with self.init_scope():
            for name in self.layer_names:
                setattr(self, name, TransformerLayer(config))

    def __call__(self, hidden, attention_bias, batch, length):
        for name in self.layer_names:
            hidden = getattr(self, name)(hidden, attention_bias, batch, length)
        return hidden


class BertModel(chainer.Chain):
    """BERT encoder: embeddings, transformer layers and the [CLS] pooler.

    Inputs are int32 arrays of shape (batch, length): `input_ids` (WordPiece ids),
    `input_mask` (1 for real tokens, 0 for padding) and `token_type_ids` (segment ids).
    """

    # Added to attention scores of padding; exp() of it is exactly 0 in float32.
    MASK_BIAS = -10000.0

    def __init__(self, config, random_init=True):
        """random_init=False leaves weights at zero, placeholders that take no memory,
        to be replaced by `load_pretrained` (or `checkpoints.load_model`)."""
        super(BertModel, self).__init__()
        self.config = copy.deepcopy(config)
        if not random_init:
            config = copy.copy(self.config)
            config.initializer_range = None
        init = create_initializer(config.initializer_range)
        with self.init_scope():
            self.word_embeddings = embedding(config.vocab_size, config.hidden_size, init)
            self.position_embeddings = embedding(config.max_position_embeddings,
                                                 config.hidden_size, init)
            self.token_type_embeddings = embedding(config.type_vocab_size,
                                                   config.hidden_size, init)
            self.post_embedding_ln = LayerNormalization(config.hidden_size,
                                                        eps=config.layer_norm_eps)
            self.encoder = Transformer(config)
            self.pooler = dense(config.hidden_size, config.hidden_size, init)
        self.word_embeddings_frozen = False

    def freeze_word_embeddings(self):
        """Trains everything but the word embedding table: the lookup then builds no
        gradient for it (on a 250,000-row vocabulary a dense (vocab, hidden) array per
        length piece), and `optimization.make_optimizer` keeps no Adam moments for it.
        The table stays a parameter, saved with the model, so any text still extracts.
        Call before `make_optimizer`."""
        self.word_embeddings_frozen = True

    def get_sequence_output(self, input_ids, input_mask=None, token_type_ids=None):
        """Final hidden states, (batch, length, hidden)."""
        xp = self.xp
        batch, length = input_ids.shape
        if length > self.config.max_position_embeddings:
            raise ValueError('sequence length %d exceeds max_position_embeddings %d'
                             % (length, self.config.max_position_embeddings))
        if input_mask is None:
            input_mask = xp.ones((batch, length), dtype=np.int32)
        if token_type_ids is None:
            token_type_ids = xp.zeros((batch, length), dtype=np.int32)
        positions = xp.arange(length, dtype=np.int32)

        hidden_size = self.config.hidden_size
        if self.word_embeddings_frozen:
            # The table's array, not the Parameter: no gradient flows to it.
            words = F.embed_id(input_ids, self.word_embeddings.W.array)
        else:
            words = self.word_embeddings(input_ids)
        words = F.reshape(words, (batch * length, hidden_size))
        types = F.reshape(self.token_type_embeddings(token_type_ids),
                          (batch * length, hidden_size))
        position = F.tile(self.position_embeddings(positions), (batch, 1))
        hidden = self.post_embedding_ln(words + types + position)
        hidden = dropout.dropout(hidden, self.config.hidden_dropout_prob)

        bias = (1 - input_mask.astype(np.float32)) * np.float32(self.MASK_BIAS)
        attention_bias = bias.reshape(batch, 1, 1, length)
        hidden = self.encoder(hidden, attention_bias, batch, length)
        return F.reshape(hidden, (batch, length, hidden_size))

    def get_pooled_output(self, input_ids, input_mask=None, token_type_ids=None):
        """tanh(W h_[CLS] + b), the pre-trained sentence vector; (batch, hidden)."""
        sequence = self.get_sequence_output(input_ids, input_mask, token_type_ids)
        return self.pool(sequence, input_mask, 'pooled')

    def pool(self, sequence, input_mask, pooling):
        """Sentence vectors (batch, hidden) from `sequence` (batch, length, hidden).

        pooling: 'pooled' (the [CLS] pooler, the original BERT-DML's feature), 'cls' (the
        raw [CLS] hidden state) or 'mean' (average over real tokens, as sentence-transformers).
        """
        if pooling == 'pooled':
            return F.tanh(self.pooler(sequence[:, 0]))
        if pooling == 'cls':
            return sequence[:, 0]
        if pooling == 'mean':
            if input_mask is None:
                return F.mean(sequence, axis=1)
            mask = input_mask.astype(sequence.dtype)
            total = F.sum(sequence * F.broadcast_to(mask[:, :, None], sequence.shape), axis=1)
            count = self.xp.maximum(mask.sum(axis=1, keepdims=True), 1)
            return total / F.broadcast_to(count, total.shape)
        raise ValueError('unknown pooling %r (choose pooled, cls or mean)' % pooling)

    def encode(self, input_ids, input_mask, token_type_ids=None, pooling='pooled'):
        """Sentence vectors (batch, hidden) with the chosen pooling."""
        sequence = self.get_sequence_output(input_ids, input_mask, token_type_ids)
        return self.pool(sequence, input_mask, pooling)


POOLINGS = ('pooled', 'cls', 'mean')


def parameter_shapes(config):
    """{name: shape} of every parameter of a `BertModel(config)`, named as its
    `namedparams()` without the leading '/', computed without building the model (see the
    tree in this module's docstring)."""
    hidden, inner = config.hidden_size, config.intermediate_size
    shapes = {
        'word_embeddings/W': (config.vocab_size, hidden),
        'position_embeddings/W': (config.max_position_embeddings, hidden),
        'token_type_embeddings/W': (config.type_vocab_size, hidden),
        'post_embedding_ln/gamma': (hidden,),
        'post_embedding_ln/beta': (hidden,),
        'pooler/W': (hidden, hidden),
        'pooler/b': (hidden,),
    }
    layer = {}
    for name in ('attention/query', 'attention/key', 'attention/value',
                 'attention_output_dense'):
        layer[name + '/W'], layer[name + '/b'] = (hidden, hidden), (hidden,)
    layer['intermediate_dense1/W'], layer['intermediate_dense1/b'] = (inner, hidden), (inner,)
    layer['intermediate_dense2/W'], layer['intermediate_dense2/b'] = (hidden, inner), (hidden,)
    for name in ('attention_output_ln', 'intermediate_ln'):
        layer[name + '/gamma'], layer[name + '/beta'] = (hidden,), (hidden,)
    for i in range(config.num_hidden_layers):
        for name, shape in layer.items():
            shapes['encoder/layer_%d/%s' % (i, name)] = shape
    return shapes


def check_pretrained(config, npz_path, config_path):
    """UsageError unless the npz checkpoint holds exactly the `bert/...` arrays of a
    `BertModel(config)`, in their shapes: read from the headers alone, before the model
    is built, so a config asking for more than the checkpoint holds allocates nothing."""
    checkpoints.check_fits(npz_path, parameter_shapes(config), prefix='bert/',
                           what='the BERT that %s describes' % config_path)


def save_pretrained(bert, npz_path):
    """Writes `bert` as an `arrays_bert_model.ckpt.npz` (arrays under `bert/`)."""
    checkpoints.save_model(npz_path, bert, prefix='bert/')


def load_pretrained(bert, npz_path, read_only=False):
    """Puts the `bert/...` arrays of a pre-trained npz checkpoint into `bert`, strictly.

    Arrays outside `bert/` (the pre-training heads `cls/...` that Google's checkpoints
    carry) are ignored. A missing, unexpected or mis-shaped array is a `UsageError` that
    names it (from `checkpoints`). read_only=True memory-maps what it can, for a model
    that is never trained (`checkpoints.load_model`).
    """
    checkpoints.load_model(npz_path, bert, prefix='bert/', read_only=read_only)
