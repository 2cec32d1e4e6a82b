"""Writes a model of this project as a folder other tools load: sentence-transformers'
for a DML model or the pre-trained BERT, Hugging Face's `BertForSequenceClassification`
for a classifier.

    python -m bertlib.export --bert_dir BERT/all-MiniLM-L6-v2 \\
        [--model M --label L] --output DIR [--pooling P] [--text_prefix S] [--force]

A sentence-transformers folder computes what our extractors write:

    modules.json                  the pipeline below, in order
    config.json, model.safetensors  the BERT (Hugging Face BertModel names, float32)
    vocab.txt + tokenizer.json    WordPiece, or the SentencePiece tokenizer.json
    tokenizer_config.json, special_tokens_map.json, sentence_bert_config.json
    1_Pooling/                    mean over the tokens, or the [CLS] state
    2_Dense/ ...                  pooled: BERT's pooler, tanh; head linear: the head
    k_Normalize, k+1_Dense, k+2_Normalize
                                  a stored centre: unit rows, minus the centre (a Dense of
                                  identity weights and bias -centre), unit rows again
    config_sentence_transformers.json  the text prefix as the default prompt
    README.md                     the model card

The folders use the module names of sentence-transformers 2.x and 3.x
(`sentence_transformers.models.*`), which later versions still load.

The tokenizer.json of a WordPiece model is built with `tokenizers` to cut text exactly
as `bertlib.tokenization` does (Google's algorithm): the BERT normaliser without its
accent stripping, which drops every combining mark (Mn, Mc, Me) where Google drops Mn
only, then NFD and a removal of Mn when lower-casing; a special token spelled in the
text ("[SEP]") is cut as text, as ours does (`split_special_tokens`, and no added tokens
in the file); [CLS] and [SEP] put around by the post-processor, and the model's
`--max_seq_length` as the truncation length.

The whole folder is written into a temporary folder beside --output and renamed into
place: an interrupted export leaves nothing half-written. No pickle is read or written
(labels.bin is read with `checkpoints.load_labels`' data-only unpickler).
"""

import argparse
import json
import logging
import os
import shutil
import tempfile

import numpy as np

from bertlib import (bert_loading, checkpoints, convert, flags, modeling, process,
                     sentencepiece_tokenization)
from bertlib import tokenization, training
from bertlib.errors import UsageError

logger = logging.getLogger(__name__)

# What sentence-transformers 2.x/3.x write in modules.json; later versions load them.
TRANSFORMER = 'sentence_transformers.models.Transformer'
POOLING = 'sentence_transformers.models.Pooling'
DENSE = 'sentence_transformers.models.Dense'
NORMALIZE = 'sentence_transformers.models.Normalize'
TANH = 'torch.nn.modules.activation.Tanh'
IDENTITY = 'torch.nn.modules.linear.Identity'
PROMPT_NAME = 'default'
# A capital sigma after a cased letter and before none (case-ignorable ones skipped):
# Unicode's Final_Sigma condition, as Python's str.lower() applies it.
_FINAL_SIGMA = r'(?<=\p{Cased})\x{03A3}(?!\p{Case_Ignorable}*\p{Cased})'
# What Google's _clean_text removes.
_DROPPED = r'(?:(?![\t\n\r])\p{C}|\x{FFFD})'
# What Google's BasicTokenizer splits off as punctuation: Unicode's P* and every ASCII
# character that is not a letter, a digit or a space.
_PUNCTUATION = r'[\p{P}\x{21}-\x{2F}\x{3A}-\x{40}\x{5B}-\x{60}\x{7B}-\x{7E}]'
# The CJK ideographs Google puts spaces around (`tokenization._is_chinese_char`).
_CJK = (r'\x{4E00}-\x{9FFF}\x{3400}-\x{4DBF}\x{20000}-\x{2A6DF}\x{2A700}-\x{2B73F}'
        r'\x{2B740}-\x{2B81F}\x{2B820}-\x{2CEAF}\x{F900}-\x{FAFF}\x{2F800}-\x{2FA1F}')
# The BertConfig keys that Hugging Face's config.json spells the same.
_HF_CONFIG_KEYS = ('vocab_size', 'hidden_size', 'num_hidden_layers', 'num_attention_heads',
                   'intermediate_size', 'hidden_act', 'hidden_dropout_prob',
                   'attention_probs_dropout_prob', 'max_position_embeddings',
                   'type_vocab_size', 'initializer_range', 'layer_norm_eps')


