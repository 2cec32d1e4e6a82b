"""python -m bertlib.export: the folders it writes, their tokenizer, its refusals; and, in
the slow suite, the round trips through sentence-transformers and transformers
(BERTLIB_TORCH_PYTHON, build/torch-venv: bench/torch_export_check.py in a subprocess)."""

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from bertlib import checkpoints, export, tokenization
from bertlib.testing import (MULTILINGUAL_DIR, ROOT, model_flags,
                             sentencepiece_model_flags, write_random_bert,
                             write_random_sentencepiece_bert)

# A vocabulary in which the spelled-out special tokens have pieces of their own.
WORDS = ['the', 'film', 'was', 'good', 'bad', '[', ']', 'cls', 'sep', 'mask', 'pad', '.',
         '!', 'cafe', 'naive', 'ο', '##δ', '##ος', '##ο', '##σ', '##ς', 'a', '##a', 'e',
         'query', ':', 'CLS', 'SEP', 'The', 'Film', '…', '漢', '字', '##s', '[unused0]']
TRICKY = ['the film was good', 'good [CLS] film [SEP] was [MASK] [PAD] [UNK]!',
          'THE FILM WAS BAD', 'Café naïve', 'ΟΔΟΣ ΟΔΟΣ.', 'the\tfilm\x00was\u200bgood',
          'a' * 150 + ' film', 'the film . . . was', '漢字 the漢film', '', 'The Film CLS',
          'e\u0301 e\u0903 \u0915\u093e', '\ufffdthe \ue000film']


def write_model(path, bert, kind='dml', pooling='mean', head='linear', dim=6, centre=True,
                prefix='', loss=False, classes=2, seed=1):
    """A model file as train_dml.py / train_classifier.py write it, with random weights
    (the exactness of an export needs no training) and labels.bin beside it. The centre
    is a random vector of length 0.3: far from the features, so that subtracting it
    does not magnify rounding."""
    rng = np.random.RandomState(seed)
    with np.load(str(bert / 'arrays_bert_model.ckpt.npz')) as archive:
        arrays = {name: archive[name] for name in archive.files}
    hidden = arrays['bert/pooler/b'].shape[0]
    meta = {'kind': kind, 'classes': classes, 'text_prefix': prefix, 'epoch': 1,
            'train_file': 'train.txt', 'eval_file': 'eval.txt'}
    if kind == 'dml':
        meta.update(pooling=pooling, head=head, loss='arcface' if loss else 'supcon')
        width = dim if head == 'linear' else hidden
        if centre:
            direction = rng.normal(size=width)
            meta['centre'] = [float(v) for v in 0.3 * direction / np.linalg.norm(direction)]
    if kind == 'classifier' or head == 'linear':
        out = classes if kind == 'classifier' else dim
        arrays['output/W'] = rng.normal(0, 0.5, (out, hidden)).astype(np.float32)
        arrays['output/b'] = rng.normal(0, 0.1, (out,)).astype(np.float32)
    if loss:
        arrays['loss/W'] = rng.normal(size=(classes, dim)).astype(np.float32)
    arrays[checkpoints.META_KEY] = np.array(json.dumps(meta))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(str(path), 'wb') as stream:  # np.savez would add .npz to the name
        np.savez(stream, **arrays)
    names = ['neg', 'pos', 'neutral'][:classes]
    checkpoints.save_labels(str(path.parent / 'labels.bin'),
                            {name: i for i, name in enumerate(names)})
    return path, path.parent / 'labels.bin'


@pytest.fixture
def bert(tmp_path):
    return write_random_bert(tmp_path / 'bert', WORDS, hidden_size=16, num_hidden_layers=1,
                             intermediate_size=32)


def run_export(bert, output, *extra, flags=None):
    return export.main((flags or model_flags(bert)) + ['--output', str(output)]
                       + [str(e) for e in extra])


def read_json(path):
    return json.loads(path.read_text(encoding='utf-8'))


