"""What comes after the BERT of a sentence-transformers folder: read from its files by
`python -m bertlib.convert`, kept in the converted checkpoint, applied by
extruct_bert_embed.py.

A sentence-transformers folder lists its modules in `modules.json`. Four kinds are
reproduced exactly, all others refused by name:

    Transformer   the BERT (the folder itself, or the path it names): converted as a
                  Hugging Face folder
    Pooling       mean over the tokens under the attention mask, or the first token's
                  state (cls); `include_prompt` must be true (ours pools every token)
    Dense         y = activation(x W^T + b), activation Tanh or Identity
    Normalize     unit rows

and, from config_sentence_transformers.json, the default prompt (put before every text,
as --text_prefix), from sentence_bert_config.json the truncation length.

In the converted checkpoint the Dense layers are arrays `sentence/dense_{i}/W` and
`.../b` beside the `bert/...` ones (which the BERT loaders alone read), and the steps and
the prompt are the JSON metadata under `checkpoints.META_KEY`:

    {"sentence_pipeline": {"steps": [["pooling", "mean"], ["dense", "tanh"],
                                     ["normalize", null]],
                           "text_prefix": "query: ", "max_seq_length": 256,
                           "source": "<folder>"}}

Every file is bounded in size, every path of modules.json must lie inside the folder, and
only safetensors weights are read (no pickle).
"""

import json
import logging
import os

import numpy as np

from bertlib import checkpoints, fileio
from bertlib.errors import UsageError

logger = logging.getLogger(__name__)

MODULES_NAME = 'modules.json'
SETTINGS_NAME = 'config_sentence_transformers.json'
SBERT_CONFIG_NAME = 'sentence_bert_config.json'
META_FIELD = 'sentence_pipeline'
# The module kinds reproduced, by the last part of their type name (sentence-transformers
# 2.x/3.x: sentence_transformers.models.Dense; later: ...modules.dense.Dense).
KINDS = ('Transformer', 'Pooling', 'Dense', 'Normalize')
ACTIVATIONS = {'torch.nn.modules.activation.Tanh': 'tanh',
               'torch.nn.modules.linear.Identity': 'identity'}


def is_folder(path):
    """True when `path` is a folder with a modules.json at its root."""
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, MODULES_NAME))


def _read_json(path, required=True):
    if not os.path.exists(path):
        if required:
            raise UsageError('%s: not found' % path)
        return None
    # The one bounded reader of the project: a regular file of at most 1 MB, JSON that
    # nests too deeply an error line, not a RecursionError.
    return fileio.read_json(path, 'config', 'sentence-transformers configuration file')


def _inside(folder, relative, where):
    """The path `relative` (from modules.json) under `folder`; one that leaves it (an
    absolute path, '..', a symlink out) is refused."""
    if not isinstance(relative, str) or os.path.isabs(relative):
        raise UsageError('%s: module path %r is not a path inside the folder'
                         % (where, relative))
    root = os.path.realpath(folder)
    target = os.path.realpath(os.path.join(root, relative))
    if os.path.commonpath([root, target]) != root:
        raise UsageError('%s: module path %r leads outside %s' % (where, relative, folder))
    return target


class Pipeline(object):
    """The modules of a sentence-transformers folder after its Transformer."""

    def __init__(self, transformer, steps, dense, text_prefix, max_seq_length, source):
        self.transformer = transformer        # the Hugging Face folder of the BERT
        self.steps = steps                    # [[kind, value]]: pooling, dense, normalize
        self.dense = dense                    # [(W (out, in), b (out,))] float32
        self.text_prefix = text_prefix
        self.max_seq_length = max_seq_length  # None when the folder does not say
        self.source = source

    def meta(self):
        return {META_FIELD: {'steps': self.steps, 'text_prefix': self.text_prefix,
                             'max_seq_length': self.max_seq_length, 'source': self.source}}

    def arrays(self):
        """{npz key: array} of the Dense layers and the metadata, for the checkpoint."""
        arrays = {}
        for i, (weight, bias) in enumerate(self.dense):
            arrays['sentence/dense_%d/W' % i] = weight
            arrays['sentence/dense_%d/b' % i] = bias
        arrays[checkpoints.META_KEY] = np.array(json.dumps(self.meta(), sort_keys=True))
        return arrays

    def describe(self):
        parts = []
        for kind, value in self.steps:
            parts.append('%s %s' % (kind, value) if value else kind)
        return '%s; prompt %r' % (' -> '.join(parts), self.text_prefix)