# ---------------------------------------------------------------------------------------
# The parts of a folder


class Dense(object):
    """One Dense module: y = activation(x W^T + b), W (out, in) float32, b (out,)."""

    def __init__(self, weight, bias, activation, why):
        self.weight = np.ascontiguousarray(weight, dtype=np.float32)
        self.bias = np.ascontiguousarray(bias, dtype=np.float32)
        self.activation = activation  # TANH or IDENTITY
        self.why = why                # for the model card


def sentence_pipeline(arrays, pooling, head, centre):
    """The modules after the Transformer, as [('pooling', mode) | ('dense', Dense) |
    ('normalize', None)], computing `dml.DMLModel.features` (or `BertModel.encode` with
    head None): `arrays` holds the model file's 'bert/pooler/*' and 'output/*'."""
    steps = [('pooling', 'mean' if pooling == 'mean' else 'cls')]
    if pooling == 'pooled':
        steps.append(('dense', Dense(arrays['bert/pooler/W'], arrays['bert/pooler/b'], TANH,
                                     "BERT's pooler: tanh(W h_[CLS] + b)")))
    if head == 'linear':
        steps.append(('dense', Dense(arrays['output/W'], arrays['output/b'], IDENTITY,
                                     'the linear head trained by metric learning')))
    if centre is not None:
        dim = centre.shape[0]
        steps.append(('normalize', None))
        steps.append(('dense', Dense(np.eye(dim, dtype=np.float32), -centre, IDENTITY,
                                     'minus the stored centre (identity weights)')))
        steps.append(('normalize', None))
    return steps


def hf_config(config, architecture, pad_token_id, extra=None):
    """The config.json of a Hugging Face BERT of `config` (a `modeling.BertConfig`)."""
    values = {key: getattr(config, key) for key in _HF_CONFIG_KEYS}
    values.update({'architectures': [architecture], 'model_type': 'bert',
                   'position_embedding_type': 'absolute', 'pad_token_id': pad_token_id,
                   'torch_dtype': 'float32'})
    values.update(extra or {})
    return values


def hf_tensors(arrays, config, prefix=''):
    """{Hugging Face name: array} of the BERT in `arrays` (keys of `convert.TABLE`'s
    first column), names prefixed with `prefix` ('bert.' inside a task model)."""
    tensors = {}
    for entry in convert.expected_entries(config, 'hf'):
        tensors[prefix + entry.source] = np.ascontiguousarray(arrays[entry.target],
                                                              dtype=np.float32)
    return tensors


# ---------------------------------------------------------------------------------------
# Tokenizers


def wordpiece_tokenizer_json(vocab, do_lower_case, split_cjk, max_seq_length,
                             join_ellipsis=False):
    """The tokenizer.json text (`tokenizers`) that cuts as `tokenization.FullTokenizer`
    with these settings, [CLS] and [SEP] put around and truncation at max_seq_length."""
    tokenizers = sentencepiece_tokenization._import_tokenizers()
    from tokenizers import decoders, normalizers, pre_tokenizers, processors
    model = tokenizers.models.WordPiece(vocab=dict(vocab), unk_token='[UNK]',
                                        max_input_chars_per_word=100,
                                        continuing_subword_prefix='##')
    tokenizer = tokenizers.Tokenizer(model)
    steps = []
    if join_ellipsis:
        steps.append(normalizers.Replace('. . .', '\u2026'))
    # Google drops every character of category C (unassigned and private-use ones too)
    # but tab, newline and carriage return, and U+FFFD; the BERT normaliser keeps some.
    steps.append(normalizers.Replace(tokenizers.Regex(_DROPPED), ''))
    if do_lower_case:
        # Python's str.lower() spells a word-final capital sigma as final sigma; the
        # normaliser lower-cases character by character.
        steps.append(normalizers.Replace(tokenizers.Regex(_FINAL_SIGMA), '\u03c2'))
    # Google strips accents only when lower-casing, and only the Mn marks, after NFD.
    steps.append(normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=False,
                                            strip_accents=False, lowercase=do_lower_case))
    if do_lower_case:
        steps += [normalizers.NFD(), normalizers.Replace(tokenizers.Regex(r'\p{Mn}'), '')]
    tokenizer.normalizer = normalizers.Sequence(steps)
    # BertPreTokenizer's punctuation table is of an older Unicode than Python's: the
    # split on punctuation is spelled out, with Google's ASCII set.
    # Its CJK ranges miss U+2B820-U+2B91F: each CJK ideograph is split off here too.
    isolated = _PUNCTUATION[:-1] + (_CJK if split_cjk else '') + ']'
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Split(tokenizers.Regex(isolated), behavior='isolated')])
    cls, sep = vocab['[CLS]'], vocab['[SEP]']
    tokenizer.post_processor = processors.TemplateProcessing(
        single='[CLS] $A [SEP]', pair='[CLS] $A [SEP] $B:1 [SEP]:1',
        special_tokens=[('[CLS]', cls), ('[SEP]', sep)])
    tokenizer.decoder = decoders.WordPiece(prefix='##')
    tokenizer.enable_truncation(max_seq_length)
    return tokenizer.to_str(pretty=True)