# ---------------------------------------------------------------------------------------
# Folders


def test_dml_folder_holds_the_pipeline_of_the_model(tmp_path, bert, capsys):
    model, labels = write_model(tmp_path / 'dml' / 'final.model', bert, pooling='pooled',
                                prefix='query: ')
    out = tmp_path / 'st'
    assert run_export(bert, out, '--model', model, '--label', labels) == 0
    assert 'sentence-transformers folder (DML model)' in capsys.readouterr().out
    modules = read_json(out / 'modules.json')
    assert [m['type'].rsplit('.', 1)[1] for m in modules] == [
        'Transformer', 'Pooling', 'Dense', 'Dense', 'Normalize', 'Dense', 'Normalize']
    assert [m['path'] for m in modules] == ['', '1_Pooling', '2_Dense', '3_Dense',
                                             '4_Normalize', '5_Dense', '6_Normalize']
    assert read_json(out / '1_Pooling' / 'config.json')['pooling_mode_cls_token'] is True
    pooler = read_json(out / '2_Dense' / 'config.json')
    assert pooler['activation_function'].endswith('Tanh') and pooler['out_features'] == 16
    assert read_json(out / '3_Dense' / 'config.json')['activation_function'].endswith(
        'Identity')
    from safetensors.numpy import load_file
    with np.load(str(model)) as archive:
        centre = np.array(json.loads(str(archive['meta/json']))['centre'], np.float32)
        head = load_file(str(out / '3_Dense' / 'model.safetensors'))
        np.testing.assert_array_equal(head['linear.weight'], archive['output/W'])
        bert_tensors = load_file(str(out / 'model.safetensors'))
        np.testing.assert_array_equal(bert_tensors['pooler.dense.weight'],
                                      archive['bert/pooler/W'])
        np.testing.assert_array_equal(
            bert_tensors['encoder.layer.0.attention.self.query.weight'],
            archive['bert/encoder/layer_0/attention/query/W'])
    shift = load_file(str(out / '5_Dense' / 'model.safetensors'))
    np.testing.assert_array_equal(shift['linear.weight'], np.eye(6, dtype=np.float32))
    np.testing.assert_array_equal(shift['linear.bias'], -centre)
    settings = read_json(out / 'config_sentence_transformers.json')
    assert settings['prompts'] == {'default': 'query: '}
    assert settings['default_prompt_name'] == 'default'
    config = read_json(out / 'config.json')
    assert config['model_type'] == 'bert' and config['hidden_size'] == 16
    assert config['vocab_size'] == len(WORDS) + 5
    assert read_json(out / 'sentence_bert_config.json') == {'max_seq_length': 128,
                                                            'do_lower_case': False}
    card = (out / 'README.md').read_text()
    assert 'query: ' in card and 'train.txt' in card and 'minus the stored centre' in card
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.')]  # no leftovers


@pytest.mark.parametrize('pooling,head,centre,expected', [
    ('mean', 'none', False, ['Transformer', 'Pooling']),
    ('cls', 'linear', False, ['Transformer', 'Pooling', 'Dense']),
    ('mean', 'none', True, ['Transformer', 'Pooling', 'Normalize', 'Dense', 'Normalize']),
])
def test_modules_follow_pooling_head_and_centre(tmp_path, bert, pooling, head, centre,
                                                expected):
    model, labels = write_model(tmp_path / 'm' / 'final.model', bert, pooling=pooling,
                                head=head, centre=centre)
    run_export(bert, tmp_path / 'st', '--model', model, '--label', labels)
    modules = read_json(tmp_path / 'st' / 'modules.json')
    assert [m['type'].rsplit('.', 1)[1] for m in modules] == expected
    pool = read_json(tmp_path / 'st' / '1_Pooling' / 'config.json')
    assert pool['pooling_mode_mean_tokens'] == (pooling == 'mean')
    assert read_json(tmp_path / 'st' / 'config_sentence_transformers.json')['prompts'] == {}


