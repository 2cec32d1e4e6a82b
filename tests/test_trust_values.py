"""Hostile values (issue 26, items 5-8): every field of bert_config.json has its type and
range, and the config is compared with the checkpoint before the model is built; a
vocabulary holds each token once, one per embedding row; values are checked finite in
the dtype they are used in; model metadata and head shapes are checked when the model is
read, and an encrypted npz member is refused. Each is a UsageError naming the file."""

import json
import pickle
import shutil

import numpy as np
import pytest

import cluster_features
import extruct_bert_classified
import extruct_bert_embed
import extruct_bert_metrics
from bertlib import bert_loading, checkpoints, classifier, convert, dml, featurefile, modeling
from bertlib import tokenization
from bertlib.errors import UsageError
from bertlib.testing import SPECIAL_TOKENS, encrypt_zip_member, write_hf_copy
from conftest import WORDS, model_flags, write_random_bert

NPZ = 'arrays_bert_model.ckpt.npz'


@pytest.fixture(scope='module')
def world(tmp_path_factory):
    """A tiny BERT, a DML and a classifier model file made from it (random heads, as
    train_dml.py and train_classifier.py write them), and two input lines."""
    root = tmp_path_factory.mktemp('values')
    bert_folder = write_random_bert(root / 'bert', WORDS, hidden_size=16,
                                    num_hidden_layers=1, intermediate_size=32)
    config = modeling.BertConfig.from_json_file(str(bert_folder / 'bert_config.json'))
    bert = modeling.BertModel(config)
    modeling.load_pretrained(bert, str(bert_folder / NPZ))
    (root / 'dml').mkdir()
    checkpoints.save_model(str(root / 'dml' / 'final.model'),
                           dml.DMLModel(bert, dim=8, pooling='mean'),
                           meta={'kind': 'dml', 'pooling': 'mean', 'dim': 8, 'head': 'linear',
                                 'loss': 'supcon', 'classes': 2})
    (root / 'cls').mkdir()
    checkpoints.save_model(str(root / 'cls' / 'final.model'),
                           classifier.ClassifierModel(bert, 2),
                           meta={'kind': 'classifier', 'classes': 2})
    for kind in ('dml', 'cls'):
        checkpoints.save_labels(str(root / kind / 'labels.bin'), {'neg': 0, 'pos': 1})
    (root / 'in.txt').write_text('pos\tgood film\nneg\tbad plot\n')
    return root


def copy(world, name, tmp_path):
    shutil.copytree(world / name, tmp_path / name)
    return tmp_path / name


def embed(world, bert, tmp_path):
    extruct_bert_embed.main(['--input', str(world / 'in.txt'), '-o', str(tmp_path / 'o.tsv')]
                            + model_flags(bert))


def extract(script, world, folder, tmp_path, bert=None):
    script.main(['--input', str(world / 'in.txt'), '-o', str(tmp_path / 'o.tsv'),
                 '--model', str(folder / 'final.model'), '--label', str(folder / 'labels.bin')]
                + model_flags(bert or world / 'bert'))


def forbid_building(monkeypatch):
    """Makes building a BertModel fail the test: what is refused must be refused first."""
    def built(*args, **kwargs):
        raise AssertionError('a BertModel was built before the refusal')
    monkeypatch.setattr(modeling.BertModel, '__init__', built)