def sentencepiece_tokenizer_json(path, max_seq_length, join_ellipsis=False):
    """The model's tokenizer.json with <s> and </s> put around (ours frames the pieces
    itself) and truncation at max_seq_length; its segmentation is unchanged."""
    tokenizer = sentencepiece_tokenization._read_tokenizer_json(path)
    from tokenizers import normalizers, processors
    bos = tokenizer.token_to_id(sentencepiece_tokenization.BOS)
    eos = tokenizer.token_to_id(sentencepiece_tokenization.EOS)
    if join_ellipsis:
        steps = [normalizers.Replace('. . .', '\u2026')]
        if tokenizer.normalizer is not None:
            steps.append(tokenizer.normalizer)
        tokenizer.normalizer = normalizers.Sequence(steps)
    tokenizer.post_processor = processors.TemplateProcessing(
        single='<s> $A </s>', pair='<s> $A </s> </s> $B </s>',
        special_tokens=[('<s>', bos), ('</s>', eos)])
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_seq_length)
    return tokenizer.to_str(pretty=True)


class TokenizerFiles(object):
    """The tokenizer files of an exported folder and the facts the configs need."""

    def __init__(self, files, special, pad_id, lower_case):
        self.files = files        # [(name, text)]
        self.special = special    # tokenizer_config's special tokens
        self.pad_id = pad_id
        self.lower_case = lower_case  # for the card: True, False or None (SentencePiece)


def tokenizer_files(tokenizer, max_seq_length, join_ellipsis):
    """`TokenizerFiles` of a loaded `bert_loading.load_tokenizer` tokenizer."""
    if isinstance(tokenizer, sentencepiece_tokenization.SentencePieceTokenizer):
        text = sentencepiece_tokenizer_json(tokenizer.vocab_file, max_seq_length,
                                            join_ellipsis)
        special = {'pad_token': '<pad>'}
        return TokenizerFiles([('tokenizer.json', text)], special, tokenizer.pad_id, None)
    vocab = tokenizer.vocab
    for token in ('[CLS]', '[SEP]'):
        if token not in vocab:
            raise UsageError('%s: the vocabulary has no %s entry' % (tokenizer.vocab_file,
                                                                    token))
    basic = tokenizer.basic_tokenizer
    text = wordpiece_tokenizer_json(vocab, basic.do_lower_case, basic.tokenize_chinese_chars,
                                    max_seq_length, join_ellipsis)
    # vocab.txt in id order, one token a line, as Hugging Face writes it.
    ordered = sorted(vocab.items(), key=lambda item: item[1])
    vocab_text = ''.join(token + '\n' for token, _ in ordered)
    special = {'pad_token': _pad_token(vocab, basic.do_lower_case)}
    return TokenizerFiles([('tokenizer.json', text), ('vocab.txt', vocab_text)], special,
                          vocab[special['pad_token']], basic.do_lower_case)


def _pad_token(vocab, lower_case):
    """The padding token named to transformers, the one special token it is told of.

    transformers matches the special tokens it is told of in the raw text, and with
    split_special_tokens cuts a match as text but without normalising it: '[PAD]' in the
    text of an uncased model would give 'PAD' where ours gives 'pad'. [CLS] and [SEP]
    are put in by the post-processor and need no name; the padding token is one whose
    spelling the normalisation leaves as it is ([unused0] in Google's vocabularies), so
    that its match is cut as ours cuts it. Padding is masked: its id does not matter."""
    if not lower_case:
        return '[PAD]'
    for token in ('[unused0]', '[pad]'):
        if token in vocab:
            return token
    return '[PAD]'  # a literal [PAD] in the text is then cut as 'PAD'