def test_pretrained_export_takes_pooling_and_prefix(tmp_path, bert):
    run_export(bert, tmp_path / 'st', '--pooling', 'pooled', '--text_prefix', 'passage: ')
    modules = read_json(tmp_path / 'st' / 'modules.json')
    assert [m['type'].rsplit('.', 1)[1] for m in modules] == ['Transformer', 'Pooling',
                                                              'Dense']
    assert read_json(tmp_path / 'st' / 'config_sentence_transformers.json')['prompts'] == {
        'default': 'passage: '}



def test_bert_dir_exports_the_same_folder_as_the_three_flags(tmp_path, bert):
    run_export(bert, tmp_path / 'three', '--pooling', 'mean')
    run_export(bert, tmp_path / 'dir', '--pooling', 'mean', flags=['--bert_dir', str(bert)])
    three = sorted(p.relative_to(tmp_path / 'three') for p in (tmp_path / 'three').rglob('*')
                   if p.is_file())
    assert three == sorted(p.relative_to(tmp_path / 'dir')
                           for p in (tmp_path / 'dir').rglob('*') if p.is_file())
    for name in three:
        if name.name != 'README.md':  # the card names the files it was given
            assert ((tmp_path / 'three' / name).read_bytes()
                    == (tmp_path / 'dir' / name).read_bytes()), name

def test_classifier_folder_names_the_labels(tmp_path, bert):
    model, labels = write_model(tmp_path / 'c' / 'final.model', bert, kind='classifier',
                                classes=3)
    run_export(bert, tmp_path / 'hf', '--model', model, '--label', labels)
    config = read_json(tmp_path / 'hf' / 'config.json')
    assert config['architectures'] == ['BertForSequenceClassification']
    assert config['id2label'] == {'0': 'neg', '1': 'pos', '2': 'neutral'}
    assert config['label2id'] == {'neg': 0, 'pos': 1, 'neutral': 2}
    from safetensors.numpy import load_file
    tensors = load_file(str(tmp_path / 'hf' / 'model.safetensors'))
    assert tensors['classifier.weight'].shape == (3, 16)
    assert 'bert.pooler.dense.weight' in tensors
    assert not (tmp_path / 'hf' / 'modules.json').exists()


def test_arcface_proxies_are_dropped_and_the_card_says_so(tmp_path, bert):
    model, labels = write_model(tmp_path / 'a' / 'final.model', bert, loss=True)
    run_export(bert, tmp_path / 'st', '--model', model, '--label', labels)
    from safetensors.numpy import load_file
    names = set()
    for root, _, files in os.walk(str(tmp_path / 'st')):
        for name in files:
            if name.endswith('.safetensors'):
                names |= set(load_file(os.path.join(root, name)))
    assert not [n for n in names if 'loss' in n]
    assert '`loss/W`' in (tmp_path / 'st' / 'README.md').read_text()


# ---------------------------------------------------------------------------------------
# The tokenizer


def exported_ids(folder, texts):
    from tokenizers import Tokenizer
    tokenizer = Tokenizer.from_file(str(folder / 'tokenizer.json'))
    return [tokenizer.encode(text).ids for text in texts]


@pytest.mark.parametrize('lower', ['true', 'false'])
def test_tokenizer_json_cuts_as_bertlib(tmp_path, bert, lower):
    run_export(bert, tmp_path / 'st', '--do_lower_case', lower, '--max_seq_length', '12',
               '--join_ellipsis')
    ours = tokenization.FullTokenizer(str(bert / 'vocab.txt'), do_lower_case=lower == 'true',
                                      join_ellipsis=True)
    expected = [ours.encode(text, 12)[0] for text in TRICKY]
    assert exported_ids(tmp_path / 'st', TRICKY) == expected
    # The literal special tokens are text: '[', 'cls', ']', not id 2.
    words = ours.convert_ids_to_tokens(expected[1])
    assert words[:4] == ['[CLS]', 'good', '[', 'cls' if lower == 'true' else 'CLS']
    assert words[4] == ']' and expected[6][1] == ours.vocab['[UNK]']  # 150 characters