def _pooling_mode(config, path):
    """'mean' or 'cls' of a Pooling module's config (either generation's keys)."""
    if 'pooling_mode' in config:
        modes = [config['pooling_mode']]
    else:
        modes = [key[len('pooling_mode_'):] for key, on in sorted(config.items())
                 if key.startswith('pooling_mode_') and on is True]
    names = {'mean_tokens': 'mean', 'mean': 'mean', 'cls_token': 'cls', 'cls': 'cls'}
    if len(modes) != 1 or modes[0] not in names:
        raise UsageError('%s: pooling %s is not reproduced (mean or cls only)'
                         % (path, ', '.join(map(str, modes)) or 'none'))
    if config.get('include_prompt', True) is not True:
        raise UsageError('%s: include_prompt false (the prompt left out of the pooling) '
                         'is not reproduced' % path)
    return names[modes[0]]


def _dense(folder, read_safetensors):
    """(W, b, activation) of a Dense module's folder."""
    config_path = os.path.join(folder, 'config.json')
    config = _read_json(config_path)
    if not isinstance(config, dict):
        raise UsageError('%s: not a Dense configuration' % config_path)
    activation = ACTIVATIONS.get(config.get('activation_function'))
    if activation is None:
        raise UsageError('%s: activation %r is not reproduced (%s only)'
                         % (config_path, config.get('activation_function'),
                            ', '.join(sorted(ACTIVATIONS))))
    weights = os.path.join(folder, 'model.safetensors')
    if not os.path.isfile(weights):
        raise UsageError('%s: no model.safetensors (PyTorch .bin weights are not read)'
                         % folder)
    try:
        tensors = read_safetensors(weights)
    except Exception as e:  # SafetensorError, OSError: a corrupt file
        raise UsageError('%s: cannot read safetensors file: %s' % (weights, e))
    try:
        shape = (int(config['out_features']), int(config['in_features']))
    except (KeyError, TypeError, ValueError):
        raise UsageError('%s: in_features and out_features must be integers' % config_path)
    weight = tensors.get('linear.weight')
    if weight is None or tuple(weight.shape) != shape:
        raise UsageError('%s: linear.weight must be of shape %s' % (weights, shape))
    bias = tensors.get('linear.bias')
    if config.get('bias', True):
        if bias is None or tuple(bias.shape) != shape[:1]:
            raise UsageError('%s: linear.bias must be of shape %s' % (weights, shape[:1]))
    else:
        bias = np.zeros(shape[0], np.float32)
    weight, bias = np.asarray(weight, np.float32), np.asarray(bias, np.float32)
    if not (np.isfinite(weight).all() and np.isfinite(bias).all()):
        raise UsageError('%s: holds NaN or infinite values' % weights)
    return np.ascontiguousarray(weight), np.ascontiguousarray(bias), activation


def read(folder, read_safetensors):
    """The `Pipeline` of the sentence-transformers folder `folder`; refuses, before
    anything is written, a module it cannot reproduce. `read_safetensors`: path ->
    {name: array} (convert's reader)."""
    where = os.path.join(folder, MODULES_NAME)
    modules = _read_json(where)
    if not isinstance(modules, list) or not modules or not all(
            isinstance(m, dict) for m in modules):
        raise UsageError('%s: not a list of modules' % where)
    modules = sorted(modules, key=lambda m: m.get('idx', 0) if isinstance(
        m.get('idx', 0), int) else 0)
    kinds = []
    for module in modules:
        kind = module.get('type')
        name = kind.rsplit('.', 1)[-1] if isinstance(kind, str) else None
        if name not in KINDS or not kind.startswith('sentence_transformers.'):
            raise UsageError('%s: module %r is not reproduced (only %s)'
                             % (where, kind, ', '.join(KINDS)))
        kinds.append(name)
    if kinds[0] != 'Transformer' or kinds.count('Transformer') != 1 or \
            len(kinds) < 2 or kinds[1] != 'Pooling' or kinds.count('Pooling') != 1:
        raise UsageError('%s: modules %s: a Transformer then a Pooling, then Dense and '
                         'Normalize modules, are reproduced' % (where, ' -> '.join(kinds)))
    paths = [_inside(folder, m.get('path', ''), where) for m in modules]
    transformer = paths[0]
    steps, dense = [], []
    for kind, path in zip(kinds[1:], paths[1:]):
        if kind == 'Pooling':
            config_path = os.path.join(path, 'config.json')
            config = _read_json(config_path)
            if not isinstance(config, dict):
                raise UsageError('%s: not a Pooling configuration' % config_path)
            steps.append(['pooling', _pooling_mode(config, config_path)])
        elif kind == 'Dense':
            weight, bias, activation = _dense(path, read_safetensors)
            dense.append((weight, bias))
            steps.append(['dense', activation])
        else:
            steps.append(['normalize', None])
    settings = _read_json(os.path.join(folder, SETTINGS_NAME), required=False) or {}
    prefix = ''
    if isinstance(settings, dict) and settings.get('default_prompt_name'):
        prompts = settings.get('prompts') or {}
        prefix = prompts.get(settings['default_prompt_name']) if isinstance(prompts, dict) \
            else None
        if not isinstance(prefix, str):
            raise UsageError('%s: default_prompt_name %r names no prompt'
                             % (os.path.join(folder, SETTINGS_NAME),
                                settings['default_prompt_name']))
    sbert = _read_json(os.path.join(transformer, SBERT_CONFIG_NAME), required=False) or {}
    if not isinstance(sbert, dict):
        sbert = {}
    if sbert.get('do_lower_case') is True:
        raise UsageError('%s: do_lower_case true (sentence-transformers lower-cases the '
                         'text before its tokenizer) is not reproduced'
                         % os.path.join(transformer, SBERT_CONFIG_NAME))
    length = sbert.get('max_seq_length')
    if length is None:  # sentence-transformers 5 and later keep it with the tokenizer
        tokenizer = _read_json(os.path.join(transformer, 'tokenizer_config.json'),
                               required=False) or {}
        length = tokenizer.get('model_max_length') if isinstance(tokenizer, dict) else None
    length = length if isinstance(length, int) and not isinstance(length, bool) \
        and 2 <= length <= 1 << 16 else None
    return Pipeline(transformer, steps, dense, prefix, length, os.path.abspath(folder))