def tokenizer_config(files, max_seq_length):
    """tokenizer_config.json: the generic fast tokenizer (it reads tokenizer.json as it
    is; BertTokenizer would rebuild Hugging Face's own normaliser), the padding token
    alone (`_pad_token`), and special tokens cut as text."""
    config = {'tokenizer_class': 'PreTrainedTokenizerFast', 'model_max_length': max_seq_length,
              'model_input_names': ['input_ids', 'token_type_ids', 'attention_mask'],
              'split_special_tokens': True, 'clean_up_tokenization_spaces': False,
              'padding_side': 'right', 'truncation_side': 'right'}
    config.update(files.special)
    return config


# ---------------------------------------------------------------------------------------
# Reading the model


class Source(object):
    """What one export writes: the BERT's arrays and config, and what comes after it."""

    def __init__(self, kind, config, arrays, meta, labels=None):
        self.kind = kind      # 'dml', 'classifier' or 'pretrained'
        self.config = config  # modeling.BertConfig
        self.arrays = arrays  # {'bert/...': array, 'output/W': ..., 'output/b': ...}
        self.meta = meta      # the model's metadata ({} for the pre-trained BERT)
        self.labels = labels  # {label: id} of a fine-tuned model
        self.dropped = []     # array names left out (a loss's own parameters)


def _read_arrays(path, names):
    with checkpoints.NpzReader(path) as archive:
        return {name: archive.read(name, numeric=True, dtype=np.float32) for name in names}


def read_source(args, config):
    """A `Source` from the flags: the pre-trained checkpoint alone, or --model with
    --label, checked against the BERT given and against each other."""
    bert_shapes = {'bert/' + name: shape
                   for name, shape in modeling.parameter_shapes(config).items()}
    if not args.model:
        if args.label:
            raise UsageError('--label %s: give it with the --model it belongs to'
                             % args.label)
        arrays = _read_arrays(args.init_checkpoint, sorted(bert_shapes))
        return Source('pretrained', config, arrays, {})
    if not args.label:
        raise UsageError('--model %s: give its labels.bin with --label' % args.model)
    if args.pooling is not None:
        raise UsageError('--pooling %s: a fine-tuned model is exported with the pooling it '
                         'was trained with; leave the flag out' % args.pooling)
    meta = checkpoints.read_meta(args.model)
    kind = meta.get('kind', 'dml')
    if kind not in ('dml', 'classifier'):
        raise UsageError('%s: model metadata kind is %r, not dml or classifier'
                         % (args.model, kind))
    labels = checkpoints.load_model_labels(args.model, args.label, kind)
    if kind == 'dml':
        from bertlib import dml
        meta = dml.read_meta(args.model)
    shapes = dict(bert_shapes)
    output = checkpoints.array_shape(args.model, 'output/W')
    if kind == 'classifier' or meta['head'] == 'linear':
        if output is None or len(output) != 2:
            raise UsageError('%s has no output layer (output/W): not a %s model'
                             % (args.model, 'train_classifier.py' if kind == 'classifier'
                                else 'train_dml.py'))
        shapes['output/W'] = (output[0], config.hidden_size)
        shapes['output/b'] = (output[0],)
    # A loss with parameters of its own (ArcFace's class proxies, supcon_ce's classifier)
    # is not part of the embedding: dropped, and the card says so.
    with checkpoints.NpzReader(args.model) as archive:
        dropped = sorted(n for n in archive.files if n.startswith('loss/'))
        checkpoints._check_fits(archive, args.model, shapes, '', ('loss/',),
                                'the BERT that %s describes' % args.bert_config_file)
    source = Source(kind, config, _read_arrays(args.model, sorted(shapes)), meta, labels)
    source.dropped = dropped
    if dropped:
        logger.info('%s: %d arrays of the %s loss left out (%s): they are not part of the '
                    'embedding', args.model, len(dropped), meta.get('loss', '?'),
                    ', '.join(dropped))
    return source


# ---------------------------------------------------------------------------------------
# Writing


def _write_json(folder, name, value):
    with open(os.path.join(folder, name), 'w', encoding='utf-8') as f:
        json.dump(value, f, indent=2, ensure_ascii=False, sort_keys=True)
        f.write('\n')