@pytest.mark.parametrize('lower', ['true', 'false'])
def test_transformers_tokenizer_keeps_special_tokens_as_text(tmp_path, bert, lower):
    """What sentence-transformers calls: transformers' fast tokenizer of the folder. It
    is told of the padding token alone, one the normalisation leaves as it is, so that a
    special token spelled in the text is cut as ours cuts it."""
    transformers = pytest.importorskip('transformers')
    run_export(bert, tmp_path / 'st', '--do_lower_case', lower)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path / 'st'))
    assert tokenizer.pad_token == ('[unused0]' if lower == 'true' else '[PAD]')
    ours = tokenization.FullTokenizer(str(bert / 'vocab.txt'), do_lower_case=lower == 'true')
    for text in TRICKY + ['[unused0] the [PAD]']:
        assert tokenizer(text, truncation=True)['input_ids'] == ours.encode(text, 128)[0], text


def test_demo_vocabulary_cuts_random_unicode_as_bertlib(tmp_path):
    vocab_file = ROOT / 'BERT' / 'all-MiniLM-L6-v2' / 'vocab.txt'
    if not vocab_file.is_file():
        pytest.skip('%s is absent (make model)' % vocab_file)
    import random
    import unicodedata
    from tokenizers import Tokenizer
    vocab = tokenization.load_vocab(str(vocab_file))
    rng = random.Random(0)

    def character():
        while True:
            c = chr(rng.choice([rng.randrange(32, 0x2FF), rng.randrange(0x300, 0xD800),
                                rng.randrange(0xE000, 0x30000), 32]))
            if unicodedata.category(c) != 'Cn':  # unassigned in Python's Unicode
                return c
    texts = TRICKY + [''.join(character() for _ in range(rng.randrange(1, 25)))
                      for _ in range(1500)]
    for lower in (True, False):
        ours = tokenization.FullTokenizer(str(vocab_file), do_lower_case=lower, vocab=vocab)
        exported = Tokenizer.from_str(export.wordpiece_tokenizer_json(vocab, lower, True, 64))
        mismatched = [t for t in texts if exported.encode(t).ids != ours.encode(t, 64)[0]]
        assert not mismatched, mismatched[:3]


def test_sentencepiece_model_exports_its_tokenizer_json(tmp_path):
    from bertlib.sentencepiece_tokenization import SentencePieceTokenizer
    folder = write_random_sentencepiece_bert(tmp_path / 'sp', ['the', 'film', 'was', 'good'])
    out = tmp_path / 'st'
    export.main(sentencepiece_model_flags(folder) + ['--output', str(out), '--pooling',
                                                     'mean', '--max_seq_length', '6'])
    assert not (out / 'vocab.txt').exists()
    ours = SentencePieceTokenizer(str(folder / 'tokenizer.json'))
    texts = ['the film was good', 'good film <s> was', 'the film was good the film']
    assert exported_ids(out, texts) == [ours.encode(t, 6)[0] for t in texts]
    assert read_json(out / 'tokenizer_config.json')['pad_token'] == '<pad>'


# ---------------------------------------------------------------------------------------
# Refusals: one error line, exit 2, nothing written


