"""Tests of `bertlib.convert`: Hugging Face safetensors and Google TF checkpoints to npz.

The tests write tiny checkpoints themselves, under each source's own tensor names spelled
out here (not taken from the converter's table), and check every array written.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from bertlib import convert as convert_module
from bertlib.convert import convert
from bertlib.errors import UsageError

LAYERS, HIDDEN, HEADS, INTERMEDIATE, POSITIONS, TYPES = 2, 8, 2, 16, 16, 2
VOCAB = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', 'the', 'cat', 'sat', '##s', 'on',
         'mat', '.']
NPZ = 'arrays_bert_model.ckpt.npz'
MINILM_NPZ = os.path.join(ROOT, 'BERT', 'all-MiniLM-L6-v2', NPZ)


def config_dict(**changes):
    config = {
        'vocab_size': len(VOCAB), 'hidden_size': HIDDEN, 'num_hidden_layers': LAYERS,
        'num_attention_heads': HEADS, 'intermediate_size': INTERMEDIATE,
        'hidden_act': 'gelu', 'hidden_dropout_prob': 0.1,
        'attention_probs_dropout_prob': 0.1, 'max_position_embeddings': POSITIONS,
        'type_vocab_size': TYPES, 'initializer_range': 0.02,
    }
    config.update(changes)
    return config


def expected_keys(layers=LAYERS):
    keys = {'bert/word_embeddings/W', 'bert/position_embeddings/W',
            'bert/token_type_embeddings/W', 'bert/post_embedding_ln/gamma',
            'bert/post_embedding_ln/beta', 'bert/pooler/W', 'bert/pooler/b'}
    for i in range(layers):
        layer = 'bert/encoder/layer_%d/' % i
        for part in ('attention/query', 'attention/key', 'attention/value',
                     'attention_output_dense', 'intermediate_dense1', 'intermediate_dense2'):
            keys.update({layer + part + '/W', layer + part + '/b'})
        for part in ('attention_output_ln', 'intermediate_ln'):
            keys.update({layer + part + '/gamma', layer + part + '/beta'})
    return keys


def hf_weights(rng, legacy_ln=False):
    """{HF name: array} and {HF name: (npz key, transposed)} of a tiny BertModel."""
    H, I = HIDDEN, INTERMEDIATE
    gamma, beta = ('gamma', 'beta') if legacy_ln else ('weight', 'bias')
    spec = [  # HF name, shape as HF stores it, npz key
        ('embeddings.word_embeddings.weight', (len(VOCAB), H), 'bert/word_embeddings/W'),
        ('embeddings.position_embeddings.weight', (POSITIONS, H),
         'bert/position_embeddings/W'),
        ('embeddings.token_type_embeddings.weight', (TYPES, H),
         'bert/token_type_embeddings/W'),
        ('embeddings.LayerNorm.' + gamma, (H,), 'bert/post_embedding_ln/gamma'),
        ('embeddings.LayerNorm.' + beta, (H,), 'bert/post_embedding_ln/beta'),
        ('pooler.dense.weight', (H, H), 'bert/pooler/W'),
        ('pooler.dense.bias', (H,), 'bert/pooler/b'),
    ]
    for i in range(LAYERS):
        hf, ch = 'encoder.layer.%d.' % i, 'bert/encoder/layer_%d/' % i
        for name in ('query', 'key', 'value'):
            spec += [(hf + 'attention.self.%s.weight' % name, (H, H),
                      ch + 'attention/%s/W' % name),
                     (hf + 'attention.self.%s.bias' % name, (H,), ch + 'attention/%s/b' % name)]
        spec += [
            (hf + 'attention.output.dense.weight', (H, H), ch + 'attention_output_dense/W'),
            (hf + 'attention.output.dense.bias', (H,), ch + 'attention_output_dense/b'),
            (hf + 'attention.output.LayerNorm.' + gamma, (H,), ch + 'attention_output_ln/gamma'),
            (hf + 'attention.output.LayerNorm.' + beta, (H,), ch + 'attention_output_ln/beta'),
            (hf + 'intermediate.dense.weight', (I, H), ch + 'intermediate_dense1/W'),
            (hf + 'intermediate.dense.bias', (I,), ch + 'intermediate_dense1/b'),
            (hf + 'output.dense.weight', (H, I), ch + 'intermediate_dense2/W'),
            (hf + 'output.dense.bias', (H,), ch + 'intermediate_dense2/b'),
            (hf + 'output.LayerNorm.' + gamma, (H,), ch + 'intermediate_ln/gamma'),
            (hf + 'output.LayerNorm.' + beta, (H,), ch + 'intermediate_ln/beta'),
        ]
    arrays = {name: rng.standard_normal(shape).astype(np.float32) for name, shape, _ in spec}
    targets = {name: key for name, _, key in spec}
    return arrays, targets


def write_vocab(folder, words=VOCAB):
    path = os.path.join(str(folder), 'vocab.txt')
    with open(path, 'wb') as f:
        f.write(''.join(w + '\n' for w in words).encode('utf-8'))
    return path


def write_hf_folder(folder, arrays, config=None, prefix='', extras=True):
    """A Hugging Face folder: config.json, model.safetensors (with extras) and vocab.txt."""
    from safetensors.numpy import save_file
    os.makedirs(str(folder), exist_ok=True)
    with open(os.path.join(str(folder), 'config.json'), 'w') as f:
        json.dump(dict(config or config_dict(), model_type='bert',
                       architectures=['BertModel'], layer_norm_eps=1e-5), f)
    tensors = {prefix + name: array for name, array in arrays.items()}
    if extras:
        tensors[prefix + 'embeddings.position_ids'] = np.arange(POSITIONS)[None].astype(np.int64)
        tensors['cls.predictions.bias'] = np.zeros(len(VOCAB), np.float32)
        tensors['cls.predictions.transform.LayerNorm.gamma'] = np.ones(HIDDEN, np.float32)
    save_file(tensors, os.path.join(str(folder), 'model.safetensors'))
    write_vocab(folder)
    return str(folder)


def load_npz(folder):
    with np.load(os.path.join(str(folder), NPZ), allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def assert_converted(dest, arrays, targets, written, transposed=False):
    """The npz in `dest` and `written` hold exactly `arrays`, renamed by `targets`."""
    stored = load_npz(dest)
    assert set(stored) == expected_keys()
    assert set(written) == expected_keys()
    for name, key in targets.items():
        source = np.asarray(arrays[name], dtype=np.float32)
        if transposed and name.endswith('/kernel'):
            source = source.T  # TF kernel (in, out) -> Chainer W (out, in)
        assert stored[key].dtype == np.float32, key
        np.testing.assert_array_equal(stored[key], source, err_msg=key)
        np.testing.assert_array_equal(written[key], stored[key], err_msg=key)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# ---------------------------------------------------------------------------------------
# Hugging Face


@pytest.mark.parametrize('prefix', ['', 'bert.'])
def test_hf_conversion(tmp_path, rng, prefix):
    arrays, targets = hf_weights(rng)
    source = write_hf_folder(tmp_path / 'hf', arrays, prefix=prefix)
    dest = tmp_path / 'out'
    written = convert(source, dest)

    assert_converted(dest, arrays, targets, written)
    assert sorted(os.listdir(str(dest))) == ['arrays_bert_model.ckpt.npz', 'bert_config.json',
                                             'vocab.txt']
    with open(str(dest / 'bert_config.json')) as f:
        config = json.load(f)
    assert config == dict(config_dict(), layer_norm_eps=1e-5)
    with open(str(dest / 'vocab.txt'), 'rb') as a, open(os.path.join(source, 'vocab.txt'),
                                                         'rb') as b:
        assert a.read() == b.read()


def test_hf_legacy_names_and_half_precision(tmp_path, rng):
    arrays, targets = hf_weights(rng, legacy_ln=True)
    arrays = {name: array.astype(np.float16) for name, array in arrays.items()}
    source = write_hf_folder(tmp_path / 'hf', arrays, prefix='bert.')
    written = convert(source, tmp_path / 'out', fmt='hf')
    assert_converted(tmp_path / 'out', arrays, targets, written)


def write_bf16_safetensors(path, tensors):
    """A safetensors file of bfloat16 tensors (NumPy cannot write them), by the format."""
    header, chunks, offset = {}, [], 0
    for name, array in tensors.items():
        raw = (np.asarray(array, np.float32).view(np.uint32) >> 16).astype('<u2').tobytes()
        header[name] = {'dtype': 'BF16', 'shape': list(array.shape),
                        'data_offsets': [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode('utf-8')
    text += b' ' * (-len(text) % 8)
    with open(path, 'wb') as f:
        f.write(len(text).to_bytes(8, 'little') + text + b''.join(chunks))


def test_hf_bfloat16(tmp_path, rng):
    arrays, targets = hf_weights(rng)
    # Values exact in bfloat16: float32 with the low 16 bits cleared.
    arrays = {n: (a.view(np.uint32) & 0xFFFF0000).view(np.float32) for n, a in arrays.items()}
    source = write_hf_folder(tmp_path / 'hf', arrays, extras=False)
    write_bf16_safetensors(os.path.join(source, 'model.safetensors'), arrays)
    written = convert(source, tmp_path / 'out')
    assert_converted(tmp_path / 'out', arrays, targets, written)
    # The reader used when NumPy has no bfloat16 dtype (ml_dtypes not imported).
    raw = convert_module._read_safetensors_raw(os.path.join(source, 'model.safetensors'))
    for name, array in arrays.items():
        np.testing.assert_array_equal(raw[name], array)


def test_hf_missing_tensor(tmp_path, rng):
    arrays, _ = hf_weights(rng)
    del arrays['encoder.layer.1.attention.self.key.bias']
    source = write_hf_folder(tmp_path / 'hf', arrays)
    with pytest.raises(UsageError, match=r"missing tensor 'encoder\.layer\.1\.attention"
                                         r"\.self\.key\.bias'") as info:
        convert(source, tmp_path / 'out')
    assert 'model.safetensors' in str(info.value)
    assert not (tmp_path / 'out').exists()


def test_hf_missing_tensor_named_with_prefix(tmp_path, rng):
    arrays, _ = hf_weights(rng)
    del arrays['pooler.dense.weight']
    source = write_hf_folder(tmp_path / 'hf', arrays, prefix='bert.')
    with pytest.raises(UsageError, match=r"missing tensor 'pooler\.dense\.weight'"):
        convert(source, tmp_path / 'out')


def test_hf_misshaped_tensor(tmp_path, rng):
    arrays, _ = hf_weights(rng)
    arrays['encoder.layer.0.intermediate.dense.weight'] = np.zeros(
        (HIDDEN, INTERMEDIATE), np.float32)  # TF's (in, out) by mistake
    source = write_hf_folder(tmp_path / 'hf', arrays, prefix='bert.')
    with pytest.raises(UsageError) as info:
        convert(source, tmp_path / 'out')
    message = str(info.value)
    assert "'bert.encoder.layer.0.intermediate.dense.weight'" in message
    assert '(8, 16)' in message and '(16, 8)' in message
    assert 'intermediate_size 16' in message and 'config.json' in message


def test_hf_extra_layer_is_unexpected(tmp_path, rng):
    arrays, _ = hf_weights(rng)
    config = config_dict(num_hidden_layers=1)
    source = write_hf_folder(tmp_path / 'hf', arrays, config=config)
    with pytest.raises(UsageError, match=r"unexpected tensors 'encoder\.layer\.1\."):
        convert(source, tmp_path / 'out')


def test_hf_vocab_size_mismatch(tmp_path, rng):
    arrays, _ = hf_weights(rng)
    source = write_hf_folder(tmp_path / 'hf', arrays)
    write_vocab(source, VOCAB[:-1])
    with pytest.raises(UsageError) as info:
        convert(source, tmp_path / 'out')
    message = str(info.value)
    assert 'vocab.txt' in message and 'config.json' in message
    assert '%d lines' % (len(VOCAB) - 1) in message and 'vocab_size %d' % len(VOCAB) in message


def test_count_lines():
    assert convert_module.count_lines(b'') == 0
    assert convert_module.count_lines(b'a\nb\n') == 2
    assert convert_module.count_lines(b'a\nb') == 2
    assert convert_module.count_lines(b'a\r\n\r\nb\r\n') == 3
    assert convert_module.count_lines('\u00e9\u2028x\n'.encode('utf-8')) == 1


def test_source_not_recognised(tmp_path):
    (tmp_path / 'empty').mkdir()
    with pytest.raises(UsageError, match='found neither model.safetensors'):
        convert(tmp_path / 'empty', tmp_path / 'out')
    with pytest.raises(UsageError, match='no such folder or checkpoint prefix'):
        convert(tmp_path / 'nowhere', tmp_path / 'out')


def test_failed_conversion_keeps_earlier_output(tmp_path, rng, monkeypatch):
    arrays, _ = hf_weights(rng)
    source = write_hf_folder(tmp_path / 'hf', arrays)
    dest = tmp_path / 'out'
    convert(source, dest)
    before = {name: (dest / name).read_bytes() for name in os.listdir(str(dest))}

    def interrupted(file, arrays, compress=False):  # dies halfway through the npz
        file.write(b'PK\x03\x04 half an archive')
        raise KeyboardInterrupt

    monkeypatch.setattr(convert_module.checkpoints, 'savez', interrupted)
    with pytest.raises(KeyboardInterrupt):
        convert(source, dest)
    after = {name: (dest / name).read_bytes() for name in os.listdir(str(dest))}
    assert after == before  # no temporary files left, nothing replaced


def run_cli(*args):
    return subprocess.run([sys.executable, '-m', 'bertlib.convert'] + [str(a) for a in args],
                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=120)


def test_cli(tmp_path, rng):
    arrays, _ = hf_weights(rng)
    source = write_hf_folder(tmp_path / 'hf', arrays)
    dest = tmp_path / 'out'
    done = run_cli(source, dest)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count('\n') == 1
    summary = done.stdout.strip()
    assert '%d layers' % LAYERS in summary and 'hidden %d' % HIDDEN in summary
    assert 'vocab %d' % len(VOCAB) in summary and '%d arrays' % len(expected_keys()) in summary
    assert str(dest) in summary
    assert set(load_npz(dest)) == expected_keys()

    write_vocab(source, VOCAB + ['extra'])
    failed = run_cli(source, tmp_path / 'out2', '--format', 'hf')
    assert failed.returncode == 2
    assert failed.stderr.startswith('error: ') or '\nerror: ' in failed.stderr
    assert 'vocab.txt has %d lines' % (len(VOCAB) + 1) in failed.stderr
    assert 'Traceback' not in failed.stderr
    assert failed.stdout == ''


def test_cli_help():
    done = run_cli('--help')
    assert done.returncode == 0
    for word in ('SOURCE', 'DEST', '--format', 'safetensors', 'bert_model.ckpt',
                 'tensorflow-cpu'):
        assert word in done.stdout


def test_tf_missing_is_usage_error(tmp_path, monkeypatch):
    (tmp_path / 'bert_model.ckpt.index').write_bytes(b'')
    write_vocab(tmp_path)
    (tmp_path / 'bert_config.json').write_text(json.dumps(config_dict()))
    monkeypatch.setitem(sys.modules, 'tensorflow', None)  # import tensorflow fails
    with pytest.raises(UsageError, match='TensorFlow is needed to convert a TF checkpoint: '
                                         'pip install tensorflow-cpu'):
        convert(tmp_path, tmp_path / 'out')


# ---------------------------------------------------------------------------------------
# Google TensorFlow


def google_weights(rng):
    """{Google name: array} and {Google name: npz key} of a tiny pre-trained BERT."""
    H, I = HIDDEN, INTERMEDIATE
    spec = [
        ('bert/embeddings/word_embeddings', (len(VOCAB), H), 'bert/word_embeddings/W'),
        ('bert/embeddings/token_type_embeddings', (TYPES, H), 'bert/token_type_embeddings/W'),
        ('bert/embeddings/position_embeddings', (POSITIONS, H), 'bert/position_embeddings/W'),
        ('bert/embeddings/LayerNorm/gamma', (H,), 'bert/post_embedding_ln/gamma'),
        ('bert/embeddings/LayerNorm/beta', (H,), 'bert/post_embedding_ln/beta'),
        ('bert/pooler/dense/kernel', (H, H), 'bert/pooler/W'),
        ('bert/pooler/dense/bias', (H,), 'bert/pooler/b'),
    ]
    for i in range(LAYERS):
        tf, ch = 'bert/encoder/layer_%d/' % i, 'bert/encoder/layer_%d/' % i
        for name in ('query', 'key', 'value'):
            spec += [(tf + 'attention/self/%s/kernel' % name, (H, H),
                      ch + 'attention/%s/W' % name),
                     (tf + 'attention/self/%s/bias' % name, (H,), ch + 'attention/%s/b' % name)]
        spec += [
            (tf + 'attention/output/dense/kernel', (H, H), ch + 'attention_output_dense/W'),
            (tf + 'attention/output/dense/bias', (H,), ch + 'attention_output_dense/b'),
            (tf + 'attention/output/LayerNorm/gamma', (H,), ch + 'attention_output_ln/gamma'),
            (tf + 'attention/output/LayerNorm/beta', (H,), ch + 'attention_output_ln/beta'),
            (tf + 'intermediate/dense/kernel', (H, I), ch + 'intermediate_dense1/W'),
            (tf + 'intermediate/dense/bias', (I,), ch + 'intermediate_dense1/b'),
            (tf + 'output/dense/kernel', (I, H), ch + 'intermediate_dense2/W'),
            (tf + 'output/dense/bias', (H,), ch + 'intermediate_dense2/b'),
            (tf + 'output/LayerNorm/gamma', (H,), ch + 'intermediate_ln/gamma'),
            (tf + 'output/LayerNorm/beta', (H,), ch + 'intermediate_ln/beta'),
        ]
    arrays = {name: rng.standard_normal(shape).astype(np.float32) for name, shape, _ in spec}
    return arrays, {name: key for name, _, key in spec}


@pytest.fixture(scope='module')
def google_folder(tmp_path_factory):
    """A Google BERT folder written by TensorFlow's name-based Saver, with its arrays."""
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')  # no import banner on stderr
    tf = pytest.importorskip('tensorflow')
    folder = tmp_path_factory.mktemp('google')
    arrays, targets = google_weights(np.random.default_rng(1))
    graph = tf.compat.v1.Graph()
    with graph.as_default():
        for name, array in arrays.items():
            tf.compat.v1.get_variable(name, initializer=array)
        tf.compat.v1.get_variable('cls/predictions/output_bias',
                                  initializer=np.zeros(len(VOCAB), np.float32))
        tf.compat.v1.get_variable('global_step', initializer=np.int64(1000))
        tf.compat.v1.get_variable('bert/pooler/dense/kernel/adam_m',
                                  initializer=np.zeros((HIDDEN, HIDDEN), np.float32))
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            tf.compat.v1.train.Saver().save(session, str(folder / 'bert_model.ckpt'))
    with open(str(folder / 'bert_config.json'), 'w') as f:
        json.dump(config_dict(), f)
    write_vocab(folder)
    return folder, arrays, targets