def _write_text(folder, name, text):
    with open(os.path.join(folder, name), 'w', encoding='utf-8', newline='\n') as f:
        f.write(text)


def _write_safetensors(folder, name, tensors):
    from safetensors.numpy import save_file
    save_file(tensors, os.path.join(folder, name), metadata={'format': 'pt'})


def write_sentence_transformers(folder, source, tokens, steps, prefix, max_seq_length):
    """Writes the sentence-transformers folder of `source` into the existing `folder`."""
    config = source.config
    _write_json(folder, 'config.json', hf_config(config, 'BertModel', tokens.pad_id))
    _write_safetensors(folder, 'model.safetensors', hf_tensors(source.arrays, config))
    for name, text in tokens.files:
        _write_text(folder, name, text)
    _write_json(folder, 'tokenizer_config.json', tokenizer_config(tokens, max_seq_length))
    _write_json(folder, 'special_tokens_map.json', tokens.special)
    # do_lower_case false: the tokenizer lower-cases itself (sentence-transformers would
    # lower-case in Python, with Python's rules, before it).
    _write_json(folder, 'sentence_bert_config.json',
                {'max_seq_length': max_seq_length, 'do_lower_case': False})
    modules = [{'idx': 0, 'name': '0', 'path': '', 'type': TRANSFORMER}]
    width = config.hidden_size
    for kind, value in steps:
        idx = len(modules)
        if kind == 'pooling':
            path = '%d_Pooling' % idx
            os.mkdir(os.path.join(folder, path))
            _write_json(os.path.join(folder, path), 'config.json', {
                'word_embedding_dimension': width,
                'pooling_mode_cls_token': value == 'cls',
                'pooling_mode_mean_tokens': value == 'mean',
                'pooling_mode_max_tokens': False,
                'pooling_mode_mean_sqrt_len_tokens': False,
                'pooling_mode_weightedmean_tokens': False,
                'pooling_mode_lasttoken': False,
                'include_prompt': True})
            module = POOLING
        elif kind == 'dense':
            path = '%d_Dense' % idx
            os.mkdir(os.path.join(folder, path))
            out, width_in = value.weight.shape
            _write_json(os.path.join(folder, path), 'config.json', {
                'in_features': int(width_in), 'out_features': int(out), 'bias': True,
                'activation_function': value.activation})
            _write_safetensors(os.path.join(folder, path), 'model.safetensors',
                               {'linear.weight': value.weight, 'linear.bias': value.bias})
            width = int(out)
            module = DENSE
        else:
            path = '%d_Normalize' % idx
            os.mkdir(os.path.join(folder, path))
            module = NORMALIZE
        modules.append({'idx': idx, 'name': str(idx), 'path': path, 'type': module})
    _write_json(folder, 'modules.json', modules)
    _write_json(folder, 'config_sentence_transformers.json', {
        '__version__': {'sentence_transformers': '3.0.0'},
        'prompts': {PROMPT_NAME: prefix} if prefix else {},
        'default_prompt_name': PROMPT_NAME if prefix else None,
        'similarity_fn_name': 'cosine'})
    return width


def write_classifier(folder, source, tokens, max_seq_length):
    """Writes a Hugging Face BertForSequenceClassification folder of a classifier."""
    names = [label for label, _ in sorted(source.labels.items(), key=lambda item: item[1])]
    extra = {'id2label': {str(i): name for i, name in enumerate(names)},
             'label2id': {name: i for i, name in enumerate(names)},
             'num_labels': len(names), 'problem_type': 'single_label_classification',
             'classifier_dropout': None}
    _write_json(folder, 'config.json', hf_config(source.config, 'BertForSequenceClassification',
                                                 tokens.pad_id, extra))
    tensors = hf_tensors(source.arrays, source.config, prefix='bert.')
    tensors['classifier.weight'] = np.ascontiguousarray(source.arrays['output/W'])
    tensors['classifier.bias'] = np.ascontiguousarray(source.arrays['output/b'])
    _write_safetensors(folder, 'model.safetensors', tensors)
    for name, text in tokens.files:
        _write_text(folder, name, text)
    _write_json(folder, 'tokenizer_config.json', tokenizer_config(tokens, max_seq_length))
    _write_json(folder, 'special_tokens_map.json', tokens.special)