def rewrite_npz(path, change):
    with np.load(path, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    change(arrays)
    with open(path, 'wb') as f:  # np.savez would add '.npz' to a name without it
        np.savez(f, **arrays)


def edit_meta(path, **changes):
    def change(arrays):
        meta = json.loads(str(arrays['meta/json']))
        meta.update(changes)
        arrays['meta/json'] = np.array(json.dumps(meta))
    rewrite_npz(path, change)


# --- 5: bert_config.json --------------------------------------------------------------

@pytest.mark.parametrize('changes, message', [
    (dict(layer_norm_eps=float('nan')), '"layer_norm_eps" must be a positive number'),
    (dict(layer_norm_eps=-1.0), '"layer_norm_eps" must be a positive number'),
    (dict(layer_norm_eps='1e-12'), '"layer_norm_eps" must be a positive number'),
    (dict(layer_norm_eps=1e-50), 'not 0 in float32'),
    (dict(hidden_act=['gelu']), r'hidden_act \["gelu"\] is not one of gelu'),
    (dict(hidden_dropout_prob=1.0), '"hidden_dropout_prob" must be a probability'),
    (dict(hidden_dropout_prob='0.1'), '"hidden_dropout_prob" must be a probability'),
    (dict(attention_probs_dropout_prob=-0.5), '"attention_probs_dropout_prob" must be'),
    (dict(initializer_range=float('nan')), '"initializer_range" must be a number'),
    (dict(num_hidden_layers=True), '"num_hidden_layers" must be an integer from 1 to 1024, '
                                   'got true'),
    (dict(vocab_size=20.0), '"vocab_size" must be an integer'),
    (dict(intermediate_size=10 ** 9), '"intermediate_size" must be an integer from 1 to'),
    (dict(num_hidden_layers=10 ** 6), '"num_hidden_layers" must be an integer from 1 to'),
    (dict(hidden_size=1 << 16, num_attention_heads=1, vocab_size=1 << 22),
     'more than the 4294967296 accepted'),
])
def test_every_config_field_has_its_type_and_range(tmp_path, changes, message):
    config = dict(modeling.BertConfig(vocab_size=20).to_dict(), **changes)
    path = tmp_path / 'bert_config.json'
    path.write_text(json.dumps(config))
    with pytest.raises(UsageError, match=message) as info:
        bert_loading.read_bert_config(str(path))
    assert str(path) in str(info.value)


@pytest.mark.parametrize('text, message', [
    ('{"vocab_size": 20, "x": %s1%s}' % ('[' * 100000, ']' * 100000), 'nested too deeply'),
    ('{"vocab_size": %s}' % ('9' * 5000), 'not valid JSON'),
])
def test_a_config_that_python_cannot_parse_is_named(tmp_path, text, message):
    path = tmp_path / 'bert_config.json'
    path.write_text(text)
    with pytest.raises(UsageError, match=message):
        bert_loading.read_bert_config(str(path))


def test_parameter_shapes_are_those_of_the_model():
    config = modeling.BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=2,
                                 num_attention_heads=2, intermediate_size=12,
                                 max_position_embeddings=16, type_vocab_size=3)
    model = modeling.BertModel(config, random_init=False)
    assert modeling.parameter_shapes(config) == {
        name.lstrip('/'): param.shape for name, param in model.namedparams()}


@pytest.mark.parametrize('script', ['embed', 'metrics', 'classified'])
def test_a_config_larger_than_the_checkpoint_is_refused_before_the_model_is_built(
        world, tmp_path, monkeypatch, script):
    """intermediate_size 10**7 with a 26 kB checkpoint cost 2.8 GB before its refusal
    (now the size limit refuses it; 200,000 is within the limit)."""
    bert = copy(world, 'bert', tmp_path)
    config = json.loads((bert / 'bert_config.json').read_text())
    (bert / 'bert_config.json').write_text(json.dumps(dict(config, intermediate_size=200000)))

    forbid_building(monkeypatch)
    with pytest.raises(UsageError, match=r'does not fit the BERT that .*bert_config.json '
                                         r'describes: 3 arrays of another shape'):
        if script == 'embed':
            embed(world, bert, tmp_path)
        else:
            extract(extruct_bert_metrics if script == 'metrics' else extruct_bert_classified,
                    world, world / ('dml' if script == 'metrics' else 'cls'), tmp_path, bert)


def test_a_header_must_declare_the_bytes_its_member_holds(world, tmp_path):
    """The shapes compared with the config are those of the data, not of a lying header."""
    bert = copy(world, 'bert', tmp_path)
    path = bert / NPZ
    with np.load(path) as archive:
        arrays = {k: archive[k] for k in archive.files}
    import zipfile
    with zipfile.ZipFile(path, 'w') as z:
        for name, array in arrays.items():
            with z.open(name + '.npy', 'w') as f:
                if name != 'bert/pooler/b':
                    np.lib.format.write_array(f, array)
                else:
                    np.lib.format.write_array_header_1_0(
                        f, {'descr': '<f4', 'fortran_order': False, 'shape': (10 ** 7,)})
                    f.write(array.tobytes())
    with pytest.raises(UsageError, match=r"damaged array 'bert/pooler/b': its header declares "
                                         r"\(10000000,\) float32 \(40000000 bytes\) but it "
                                         r"holds 64 bytes"):
        embed(world, bert, tmp_path)


