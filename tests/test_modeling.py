import json

import chainer
import numpy as np
import pytest

from bertlib import bert_loading, modeling
from bertlib.errors import UsageError

TINY = dict(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=32, max_position_embeddings=24, type_vocab_size=2)


def tiny_model(seed=0, **overrides):
    config = modeling.BertConfig(**dict(TINY, **overrides))
    with chainer.using_config('dtype', np.float32):
        np.random.seed(seed)
        return modeling.BertModel(config)


def npz_of(model, path):
    arrays = {'bert/' + name.lstrip('/'): p.array for name, p in model.namedparams()}
    np.savez(path, **arrays)
    return arrays


def reference_forward(arrays, config, ids, mask):
    """Plain NumPy BERT, written out from the paper, for comparison."""
    a = {k[len('bert/'):]: v.astype(np.float64) for k, v in arrays.items()}
    import scipy.special

    def layer_norm(x, prefix):
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + config.layer_norm_eps) * a[prefix + '/gamma'] + \
            a[prefix + '/beta']

    def dense(x, prefix):
        return x @ a[prefix + '/W'].T + a[prefix + '/b']

    batch, length = ids.shape
    h = a['word_embeddings/W'][ids] + a['position_embeddings/W'][np.arange(length)][None] + \
        a['token_type_embeddings/W'][np.zeros_like(ids)]
    h = layer_norm(h, 'post_embedding_ln')
    heads = config.num_attention_heads
    d = config.hidden_size // heads
    for i in range(config.num_hidden_layers):
        p = 'encoder/layer_%d/' % i

        def split(x):
            return x.reshape(batch, length, heads, d).transpose(0, 2, 1, 3)
        q, k, v = (split(dense(h, p + 'attention/' + n)) for n in ('query', 'key', 'value'))
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d) + (1 - mask[:, None, None, :]) * -1e9
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, length, -1)
        h = layer_norm(dense(context, p + 'attention_output_dense') + h,
                       p + 'attention_output_ln')
        inner = dense(h, p + 'intermediate_dense1')
        inner = inner * scipy.special.ndtr(inner)
        h = layer_norm(dense(inner, p + 'intermediate_dense2') + h, p + 'intermediate_ln')
    pooled = np.tanh(dense(h[:, 0], 'pooler'))
    return h, pooled


def test_parameter_tree_matches_chainer_bert_npz_layout():
    model = tiny_model()
    names = {name for name, _ in model.namedparams()}
    assert '/word_embeddings/W' in names
    assert '/post_embedding_ln/gamma' in names
    assert '/encoder/layer_1/attention/query/W' in names
    assert '/encoder/layer_0/attention_output_dense/b' in names
    assert '/encoder/layer_0/intermediate_dense2/W' in names
    assert '/encoder/layer_1/intermediate_ln/beta' in names
    assert '/pooler/W' in names
    assert len(names) == 5 + 16 * 2 + 2
    w = dict(model.namedparams())['/encoder/layer_0/intermediate_dense1/W']
    assert w.shape == (32, 16)  # Chainer's (out, in)


def test_forward_matches_numpy_reference(tmp_path):
    model = tiny_model()
    arrays = npz_of(model, tmp_path / 'm.npz')
    ids = np.array([[2, 5, 7, 9, 3, 0], [2, 11, 3, 0, 0, 0]], dtype=np.int32)
    mask = (ids > 0).astype(np.int32)
    with chainer.using_config('train', False):
        seq = model.get_sequence_output(ids, mask).array
        pooled = model.get_pooled_output(ids, mask).array
        mean = model.encode(ids, mask, pooling='mean').array
        cls = model.encode(ids, mask, pooling='cls').array
    ref_seq, ref_pooled = reference_forward(arrays, model.config, ids, mask)
    real = mask.astype(bool)
    assert np.abs(seq[real] - ref_seq[real]).max() < 1e-5
    assert np.abs(pooled - ref_pooled).max() < 1e-5
    assert np.abs(cls - ref_seq[:, 0]).max() < 1e-5
    expected_mean = (ref_seq * mask[:, :, None]).sum(1) / mask.sum(1, keepdims=True)
    assert np.abs(mean - expected_mean).max() < 1e-5