def last_epoch(model_path):
    """(the last record of the log.jsonl beside a model, its path), (None, path) for an
    empty log, (None, None) without one."""
    log = os.path.join(os.path.dirname(os.path.abspath(model_path)), training.LOG_NAME)
    if not os.path.isfile(log):
        return None, None
    records = training.read_log(log)
    return (records[-1] if records else None), log


def model_card(args, source, steps, tokens, prefix, dim):
    """The README.md of an exported folder."""
    meta = source.meta
    lines = ['---', 'library_name: %s' % ('transformers' if source.kind == 'classifier'
                                          else 'sentence-transformers'),
             'pipeline_tag: %s' % ('text-classification' if source.kind == 'classifier'
                                   else 'sentence-similarity'),
             'tags:', '- bert-dml', '---', '']
    title = {'dml': 'A sentence embedding trained by metric learning (BERT-DML)',
             'classifier': 'A fine-tuned BERT classifier (BERT-DML)',
             'pretrained': 'A pre-trained BERT as a sentence embedding (BERT-DML)'}
    lines += ['# ' + title[source.kind], '']
    lines += ['Exported by `python -m bertlib.export` from:', '',
              '- base model: `%s` (%d layers, hidden %d, vocabulary %d)'
              % (args.init_checkpoint, source.config.num_hidden_layers,
                 source.config.hidden_size, source.config.vocab_size)]
    if args.model:
        lines.append('- model: `%s`, labels `%s` (%d classes)'
                     % (args.model, args.label, len(source.labels)))
    lines.append('- tokenizer: `%s` (%s), at most %d tokens'
                 % (args.vocab_file, 'SentencePiece' if tokens.lower_case is None
                    else 'WordPiece, lower-cased' if tokens.lower_case
                    else 'WordPiece, cased', args.max_seq_length))
    lines.append('- text prefix: %s' % ('`%s` (the default prompt)' % json.dumps(prefix)
                                        if prefix else 'none'))
    if args.join_ellipsis:
        lines.append("- '. . .' is read as '\u2026' (--join_ellipsis)")
    if source.kind != 'pretrained':
        recipe = {k: v for k, v in sorted(meta.items()) if k != 'centre'}
        lines += ['', '## Recipe', '', '```json', json.dumps(recipe, indent=2, sort_keys=True,
                                                             ensure_ascii=False), '```']
        last, log = last_epoch(args.model)
        if last is not None:
            names = ('precision@1', 'MAP@R') if source.kind == 'dml' else ('accuracy', 'UAR')
            lines += ['', '## Last evaluation (%s, epoch %d)' % (os.path.basename(log),
                                                                  last['epoch']), '',
                      '| data | %s | %s |' % names, '| --- | --- | --- |']
            for part, what in (('T', 'training sample'), ('D', 'evaluation file')):
                if last.get(part + '/acc1') is not None:
                    lines.append('| %s | %.4f | %.4f |' % (what, last[part + '/acc1'],
                                                           last.get(part + '/acc2') or 0.0))
        files = [meta[key] for key in ('train_file', 'eval_file')
                 if isinstance(meta.get(key), str)]
        if files:
            lines += ['', 'Data files: training `%s`%s' % (
                files[0], ', evaluation `%s`' % files[1] if len(files) > 1 else '')]
        if source.dropped:
            lines += ['', 'Left out: the %d arrays of the %s loss\'s own parameters (%s): '
                      'they score training classes and are not part of the embedding.'
                      % (len(source.dropped), meta.get('loss', ''),
                         ', '.join('`%s`' % n for n in source.dropped))]
    if source.kind == 'classifier':
        lines += ['', '## Use', '', '```python', 'from transformers import pipeline',
                  "classify = pipeline('text-classification', model='%s')"
                  % os.path.basename(os.path.abspath(args.output)),
                  "classify('%stext')" % prefix.replace("'", "\\'"), '```']
    else:
        lines += ['', '## Pipeline', '', '1. BERT (the Transformer module)']
        for number, (kind, value) in enumerate(steps, 2):
            if kind == 'pooling':
                what = 'pooling: %s' % value
            elif kind == 'normalize':
                what = 'normalise to unit length'
            else:
                what = 'dense %d -> %d: %s' % (value.weight.shape[1], value.weight.shape[0],
                                               value.why)
            lines.append('%d. %s' % (number, what))
        lines += ['', 'Features: %d dimensions.' % dim, '', '## Use', '', '```python',
                  'from sentence_transformers import SentenceTransformer',
                  "model = SentenceTransformer('%s')" % os.path.basename(
                      os.path.abspath(args.output)),
                  'vectors = model.encode(texts)%s' % (
                      '  # the text prefix is put before each text' if prefix else ''),
                  '```']
    return '\n'.join(lines) + '\n'