def test_tf_conversion(tmp_path, google_folder):
    folder, arrays, targets = google_folder
    written = convert(folder, tmp_path / 'out')
    assert_converted(tmp_path / 'out', arrays, targets, written, transposed=True)
    # Kernels are transposed, embeddings are not.
    np.testing.assert_array_equal(written['bert/pooler/W'], arrays['bert/pooler/dense/kernel'].T)
    np.testing.assert_array_equal(written['bert/word_embeddings/W'],
                                  arrays['bert/embeddings/word_embeddings'])
    with open(str(tmp_path / 'out' / 'bert_config.json')) as f:
        assert json.load(f) == dict(config_dict(), layer_norm_eps=1e-12)
    assert (tmp_path / 'out' / 'vocab.txt').read_bytes() == (folder / 'vocab.txt').read_bytes()


def test_tf_prefix_and_format(tmp_path, google_folder):
    folder, arrays, targets = google_folder
    written = convert(folder / 'bert_model.ckpt', tmp_path / 'out', fmt='tf')
    assert_converted(tmp_path / 'out', arrays, targets, written, transposed=True)


def test_tf_misshaped_config(tmp_path, google_folder):
    folder, _, _ = google_folder
    copy = tmp_path / 'google'
    copy.mkdir()
    for name in os.listdir(str(folder)):
        (copy / name).write_bytes((folder / name).read_bytes())
    (copy / 'bert_config.json').write_text(json.dumps(config_dict(intermediate_size=32)))
    with pytest.raises(UsageError) as info:
        convert(copy / 'bert_model.ckpt', tmp_path / 'out')
    message = str(info.value)
    assert "'bert/encoder/layer_0/intermediate/dense/kernel'" in message
    assert '(8, 16)' in message and '(8, 32)' in message and 'bert_config.json' in message


# ---------------------------------------------------------------------------------------
# The real model that `make model` converts


@pytest.mark.skipif(not os.path.exists(MINILM_NPZ), reason='run `make model` first')
def test_minilm_npz():
    with np.load(MINILM_NPZ, allow_pickle=False) as archive:
        # The wheel's model is a sentence-transformers folder: its pipeline (mean pooling,
        # unit rows, 256 tokens) is recorded beside the 5 + 16 * 6 + 2 arrays of BERT.
        assert set(archive.files) == expected_keys(layers=6) | {'meta/json'}
        pipeline = json.loads(str(archive['meta/json']))['sentence_pipeline']
        assert pipeline['steps'] == [['pooling', 'mean'], ['normalize', None]]
        assert pipeline['max_seq_length'] == 256
        assert archive['bert/word_embeddings/W'].shape == (30522, 384)
        assert archive['bert/encoder/layer_5/intermediate_dense1/W'].shape == (1536, 384)
        assert archive['bert/encoder/layer_5/intermediate_dense2/W'].shape == (384, 1536)
        assert archive['bert/pooler/W'].dtype == np.float32