def test_padding_does_not_change_real_tokens():
    model = tiny_model()
    ids = np.array([[2, 5, 7, 3]], dtype=np.int32)
    padded = np.array([[2, 5, 7, 3, 0, 0, 0]], dtype=np.int32)
    with chainer.using_config('train', False):
        a = model.encode(ids, np.ones_like(ids), pooling='mean').array
        b = model.encode(padded, (padded > 0).astype(np.int32), pooling='mean').array
    assert np.abs(a - b).max() < 1e-6


def test_dropout_only_in_training():
    model = tiny_model()
    ids = np.array([[2, 5, 7, 3]], dtype=np.int32)
    with chainer.using_config('train', False):
        a = model.get_pooled_output(ids).array
        b = model.get_pooled_output(ids).array
    assert np.array_equal(a, b)
    with chainer.using_config('train', True):
        c = model.get_pooled_output(ids).array
    assert not np.allclose(a, c)


def test_backward_reaches_every_parameter():
    model = tiny_model()
    ids = np.array([[2, 5, 7, 3], [2, 9, 3, 0]], dtype=np.int32)
    loss = chainer.functions.sum(model.get_pooled_output(ids, (ids > 0).astype(np.int32)) ** 2)
    model.cleargrads()
    loss.backward()
    for name, param in model.namedparams():
        if 'token_type_embeddings' in name:
            continue  # only type 0 is used
        assert param.grad is not None and np.abs(param.grad).sum() > 0, name


def test_frozen_word_embeddings_give_the_same_output_and_no_table_gradient():
    ids = np.array([[2, 5, 7, 3], [2, 9, 3, 0]], dtype=np.int32)
    mask = (ids > 0).astype(np.int32)
    trained, frozen = tiny_model(), tiny_model()
    frozen.freeze_word_embeddings()
    with chainer.using_config('train', False):  # no dropout draws
        expected = trained.get_pooled_output(ids, mask).array
        output = frozen.get_pooled_output(ids, mask)
    np.testing.assert_array_equal(output.array, expected)
    frozen.cleargrads()
    chainer.functions.sum(output ** 2).backward()
    assert frozen.word_embeddings.W.grad is None
    assert np.abs(frozen.post_embedding_ln.gamma.grad).sum() > 0


def test_load_pretrained_round_trip(tmp_path):
    source = tiny_model(seed=1)
    arrays = npz_of(source, tmp_path / 'm.npz')
    np.savez(tmp_path / 'with_heads.npz', **arrays, **{'cls/predictions/output_bias':
                                                      np.zeros(40, np.float32)})
    target = modeling.BertModel(source.config, random_init=False)
    modeling.load_pretrained(target, str(tmp_path / 'with_heads.npz'))
    for name, param in target.namedparams():
        assert np.array_equal(param.array, arrays['bert/' + name.lstrip('/')]), name


def test_placeholder_model_has_zero_weights_and_no_gradient_arrays():
    model = modeling.BertModel(modeling.BertConfig(**TINY), random_init=False)
    shapes = modeling.parameter_shapes(model.config)
    for name, param in model.namedparams():
        assert param.shape == shapes[name.lstrip('/')], name
        if name.endswith('/W'):
            assert not param.array.any(), name
    # Chainer fills a constructed parameter's gradient with NaN: the weights of a model
    # a checkpoint fills have none (that was as much memory again as the weights).
    assert model.word_embeddings.W.grad is None
    assert model.encoder.layer_1.intermediate_dense1.W.grad is None


def test_read_only_load_maps_the_aligned_arrays_and_matches_a_read(tmp_path):
    source = tiny_model(seed=2)
    arrays = npz_of(source, tmp_path / 'm.npz')
    ids = np.array([[1, 5, 7, 2, 0]], np.int32)
    mask = np.array([[1, 1, 1, 1, 0]], np.int32)
    copied = modeling.BertModel(source.config, random_init=False)
    modeling.load_pretrained(copied, str(tmp_path / 'm.npz'))
    mapped = modeling.BertModel(source.config, random_init=False)
    modeling.load_pretrained(mapped, str(tmp_path / 'm.npz'), read_only=True)
    kinds = set()
    for name, param in mapped.namedparams():
        assert np.array_equal(param.array, arrays['bert/' + name.lstrip('/')]), name
        kinds.add(param.array.flags.writeable)
        assert param.array.flags.aligned, name
    assert kinds == {True, False}  # some members are aligned for float32 in the file
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        np.testing.assert_array_equal(mapped.encode(ids, mask, pooling='mean').array,
                                      copied.encode(ids, mask, pooling='mean').array)