def refused(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        from bertlib import process
        process.run(lambda: export.main(argv))
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith('error: ')
    assert 'Traceback' not in '\n'.join(err)
    return err[-1]


def test_refusals(tmp_path, bert, capsys):
    dml_model, dml_labels = write_model(tmp_path / 'd' / 'final.model', bert, classes=2)
    cls_model, cls_labels = write_model(tmp_path / 'c' / 'final.model', bert,
                                        kind='classifier', classes=3)
    other = write_random_bert(tmp_path / 'other', WORDS, hidden_size=8, num_hidden_layers=1,
                              intermediate_size=16)
    out = tmp_path / 'out'
    flags = model_flags(bert)
    # A model of another BERT.
    line = refused(model_flags(other) + ['--model', str(dml_model), '--label',
                                         str(dml_labels), '--output', str(out)], capsys)
    assert str(dml_model) in line and 'does not fit' in line
    # A DML model with a classifier's labels, and the other way.
    line = refused(flags + ['--model', str(dml_model), '--label', str(cls_labels),
                            '--output', str(out)], capsys)
    assert str(cls_labels) in line
    line = refused(flags + ['--model', str(cls_model), '--label', str(dml_labels),
                            '--output', str(out)], capsys)
    assert str(dml_labels) in line
    # A non-empty output, and an output holding an input even with --force.
    busy = tmp_path / 'busy'
    busy.mkdir()
    (busy / 'keep.txt').write_text('mine')
    line = refused(flags + ['--output', str(busy)], capsys)
    assert 'not empty' in line and (busy / 'keep.txt').read_text() == 'mine'
    line = refused(flags + ['--output', str(bert), '--force'], capsys)
    assert 'holds an input' in line
    # --label without --model; a pickle that is not a label dict.
    line = refused(flags + ['--label', str(dml_labels), '--output', str(out)], capsys)
    assert '--label' in line
    evil = tmp_path / 'evil.bin'
    evil.write_bytes(pickle.dumps(os.system))
    line = refused(flags + ['--model', str(dml_model), '--label', str(evil), '--output',
                            str(out)], capsys)
    assert str(evil) in line
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['bert', 'busy', 'c', 'd',
                                                          'evil.bin', 'other']


def test_force_replaces_an_earlier_export(tmp_path, bert):
    out = tmp_path / 'st'
    run_export(bert, out, '--pooling', 'mean')
    (out / 'stale.txt').write_text('old')
    run_export(bert, out, '--pooling', 'cls', '--force')
    assert not (out / 'stale.txt').exists()
    assert read_json(out / '1_Pooling' / 'config.json')['pooling_mode_cls_token'] is True
    assert sorted(p.name for p in tmp_path.iterdir()) == ['bert', 'st']


def test_an_interrupted_export_leaves_nothing(tmp_path, bert, monkeypatch):
    def fail(*args):
        raise KeyboardInterrupt()
    monkeypatch.setattr(export, '_write_safetensors', fail)
    with pytest.raises(KeyboardInterrupt):
        run_export(bert, tmp_path / 'st')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['bert']


# ---------------------------------------------------------------------------------------
# The way in: python -m bertlib.convert reads a sentence-transformers folder


@pytest.mark.parametrize('pooling,head,centre,prefix', [('pooled', 'linear', True, 'query: '),
                                                        ('mean', 'none', False, '')])
def test_converted_export_gives_the_model_s_features_to_the_byte(tmp_path, bert, pooling,
                                                                 head, centre, prefix,
                                                                 capsys, caplog):
    import extruct_bert_embed
    import extruct_bert_metrics
    from bertlib import convert
    model, labels = write_model(tmp_path / 'm' / 'final.model', bert, pooling=pooling,
                                head=head, centre=centre, prefix=prefix)
    run_export(bert, tmp_path / 'st', '--model', model, '--label', labels)
    caplog.set_level('INFO')
    convert.main([str(tmp_path / 'st'), str(tmp_path / 'back')])
    assert 'sentence-transformers folder' in caplog.text and repr(prefix) in caplog.text
    texts = tmp_path / 'in.txt'
    texts.write_text(''.join('x\t%s\n' % t for t in TRICKY if t), encoding='utf-8')
    extruct_bert_metrics.main(model_flags(bert) + ['--model', str(model), '--label',
                                                   str(labels), '--input', str(texts),
                                                   '--output', str(tmp_path / 'a.txt')])
    extruct_bert_embed.main(model_flags(tmp_path / 'back') + [
        '--input', str(texts), '--output', str(tmp_path / 'b.txt')])
    assert (tmp_path / 'a.txt').read_bytes() == (tmp_path / 'b.txt').read_bytes()


def test_convert_refuses_modules_it_cannot_reproduce(tmp_path, bert, capsys):
    from bertlib import convert
    run_export(bert, tmp_path / 'st', '--pooling', 'mean')
    modules_path = tmp_path / 'st' / 'modules.json'
    modules = read_json(modules_path)
    cases = [
        (modules + [{'idx': 2, 'name': '2', 'path': '2_LSTM',
                     'type': 'sentence_transformers.models.LSTM'}], 'LSTM'),
        ([modules[0], dict(modules[1], path='../../etc')], 'outside'),
        ([modules[0], dict(modules[1], path='/etc')], 'not a path inside'),
    ]
    for listed, expected in cases:
        modules_path.write_text(json.dumps(listed))
        assert convert.main([str(tmp_path / 'st'), str(tmp_path / 'back')]) == 2
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert line.startswith('error: ') and expected in line and 'modules.json' in line
        assert not (tmp_path / 'back').exists()
    modules_path.write_text(json.dumps(modules))
    pool = tmp_path / 'st' / '1_Pooling' / 'config.json'
    pool.write_text(json.dumps(dict(read_json(pool), pooling_mode_mean_tokens=False,
                                    pooling_mode_max_tokens=True)))
    assert convert.main([str(tmp_path / 'st'), str(tmp_path / 'back')]) == 2
    assert 'max_tokens' in capsys.readouterr().err


# ---------------------------------------------------------------------------------------
# Round trips (slow): sentence-transformers and transformers against our extractors


def torch_python():
    named = os.environ.get('BERTLIB_TORCH_PYTHON')
    if named:
        return named
    probe = subprocess.run([sys.executable, '-c', 'import sentence_transformers'],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if probe.returncode:
        pytest.skip('sentence-transformers is not installed here (BERTLIB_TORCH_PYTHON '
                    'may name a Python that has it)')
    return sys.executable


def fidelity():
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'export_fidelity', str(ROOT / 'bench' / 'export_fidelity.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ROUND_TRIPS = [('pooled', 'linear', True, 'query: '), ('pooled', 'none', False, ''),
               ('mean', 'linear', False, ''), ('mean', 'none', True, 'passage: '),
               ('cls', 'linear', True, ''), ('cls', 'none', False, 'query: ')]


@pytest.mark.slow
@pytest.mark.parametrize('pooling,head,centre,prefix', ROUND_TRIPS)
def test_sentence_transformers_encodes_as_extruct_bert_metrics(tmp_path, bert, pooling,
                                                               head, centre, prefix):
    bench = fidelity()
    model, labels = write_model(tmp_path / 'm' / 'final.model', bert, pooling=pooling,
                                head=head, centre=centre, prefix=prefix)
    texts = TRICKY[:9] + ['the film was bad', 'good good film'] * 3
    figures = bench.dml_round_trip(model_flags(bert), model, labels, texts, tmp_path,
                                   torch_python())
    assert figures['id_mismatches'] == 0
    assert figures['max_abs'] <= 1e-5 and figures['min_cosine'] >= 0.99999, figures
    # Converted back, the folder gives our features again, to the byte.
    assert figures['converted_identical'], figures


@pytest.mark.slow
def test_transformers_classifies_as_test_classifier(tmp_path, bert):
    bench = fidelity()
    model, labels = write_model(tmp_path / 'c' / 'final.model', bert, kind='classifier',
                                classes=3)
    figures = bench.classifier_round_trip(model_flags(bert), model, labels,
                                          TRICKY[:9] * 2, tmp_path, torch_python())
    assert figures['label_mismatches'] == 0
    assert figures['max_prob_diff'] <= 1e-5, figures


@pytest.mark.slow
def test_demo_model_round_trip(tmp_path):
    demo = ROOT / 'BERT' / 'all-MiniLM-L6-v2'
    if not (demo / 'arrays_bert_model.ckpt.npz').is_file():
        pytest.skip('%s is absent (make model)' % demo)
    bench = fidelity()
    model, labels = write_model(tmp_path / 'm' / 'final.model', demo, pooling='mean',
                                head='linear', dim=32, prefix='query: ')
    texts = TRICKY + ['A gripping, funny film.', 'Das war nicht gut [SEP] wirklich.']
    figures = bench.dml_round_trip(model_flags(demo), model, labels, texts, tmp_path,
                                   torch_python())
    assert figures['id_mismatches'] == 0
    assert figures['max_abs'] <= 1e-5 and figures['min_cosine'] >= 0.99999, figures
    assert figures['converted_identical'], figures


@pytest.mark.slow
def test_multilingual_model_round_trip(tmp_path):
    if not (MULTILINGUAL_DIR / 'arrays_bert_model.ckpt.npz').is_file():
        pytest.skip('%s is absent (make model-multilingual)' % MULTILINGUAL_DIR)
    bench = fidelity()
    flags = sentencepiece_model_flags(MULTILINGUAL_DIR)
    texts = ['国土交通省の道路', 'the film was good', 'Die Bremse <s> quietscht.', '']
    figures = bench.pretrained_round_trip(flags, 'mean', 'passage: ', texts, tmp_path,
                                          torch_python())
    assert figures['id_mismatches'] == 0
    assert figures['max_abs'] <= 1e-5 and figures['min_cosine'] >= 0.99999, figures
    assert figures['converted_identical'], figures


# Builds a sentence-transformers model of a Hugging Face BERT folder with
# sentence-transformers itself (its own, current format) and saves it.
_BUILD_ST = r"""
import sys, torch
from sentence_transformers import SentenceTransformer, models
hf, out = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
transformer = models.Transformer(hf, max_seq_length=24)
dense = models.Dense(16, 6, activation_function=torch.nn.Tanh())
model = SentenceTransformer(modules=[transformer, models.Pooling(16, pooling_mode='mean'),
                                     dense, models.Normalize()],
                            prompts={'query': 'query: ', 'document': ''},
                            default_prompt_name='query')
model.save(out)
"""


@pytest.mark.slow
def test_a_sentence_transformers_folder_converts_to_its_encode(tmp_path):
    """A folder that sentence-transformers wrote (its current module names, a Dense
    with tanh, Normalize, a default prompt, truncation at 24): converted, then
    extruct_bert_embed.py with no flag but the files gives what encode gives."""
    from bertlib import convert
    from bertlib.testing import write_hf_copy
    python = torch_python()
    # Uncased, as transformers' BertTokenizer of a folder with a bare vocab.txt takes it.
    bert = write_random_bert(tmp_path / 'bert', [w for w in WORDS if w == w.lower()],
                             hidden_size=16, num_hidden_layers=1, intermediate_size=32)
    write_hf_copy(bert, tmp_path / 'hf')
    done = subprocess.run([python, '-c', _BUILD_ST, str(tmp_path / 'hf'), str(tmp_path / 'st')],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert convert.main([str(tmp_path / 'st'), str(tmp_path / 'back')]) == 0
    bench = fidelity()
    # Text that spells no special token (Hugging Face's own tokenizer matches them) and
    # no final capital sigma (it lower-cases it to σ where Python and Google give ς).
    texts = [t for t in TRICKY if t and '[' not in t and 'Σ' not in t] + [
        'the film was good ' * 10]
    ours_in, plain = bench.write_texts(texts, str(tmp_path))
    import extruct_bert_embed
    extruct_bert_embed.main(model_flags(tmp_path / 'back') + [
        '--input', ours_in, '--output', str(tmp_path / 'ours.txt')])
    theirs = bench.torch_check(python, str(tmp_path / 'st'), plain, str(tmp_path))
    figures = bench.compare(bench.read_features(str(tmp_path / 'ours.txt')), theirs['st'])
    assert figures['max_abs'] <= 1e-5 and figures['min_cosine'] >= 0.99999, figures
