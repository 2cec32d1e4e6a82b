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


def write_hf_copy(bert, target):
    """The BERT folder `bert` (as `write_random_bert` writes it) as the Hugging Face
    folder `target` that `python -m bertlib.convert` reads: config.json, model.safetensors
    and vocab.txt."""
    import json
    import shutil
    import numpy as np
    from safetensors.numpy import save_file
    from bertlib import convert
    target.mkdir()
    config = json.loads((bert / 'bert_config.json').read_text())
    config['model_type'] = 'bert'
    (target / 'config.json').write_text(json.dumps(config))
    shutil.copy(bert / 'vocab.txt', target / 'vocab.txt')
    tensors = {}
    with np.load(bert / 'arrays_bert_model.ckpt.npz') as archive:
        for row in convert.TABLE:
            layers = range(config['num_hidden_layers']) if '{i}' in row[0] else [None]
            for i in layers:
                tensors[row[1].format(i=i)] = archive[row[0].format(i=i)]
    save_file(tensors, str(target / 'model.safetensors'))


def encrypt_zip_member(path, member):
    """Sets the 'encrypted' flag of `member` in the zip file `path`'s central directory,
    as an encrypting zip tool would (the data stays as it was)."""
    import struct
    import zipfile
    data = bytearray(pathlib.Path(path).read_bytes())
    with zipfile.ZipFile(path) as z:
        offset = z.getinfo(member).header_offset
    start = data.find(b'PK\x01\x02')
    while start >= 0:
        name_length = struct.unpack_from('<H', data, start + 28)[0]
        if struct.unpack_from('<I', data, start + 42)[0] == offset:
            flags = struct.unpack_from('<H', data, start + 8)[0]
            struct.pack_into('<H', data, start + 8, flags | 1)
        start = data.find(b'PK\x01\x02', start + 46 + name_length)
    pathlib.Path(path).write_bytes(bytes(data))