def _inputs(args):
    return [(flag, path) for flag, path in (
        ('--vocab_file', args.vocab_file), ('--bert_config_file', args.bert_config_file),
        ('--init_checkpoint', args.init_checkpoint), ('--model', args.model),
        ('--label', args.label)) if path]


def check_output_folder(args):
    """UsageError unless --output can be written: a new name, an empty folder, or with
    --force a folder that holds none of the inputs."""
    output = os.path.abspath(args.output)
    parent = os.path.dirname(output)
    if not os.path.isdir(parent):
        raise UsageError('--output %s: folder %s does not exist' % (args.output, parent))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError('--output %s: folder %s is not writable' % (args.output, parent))
    if os.path.lexists(output) and not os.path.isdir(output) or os.path.islink(output):
        raise UsageError('--output %s exists and is not a folder' % args.output)
    for flag, path in _inputs(args):
        real = os.path.realpath(path)
        if real == os.path.realpath(output) or real.startswith(
                os.path.realpath(output) + os.sep):
            raise UsageError('--output %s holds an input (%s %s): choose another folder'
                             % (args.output, flag, path))
    if os.path.isdir(output) and os.listdir(output) and not args.force:
        raise UsageError('--output %s exists and is not empty: choose a new folder, or '
                         'give --force to replace it' % args.output)


def export(args):
    """Writes the folder the flags ask for; returns (kind, output, dimension)."""
    check_output_folder(args)
    for path, what in ((args.bert_config_file, 'BERT config'), (args.vocab_file, 'vocabulary'),
                       (args.init_checkpoint, 'checkpoint')):
        bert_loading.check_file(path, what)
    config = bert_loading.read_bert_config(args.bert_config_file)
    modeling.check_pretrained(config, args.init_checkpoint, args.bert_config_file)
    if args.max_seq_length < 2 or args.max_seq_length > config.max_position_embeddings:
        raise UsageError('--max_seq_length %d: must be 2 to the model\'s '
                         'max_position_embeddings %d'
                         % (args.max_seq_length, config.max_position_embeddings))
    if args.model:
        flags.settle_text_prefix(args, args.model)
    elif args.text_prefix is None:
        args.text_prefix = ''
    prefix = args.text_prefix
    if args.join_ellipsis and '. . .' in prefix:
        raise UsageError('--text_prefix %r holds \'. . .\', which --join_ellipsis would turn '
                         'into \'\u2026\' in the exported tokenizer but not in ours' % prefix)
    tokenizer = bert_loading.load_tokenizer(args, config)
    source = read_source(args, config)
    tokens = tokenizer_files(tokenizer, args.max_seq_length, args.join_ellipsis)

    steps, dim = [], None
    if source.kind == 'dml':
        from bertlib import dml
        head = source.meta['head']
        dim = source.arrays['output/W'].shape[0] if head == 'linear' else config.hidden_size
        centre = dml.read_centre(source.meta, dim, args.model)
        steps = sentence_pipeline(source.arrays, source.meta['pooling'], head, centre)
    elif source.kind == 'pretrained':
        steps = sentence_pipeline(source.arrays, args.pooling or 'pooled', 'none', None)
        dim = config.hidden_size

    output = os.path.abspath(args.output)
    stage = tempfile.mkdtemp(dir=os.path.dirname(output),
                             prefix='.%s.' % os.path.basename(output), suffix='.tmp')
    try:
        os.chmod(stage, 0o777 & ~convert._umask())
        if source.kind == 'classifier':
            write_classifier(stage, source, tokens, args.max_seq_length)
        else:
            write_sentence_transformers(stage, source, tokens, steps, prefix,
                                        args.max_seq_length)
        _write_text(stage, 'README.md', model_card(args, source, steps, tokens, prefix, dim))
        _replace_folder(stage, output)
    except OSError as e:
        raise UsageError('%s: cannot write the export: %s' % (args.output, e.strerror or e))
    finally:
        if os.path.isdir(stage):
            shutil.rmtree(stage, ignore_errors=True)
    return source.kind, args.output, dim