def wordpiece_vocab(tokenizer_files, vocab_size, where):
    """`tokenizer_files` ([(name, bytes)], convert's) with a WordPiece tokenizer.json
    (sentence-transformers 5 and later save no vocab.txt) replaced by the vocab.txt of
    its vocabulary; other files as they are."""
    if [name for name, _ in tokenizer_files] != ['tokenizer.json']:
        return tokenizer_files
    try:
        model = fileio.parse_json(tokenizer_files[0][1], 'tokenizer.json')['model']
    except (UsageError, KeyError, TypeError):
        return tokenizer_files  # convert has checked the file already
    if not isinstance(model, dict) or model.get('type') != 'WordPiece':
        return tokenizer_files
    vocab = model.get('vocab')
    tokens = sorted(vocab.items(), key=lambda item: item[1]) if isinstance(vocab, dict) else []
    if [i for _, i in tokens] != list(range(vocab_size)) or not all(
            isinstance(t, str) and t == t.strip() and t and '\n' not in t for t, _ in tokens):
        raise UsageError('%s: its WordPiece vocabulary is not %d tokens of ids 0 to %d, one '
                         'a line' % (where, vocab_size, vocab_size - 1))
    logger.info('%s: a WordPiece tokenizer.json: written as vocab.txt', where)
    return [('vocab.txt', ''.join(t + '\n' for t, _ in tokens).encode('utf-8'))]


# ---------------------------------------------------------------------------------------
# In the converted checkpoint


def load(npz_path):
    """The recorded pipeline of a converted checkpoint as (steps, [(W, b)], text_prefix,
    max_seq_length), or None for a checkpoint without one."""
    meta = checkpoints.read_meta(npz_path)
    recorded = meta.get(META_FIELD)
    if recorded is None:
        return None
    try:
        steps = [(str(kind), value) for kind, value in recorded['steps']]
        prefix = recorded.get('text_prefix') or ''
        length = recorded.get('max_seq_length')
        if not isinstance(prefix, str) or steps[0][0] != 'pooling':
            raise ValueError('bad fields')
    except (KeyError, TypeError, ValueError, IndexError):
        raise UsageError('%s: metadata %s is not a pipeline of this program'
                         % (npz_path, META_FIELD))
    count = sum(1 for kind, _ in steps if kind == 'dense')
    names = []
    for i in range(count):
        names += ['sentence/dense_%d/W' % i, 'sentence/dense_%d/b' % i]
    with checkpoints.NpzReader(npz_path) as archive:
        missing = [n for n in names if n not in archive.files]
        if missing:
            raise UsageError('%s: the pipeline needs %s' % (npz_path, ', '.join(missing)))
        arrays = [archive.read(n, numeric=True, dtype=np.float32) for n in names]
    dense = list(zip(arrays[0::2], arrays[1::2]))
    for kind, value in steps:
        if kind not in ('pooling', 'dense', 'normalize') or (
                kind == 'dense' and value not in ('tanh', 'identity')):
            raise UsageError('%s: pipeline step %s %s is not one of this program'
                             % (npz_path, kind, value))
    return steps, dense, prefix, length


def encoder(bert, steps, dense):
    """(input_ids, input_mask) -> (B, D) features: the BERT then the recorded steps."""
    import chainer.functions as F
    pooling = steps[0][1]

    def encode(input_ids, input_mask):
        x = bert.encode(input_ids, input_mask, pooling=pooling)
        layer = 0
        for kind, value in steps[1:]:
            if kind == 'dense':
                weight, bias = dense[layer]
                layer += 1
                x = F.linear(x, bert.xp.asarray(weight), bert.xp.asarray(bias))
                if value == 'tanh':
                    x = F.tanh(x)
            else:
                x = F.normalize(x, eps=1e-12, axis=1)
        return x
    return encode