def test_convert_checks_the_config_before_the_tensors(world, tmp_path, capsys):
    source = tmp_path / 'hf'
    write_hf_copy(world / 'bert', source)
    config = json.loads((source / 'config.json').read_text())
    (source / 'config.json').write_text(json.dumps(dict(config, num_hidden_layers=10 ** 6)))
    assert convert.main([str(source), str(tmp_path / 'out'), '-q']) == 2
    assert capsys.readouterr().err.splitlines() == [
        'error: %s: "num_hidden_layers" must be an integer from 1 to 1024, got 1000000'
        % (source / 'config.json')]
    assert not (tmp_path / 'out').exists()


# --- 6: vocab.txt ---------------------------------------------------------------------

@pytest.mark.parametrize('where', ['last', 'middle'])
def test_a_token_given_twice_is_refused_naming_both_lines(world, tmp_path, where):
    """At the end it was an IndexError; in the middle, silently wrong ids."""
    bert = copy(world, 'bert', tmp_path)
    words = SPECIAL_TOKENS + WORDS
    if where == 'last':
        words = words + ['good']
        message = r"line 21 repeats the token 'good' of line 6"
    else:
        words = words[:13] + ['dull'] + words[13:]
        message = r"line 14 repeats the token 'dull' of line 13"
    (bert / 'vocab.txt').write_text('\n'.join(words) + '\n')
    with pytest.raises(UsageError, match=message):
        embed(world, bert, tmp_path)
    source = tmp_path / 'hf'
    write_hf_copy(bert, source)
    with pytest.raises(UsageError, match=message):
        convert.convert(str(source), str(tmp_path / 'out'))


def test_a_vocabulary_must_have_one_entry_per_embedding_row(world, tmp_path):
    bert = copy(world, 'bert', tmp_path)
    words = SPECIAL_TOKENS + WORDS
    (bert / 'vocab.txt').write_text('\n'.join(words[:-2]) + '\n')
    with pytest.raises(UsageError, match=r'vocab.txt has 18 entries but .*ckpt.npz '
                                         r'\(vocab_size in .*bert_config.json\) has 20 word '
                                         r'embeddings'):
        embed(world, bert, tmp_path)
    # The config made to agree with the short vocabulary: the checkpoint's rows differ.
    config = json.loads((bert / 'bert_config.json').read_text())
    (bert / 'bert_config.json').write_text(json.dumps(dict(config, vocab_size=18)))
    with pytest.raises(UsageError, match=r'bert/word_embeddings/W: checkpoint \(20, 16\), '
                                         r'model \(18, 16\)'):
        embed(world, bert, tmp_path)
    with pytest.raises(UsageError, match='18 entries but the model has 20 word embeddings'):
        tokenization.check_vocab_size(range(18), 'vocab.txt', 20, 'the model')


# --- 7: finite in the dtype used ------------------------------------------------------

def test_values_that_overflow_float32_are_refused(world, tmp_path):
    """1e300 is finite in float64, infinite once cast: it gave a LayerNorm traceback from
    a checkpoint, NaN features with exit 0 from a head or a centre."""
    bert = copy(world, 'bert', tmp_path)
    rewrite_npz(bert / NPZ, lambda a: a.__setitem__(
        'bert/post_embedding_ln/gamma', np.full((16,), 1e300)))
    with pytest.raises(UsageError, match=r"'bert/post_embedding_ln/gamma' holds values too "
                                         r"large for float32 .*stored as float64"):
        embed(world, bert, tmp_path)
    folder = copy(world, 'dml', tmp_path)
    rewrite_npz(folder / 'final.model', lambda a: a.__setitem__(
        'output/W', np.full((8, 16), 1e300)))
    with pytest.raises(UsageError, match="'output/W' holds values too large for float32"):
        extract(extruct_bert_metrics, world, folder, tmp_path)
    assert not (tmp_path / 'o.tsv').exists()
    folder = copy(world, 'dml', tmp_path / 'centre')
    edit_meta(folder / 'final.model', centre=[1e300] * 8)
    with pytest.raises(UsageError, match='centre is not a list of 8 finite numbers '
                                         r'\(in float32'):
        extract(extruct_bert_metrics, world, folder, tmp_path)


