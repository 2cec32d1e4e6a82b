"""Helpers the tests and the benchmarks share: a random BERT as model files, the flags
that name them, and where the real data sets are. Nothing here runs in a script.
"""

import os
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
# The real data sets (rt-polarity, mlit; see their README): BERT_DML_DATASETS, else
# ../shared/datasets beside the checkout. Tests and benchmarks skip where it is absent.
DATASETS = pathlib.Path(os.environ.get('BERT_DML_DATASETS')
                        or ROOT.parent / 'shared' / 'datasets')
SPECIAL_TOKENS = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']
# A BERT small enough for a unit test: 2 layers, hidden 8.
TINY_SHAPE = dict(hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=16, max_position_embeddings=128, type_vocab_size=2)


def write_random_bert(folder, words=None, seed=0, shape=TINY_SHAPE, **overrides):
    """A randomly initialised BERT as the three files the scripts take; returns `folder`.

    vocab.txt: the special tokens, then `words`; with `words` None, the folder's own
    vocab.txt is kept. bert_config.json: `shape` (`bertlib.modeling.BertConfig` fields,
    a tiny 2-layer model by default) with `overrides`. arrays_bert_model.ckpt.npz: the
    weights drawn after `np.random.seed(seed)`, so the same arguments write the same model.
    """
    import numpy as np
    from bertlib import modeling, tokenization
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if words is None:
        vocab_size = len(tokenization.load_vocab(str(folder / 'vocab.txt')))
    else:
        vocab = SPECIAL_TOKENS + list(words)
        (folder / 'vocab.txt').write_text('\n'.join(vocab) + '\n', encoding='utf-8')
        vocab_size = len(vocab)
    config = modeling.BertConfig(vocab_size=vocab_size, **dict(shape, **overrides))
    (folder / 'bert_config.json').write_text(config.to_json_string())
    np.random.seed(seed)
    modeling.save_pretrained(modeling.BertModel(config),
                             str(folder / 'arrays_bert_model.ckpt.npz'))
    return folder


def model_flags(folder):
    """--vocab_file, --bert_config_file and --init_checkpoint of a model folder."""
    folder = pathlib.Path(folder)
    return ['--vocab_file', os.fspath(folder / 'vocab.txt'),
            '--bert_config_file', os.fspath(folder / 'bert_config.json'),
            '--init_checkpoint', os.fspath(folder / 'arrays_bert_model.ckpt.npz')]


def sentencepiece_pieces(words):
    """[(piece, score)] of a tiny XLM-R-style unigram vocabulary: <s>, <pad>, </s>,
    <unk>, then '▁word' for each of `words` and every character of them alone (so that
    any text of those characters has a segmentation), the whole words scored higher."""
    pieces = [('<s>', 0.0), ('<pad>', 0.0), ('</s>', 0.0), ('<unk>', 0.0)]
    chars = sorted(set(''.join(words)) | {'\u2581'})
    pieces += [('\u2581' + word, -1.0 - 0.01 * i) for i, word in enumerate(words)]
    pieces += [(char, -5.0 - 0.01 * i) for i, char in enumerate(chars)]
    return pieces


def write_random_sentencepiece_bert(folder, words, charmap=None, extra_rows=3, seed=0,
                                    shape=TINY_SHAPE):
    """A randomly initialised BERT whose tokenizer is a SentencePiece unigram
    tokenizer.json (`sentencepiece_pieces(words)`, `charmap` or {}); its embedding has
    `extra_rows` rows more than pieces, as multilingual-e5's has. Returns `folder`; its
    tokenizer.json goes where vocab.txt goes in `model_flags`' place
    (`sentencepiece_model_flags`)."""
    import numpy as np
    from bertlib import modeling, sentencepiece_tokenization
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pieces = sentencepiece_pieces(words)
    sentencepiece_tokenization.write_tokenizer_json(folder / 'tokenizer.json', pieces,
                                                    charmap or {})
    config = modeling.BertConfig(vocab_size=len(pieces) + extra_rows, **shape)
    (folder / 'bert_config.json').write_text(config.to_json_string())
    np.random.seed(seed)
    modeling.save_pretrained(modeling.BertModel(config),
                             str(folder / 'arrays_bert_model.ckpt.npz'))
    return folder


def sentencepiece_model_flags(folder):
    """`model_flags` of a folder written by `write_random_sentencepiece_bert`."""
    folder = pathlib.Path(folder)
    return ['--vocab_file', os.fspath(folder / 'tokenizer.json'),
            '--bert_config_file', os.fspath(folder / 'bert_config.json'),
            '--init_checkpoint', os.fspath(folder / 'arrays_bert_model.ckpt.npz')]