def _replace_folder(stage, output):
    """Renames the finished `stage` to `output`; an earlier `output` (--force) is moved
    aside first and removed once the new one is in place."""
    if not os.path.isdir(output) or not os.listdir(output):
        os.replace(stage, output)  # a new name, or an empty folder
        return
    old = tempfile.mkdtemp(dir=os.path.dirname(output),
                           prefix='.%s.' % os.path.basename(output), suffix='.old')
    os.rmdir(old)
    os.rename(output, old)
    try:
        os.rename(stage, output)
    except OSError:
        os.rename(old, output)
        raise
    shutil.rmtree(old, ignore_errors=True)


def build_parser():
    parser = argparse.ArgumentParser(
        prog='python -m bertlib.export',
        description=(
            'Write a model of this project as a folder other tools load. With --model and '
            '--label of a train_dml.py model: a sentence-transformers folder whose '
            'SentenceTransformer(DIR).encode(texts) gives extruct_bert_metrics.py\'s '
            'features (pooling, linear head, centre, text prefix). Of a train_classifier.py '
            'model: a Hugging Face BertForSequenceClassification folder (id2label from '
            'labels.bin) giving test_classifier.py --predict\'s labels and probabilities. '
            'Without --model: the pre-trained BERT as a sentence-transformers folder, as '
            'extruct_bert_embed.py reads it (--pooling, --text_prefix).'),
        epilog=('The folder is written beside --output under a temporary name and renamed '
                'into place. Exit status: 0 on success, 2 on bad input (one error: line, '
                'nothing written).'))
    group = parser.add_argument_group(
        'pre-trained BERT', 'either --bert_dir DIR, or all three of --vocab_file,\n'
        '--bert_config_file and --init_checkpoint')
    group.add_argument('--bert_dir', default=None, metavar='DIR',
                       help='the folder `python -m bertlib.convert` (or `make model`) '
                            'writes: stands for the three flags below, as in every script')
    group.add_argument('--vocab_file', default=None,
                       help='WordPiece vocab.txt or SentencePiece tokenizer.json')
    group.add_argument('--bert_config_file', default=None, help='bert_config.json')
    group.add_argument('--init_checkpoint', default=None,
                       help='arrays_bert_model.ckpt.npz (the fine-tuned model holds its own '
                            'BERT; this one is checked against the config)')
    group.add_argument('--do_lower_case', choices=tokenization.DO_LOWER_CASE_CHOICES,
                       default='auto',
                       help='as the extraction scripts take it (default: auto, from the '
                            'vocabulary); the exported tokenizer lower-cases and strips '
                            'accents as this says')
    group.add_argument('--max_seq_length', type=int, default=128,
                       help='truncation length of the exported tokenizer, [CLS] and [SEP] '
                            'included, 2 to the max_position_embeddings (default: 128, as '
                            'the extraction scripts)')
    group.add_argument('--text_prefix', default=None, metavar='STR',
                       help='put before every text: the folder\'s default prompt (default: '
                            'empty; a fine-tuned model: its own, and another is refused)')
    group.add_argument('--join_ellipsis', action='store_true',
                       help="turn '. . .' into '\u2026' in the exported tokenizer, as the "
                            'extraction scripts\' flag of that name')
    group = parser.add_argument_group('fine-tuned model')
    group.add_argument('--model', default=None,
                       help='final.model or early_stopped-*.model of train_dml.py or '
                            'train_classifier.py (default: the pre-trained BERT alone)')
    group.add_argument('--label', default=None, help='labels.bin of that training run')
    group.add_argument('--pooling', choices=modeling.POOLINGS, default=None,
                       help='without --model: the sentence vector, as extruct_bert_embed.py '
                            "takes it (default: pooled); a fine-tuned model's own is used")
    group = parser.add_argument_group('output')
    group.add_argument('--output', '-o', required=True,
                       help='the folder to write; it must not exist or be empty')
    group.add_argument('--force', action='store_true',
                       help='replace a non-empty --output folder (never one holding an input)')
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    flags.resolve_bert_dir(args)
    kind, output, dim = export(args)
    what = {'dml': 'sentence-transformers folder (DML model)',
            'pretrained': 'sentence-transformers folder (pre-trained BERT)',
            'classifier': 'Hugging Face BertForSequenceClassification folder'}[kind]
    print('exported %s -> %s%s' % (what, output, '' if dim is None else
                                   ', %d-dimensional features' % dim))
    return 0


if __name__ == '__main__':
    process.run(main)