def test_read_only_load_still_refuses_non_finite_values(tmp_path):
    arrays = npz_of(tiny_model(), tmp_path / 'm.npz')
    for name in arrays:  # a NaN in every array, mapped or read
        arrays[name] = arrays[name].copy()
        arrays[name].flat[-1] = np.nan
    np.savez(tmp_path / 'nan.npz', **arrays)
    target = modeling.BertModel(modeling.BertConfig(**TINY), random_init=False)
    with pytest.raises(UsageError, match='nan.npz: array .* holds NaN or infinite values'):
        modeling.load_pretrained(target, str(tmp_path / 'nan.npz'), read_only=True)
    from bertlib import checkpoints
    with checkpoints.NpzReader(str(tmp_path / 'nan.npz')) as archive:
        mappable = [n for n in archive.files if n in archive.offsets
                    and archive.offsets[n] % 4 == 0]
        assert mappable
        for name in mappable:
            with pytest.raises(UsageError, match='holds NaN'):
                archive.map(name, np.float32)


def test_load_pretrained_names_missing_unexpected_and_misshaped(tmp_path):
    arrays = npz_of(tiny_model(), tmp_path / 'm.npz')
    del arrays['bert/pooler/b']
    arrays['bert/encoder/layer_9/attention/query/W'] = np.zeros((16, 16), np.float32)
    arrays['bert/word_embeddings/W'] = np.zeros((41, 16), np.float32)
    np.savez(tmp_path / 'bad.npz', **arrays)
    target = modeling.BertModel(modeling.BertConfig(**TINY), random_init=False)
    with pytest.raises(UsageError) as info:
        modeling.load_pretrained(target, str(tmp_path / 'bad.npz'))
    message = str(info.value)
    assert 'bad.npz does not fit the model' in message
    assert 'bert/pooler/b' in message
    assert 'bert/encoder/layer_9/attention/query/W' in message
    assert 'bert/word_embeddings/W: checkpoint (41, 16), model (40, 16)' in message


def test_load_pretrained_unreadable_file(tmp_path):
    (tmp_path / 'junk.npz').write_bytes(b'not a zip file')
    target = modeling.BertModel(modeling.BertConfig(**TINY), random_init=False)
    with pytest.raises(UsageError, match='junk.npz'):
        modeling.load_pretrained(target, str(tmp_path / 'junk.npz'))


def test_config_reads_google_and_hugging_face_files(tmp_path):
    google = dict(TINY, hidden_act='gelu', initializer_range=0.02)
    (tmp_path / 'bert_config.json').write_text(json.dumps(google))
    config = modeling.BertConfig.from_json_file(str(tmp_path / 'bert_config.json'))
    assert config.hidden_size == 16 and config.layer_norm_eps == 1e-12
    hf = dict(TINY, layer_norm_eps=1e-5, model_type='bert', architectures=['BertModel'])
    (tmp_path / 'config.json').write_text(json.dumps(hf))
    config = modeling.BertConfig.from_json_file(str(tmp_path / 'config.json'))
    assert config.layer_norm_eps == 1e-5


@pytest.mark.parametrize('content, message', [
    ('{"hidden_size": 8', 'not valid JSON'),
    ('{"hidden_size": 8}', 'vocab_size'),
    (json.dumps(dict(TINY, hidden_size=15)), 'multiple of num_attention_heads'),
    (json.dumps(dict(TINY, hidden_act='swish7')), 'hidden_act'),
])
def test_config_errors_name_the_file(tmp_path, content, message):
    path = tmp_path / 'bert_config.json'
    path.write_text(content)
    with pytest.raises(modeling.ConfigError) as info:
        modeling.BertConfig.from_json_file(str(path))
    assert message in str(info.value) and 'bert_config.json' in str(info.value)
    with pytest.raises(UsageError) as info:  # what the scripts print as `error: ...`
        bert_loading.read_bert_config(str(path))
    assert message in str(info.value) and str(path) in str(info.value)