def test_a_feature_that_overflows_float32_is_named(tmp_path):
    rows = ['%s\t%d\t1\t2' % ('ab'[i % 2], i) for i in range(8)]
    rows[3] = 'b\t1e300\t1\t2'
    (tmp_path / 'f.tsv').write_text('\n'.join(rows) + '\n')
    message = r'f.tsv, line 4, column 2: 1e300 is too large for float32'
    with pytest.raises(UsageError, match=message):
        featurefile.read_features(str(tmp_path / 'f.tsv'))
    with pytest.raises(UsageError, match=message):  # the analysis scripts read it so
        cluster_features.main(['--input', str(tmp_path / 'f.tsv'), '-o',
                               str(tmp_path / 'c.png'), '--plots', '0'])
    assert not (tmp_path / 'c.tsv').exists()


@pytest.mark.parametrize('value, dtype, message', [
    (1e300, np.float64, 'values too large for float32'),
    (np.nan, np.float32, 'NaN or infinite values'),
])
def test_convert_writes_no_nan_or_overflowed_weights(world, tmp_path, value, dtype, message):
    from safetensors.numpy import load_file, save_file
    source = tmp_path / 'hf'
    write_hf_copy(world / 'bert', source)
    tensors = load_file(str(source / 'model.safetensors'))
    tensors['embeddings.LayerNorm.weight'] = np.full((16,), value, dtype=dtype)
    save_file(tensors, str(source / 'model.safetensors'))
    with pytest.raises(UsageError, match="'embeddings.LayerNorm.weight' holds " + message):
        convert.convert(str(source), str(tmp_path / 'out'))
    assert not (tmp_path / 'out' / NPZ).exists()


# --- 8: model metadata and shapes -----------------------------------------------------

def test_an_unknown_pooling_is_refused_when_the_model_is_read(world, tmp_path, monkeypatch):
    folder = copy(world, 'dml', tmp_path)
    edit_meta(folder / 'final.model', pooling='max')
    forbid_building(monkeypatch)
    with pytest.raises(UsageError, match="final.model: model metadata pooling is 'max', "
                                         "not one of pooled, cls, mean"):
        extract(extruct_bert_metrics, world, folder, tmp_path)


@pytest.mark.parametrize('kind', ['dml', 'cls'])
def test_an_empty_head_is_refused(world, tmp_path, kind):
    """A (0, 16) head exited 0, writing labels without features."""
    folder = copy(world, kind, tmp_path)

    def empty(arrays):
        arrays['output/W'] = np.zeros((0, 16), np.float32)
        arrays['output/b'] = np.zeros((0,), np.float32)
    rewrite_npz(folder / 'final.model', empty)
    edit_meta(folder / 'final.model', **({'dim': 0} if kind == 'dml' else {'classes': 0}))
    if kind == 'cls':
        (folder / 'labels.bin').write_bytes(pickle.dumps({}, protocol=2))
    with pytest.raises(UsageError, match=r'final.model: array output/W has shape \(0, 16\): '
                                         r'an empty layer'):
        extract(extruct_bert_metrics if kind == 'dml' else extruct_bert_classified,
                world, folder, tmp_path)
    assert not (tmp_path / 'o.tsv').exists()


@pytest.mark.parametrize('member', ['bert/pooler/W.npy', 'meta/json.npy'])
def test_an_encrypted_member_is_refused(world, tmp_path, member):
    folder = copy(world, 'dml', tmp_path)
    encrypt_zip_member(folder / 'final.model', member)
    with pytest.raises(UsageError, match=r"final.model: array '%s' is encrypted"
                                         % member[:-4]):
        checkpoints.NpzReader(str(folder / 'final.model'))
    with pytest.raises(UsageError, match='is encrypted'):
        extract(extruct_bert_metrics, world, folder, tmp_path)


def test_the_untouched_files_still_work(world, tmp_path):
    """Nothing was lost: the same files, unchanged, still extract."""
    embed(world, world / 'bert', tmp_path)
    assert len((tmp_path / 'o.tsv').read_text().splitlines()) == 2
    extract(extruct_bert_metrics, world, world / 'dml', tmp_path)
    assert len((tmp_path / 'o.tsv').read_text().splitlines()[0].split('\t')) == 9
    extract(extruct_bert_classified, world, world / 'cls', tmp_path)
    assert len((tmp_path / 'o.tsv').read_text().splitlines()[0].split('\t')) == 17
