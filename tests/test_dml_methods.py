"""The methods of issue 16 in bertlib: cross-batch memory in the losses, supcon_ce,
weight averaging, the head-free model and the stored centre.

Loss values are compared with references written here with plain loops from the
papers' formulas (as in test_losses.py), the memory rows being further columns of each
anchor.
"""

import math

import chainer
import chainer.gradient_check
import numpy as np
import pytest

from bertlib import dml, losses, optimization
from bertlib.testing import write_random_bert
from conftest import final_arrays, train_args

LABELS = np.array([0, 0, 0, 1, 1, 2, 2, 3], dtype=np.int32)
MEMORY_LABELS = np.array([0, 1, 3, 3, 2], dtype=np.int32)  # gives class 3 positives


def unit(v):
    return v / math.sqrt(sum(c * c for c in v))


def cosine(u, v):
    return float(np.dot(unit(u), unit(v)))


def clustered(seed, labels, dim=6, spread=0.6):
    """Float64 embeddings around one fixed centre per class (the same for every seed,
    so batch and memory rows of a class are alike)."""
    centres = np.random.RandomState(1).randn(4, dim)
    return centres[labels] + spread * np.random.RandomState(seed).randn(len(labels), dim)


def columns(x, t, memory):
    """Per anchor i, the (vector, label) of every column but i itself."""
    y, u = memory if memory is not None else (np.zeros((0, x.shape[1])), [])
    return [[(x[j], t[j]) for j in range(len(x)) if j != i] + list(zip(y, u))
            for i in range(len(x))]


def reference_supcon(x, t, temperature, memory=None):
    terms = []
    for i, others in enumerate(columns(x, t, memory)):
        positives = [v for v, label in others if label == t[i]]
        if not positives:
            continue
        denominator = sum(math.exp(cosine(x[i], v) / temperature) for v, _ in others)
        terms.append(-sum(math.log(math.exp(cosine(x[i], p) / temperature) / denominator)
                          for p in positives) / len(positives))
    return np.mean(terms) if terms else 0.0


def reference_multi_similarity(x, t, memory=None, alpha=2.0, beta=50.0, base=0.5,
                               epsilon=0.1):
    total = 0.0
    for i, others in enumerate(columns(x, t, memory)):
        s_pos = [cosine(x[i], v) for v, label in others if label == t[i]]
        s_neg = [cosine(x[i], v) for v, label in others if label != t[i]]
        kept_pos = [s for s in s_pos if s_neg and s - epsilon < max(s_neg)]
        kept_neg = [s for s in s_neg if s_pos and s + epsilon > min(s_pos)]
        total += math.log(1 + sum(math.exp(-alpha * (s - base)) for s in kept_pos)) / alpha
        total += math.log(1 + sum(math.exp(beta * (s - base)) for s in kept_neg)) / beta
    return total / len(x)


def memory_rows(seed=3):
    y = clustered(seed, MEMORY_LABELS)
    return y / np.linalg.norm(y, axis=1, keepdims=True), MEMORY_LABELS


# ---------------------------------------------------------------------------------------
# Cross-batch memory in the losses


@pytest.mark.parametrize('temperature', [0.1, 0.5])
def test_supcon_with_memory_matches_the_formula(temperature):
    x, memory = clustered(2, LABELS), memory_rows()
    value = losses.supcon_loss(x, LABELS, temperature, memory=memory).array
    np.testing.assert_allclose(value, reference_supcon(x, LABELS, temperature, memory),
                               rtol=1e-10)
    # The memory matters: class 3 gets positives, every anchor more negatives.
    assert abs(value - reference_supcon(x, LABELS, temperature)) > 1e-3


def test_multi_similarity_with_memory_matches_the_formula():
    x, memory = clustered(4, LABELS), memory_rows(5)
    value = losses.multi_similarity_loss(x, LABELS, memory=memory).array
    np.testing.assert_allclose(value, reference_multi_similarity(x, LABELS, memory),
                               rtol=1e-10)
    assert abs(value - reference_multi_similarity(x, LABELS)) > 1e-3


@pytest.mark.parametrize('name', ['supcon', 'multi_similarity'])
def test_memory_rows_are_constants_and_the_batch_gets_gradients(name):
    x = chainer.Variable(clustered(6, LABELS))
    memory = memory_rows()
    losses.build(name, 4, 6, 8, 0, 2)(x, LABELS, memory=memory).backward()
    assert np.isfinite(x.grad).all() and np.abs(x.grad).sum() > 0


def test_supcon_gradient_with_memory():
    memory = memory_rows()
    chainer.gradient_check.check_backward(
        lambda v: losses.supcon_loss(v, LABELS, 0.5, memory=memory), clustered(7, LABELS),
        None, eps=1e-5, atol=1e-7, rtol=1e-6, dtype=np.float64)


def test_cross_batch_memory_warms_up_then_keeps_the_last_rows_oldest_first():
    memory = losses.CrossBatchMemory(size=5, dim=2, warmup=1)
    assert memory.contents() is None
    memory.push(np.array([[3.0, 4.0]]), np.array([7]))  # the warm-up step: not kept
    assert memory.contents() is None
    memory.push(np.array([[1.0, 0.0], [0.0, 2.0]]), np.array([0, 1]))
    z, t = memory.contents()
    np.testing.assert_allclose(z, [[1, 0], [0, 1]])
    assert t.tolist() == [0, 1]
    memory.push(np.arange(8.0).reshape(4, 2) + 1, np.array([2, 3, 4, 5]))
    z, t = memory.contents()
    assert t.tolist() == [1, 2, 3, 4, 5]  # label 0, the oldest, dropped
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, rtol=1e-6)
    assert sorted(memory.state()) == ['memory/counters', 'memory/embeddings',
                                      'memory/labels']


# ---------------------------------------------------------------------------------------
# supcon_ce


def test_supcon_ce_weights_the_two_terms():
    x = clustered(8, LABELS).astype(np.float32)
    link = losses.SupConCE(4, 6, temperature=0.3, weight=0.9)
    assert sorted(name for name, _ in link.namedparams()) == ['/classifier/W',
                                                               '/classifier/b']
    logits = x @ link.classifier.W.array.T + link.classifier.b.array
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    cross_entropy = -log_softmax[np.arange(len(x)), LABELS].mean()
    expected = 0.9 * reference_supcon(x, LABELS, 0.3) + 0.1 * cross_entropy
    np.testing.assert_allclose(link(x, LABELS).array, expected, rtol=1e-5)
    # Unseen classes (ids past the classifier's) take part in the supcon term only.
    t = LABELS.copy()
    t[-1] = 4
    keep = t < 4
    expected = (0.9 * reference_supcon(x, t, 0.3)
                + 0.1 * -log_softmax[np.flatnonzero(keep), t[keep]].mean())
    np.testing.assert_allclose(link(x, t).array, expected, rtol=1e-5)


# ---------------------------------------------------------------------------------------
# Weight averaging


def test_weight_average_follows_the_formula_and_swaps():
    model = chainer.links.Linear(3, 2)
    optimizer = optimization.make_optimizer(model, 0.1, 0.0)
    average = optimization.add_weight_average(optimizer, model, 0.5)
    start = model.W.array.copy()
    optimization.use_training_weights(optimizer)
    expected = start.copy()
    for step in range(3):
        model.cleargrads()
        chainer.functions.sum(model(np.ones((1, 3), dtype=np.float32)) ** 2).backward()
        optimizer.update()
        expected = 0.5 * expected + 0.5 * model.W.array
    trained = model.W.array.copy()
    optimization.use_averaged_weights(optimizer)
    np.testing.assert_allclose(model.W.array, expected, rtol=1e-6)
    assert not np.allclose(model.W.array, trained)
    np.testing.assert_array_equal(average.state()['ema/W'], trained)
    optimization.use_training_weights(optimizer)
    np.testing.assert_array_equal(model.W.array, trained)


# ---------------------------------------------------------------------------------------
# The model: head and centre


def test_head_none_embeds_the_sentence_vector_and_has_no_output_layer(tmp_path):
    from bertlib import modeling
    folder = write_random_bert(tmp_path, ['a', 'b'], hidden_size=8)
    config = modeling.BertConfig.from_json_file(str(folder / 'bert_config.json'))
    bert = modeling.BertModel(config)
    model = dml.DMLModel(bert, pooling='mean', head='none')
    assert model.dim == 8 and not hasattr(model, 'output')
    ids = np.array([[2, 5, 6, 3]], dtype=np.int32)
    mask = np.ones_like(ids)
    with chainer.using_config('train', False):
        np.testing.assert_array_equal(model.embed(ids, mask).array,
                                      bert.encode(ids, mask, pooling='mean').array)
        raw = model.features(ids, mask).array
        model.centre = np.full(8, 0.1, dtype=np.float32)
        np.testing.assert_allclose(model.features(ids, mask).array,
                                   dml.centred(raw, model.centre), rtol=1e-5, atol=1e-6)


def test_centre_helpers():
    x = np.array([[3.0, 4.0], [0.0, 2.0]])
    centre = dml.centre_of(x)
    np.testing.assert_allclose(centre, [0.3, 0.9])
    z = dml.centred(x, centre)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(z[0], np.array([0.3, -0.1]) / math.hypot(0.3, 0.1),
                               rtol=1e-6)
    assert dml.read_centre({}, 2, 'm') is None
    np.testing.assert_array_equal(dml.read_centre({'centre': [0.5, 1]}, 2, 'm'), [0.5, 1])
    for bad in ([0.5], [0.5, 'x'], [0.5, float('nan')], 'ab', [True, 1.0]):
        with pytest.raises(Exception, match='centre is not a list of 2 finite numbers'):
            dml.read_centre({'centre': bad}, 2, 'm')


# ---------------------------------------------------------------------------------------
# train_dml.py and extruct_bert_metrics.py with the new flags, on a tiny BERT


def run(tmp_path, tiny, name, *flags):
    import train_dml
    out = tmp_path / name
    train_dml.main(train_args(tmp_path, tiny, out, '--loss', 'supcon',
                              '--samples_per_class', '4', *flags))
    return out


def extract(tmp_path, tiny, out, *flags, text='pos\tgood film\nneg\tthe plot was dull\n'
            'neg\tbad\n'):
    """extruct_bert_metrics.py's features of `text` from out/final.model, (N, D)."""
    import extruct_bert_metrics
    from conftest import model_flags
    (tmp_path / 'in.txt').write_text(text)
    extruct_bert_metrics.main(['--input', str(tmp_path / 'in.txt'),
                               '--output', str(tmp_path / 'features.tsv'),
                               '--model', str(out / 'final.model'),
                               '--label', str(out / 'labels.bin')]
                              + model_flags(tiny) + list(flags))
    return np.array([[float(v) for v in line.split('\t')[1:]]
                     for line in (tmp_path / 'features.tsv').read_text().splitlines()])


def test_head_none_trains_the_sentence_vector_and_extracts_it(tmp_path, tiny):
    from bertlib import checkpoints
    out = run(tmp_path, tiny, 'none', '--epoch', '1', '--head', 'none', '--pooling', 'mean')
    arrays = final_arrays(out)
    assert not any(k.startswith('output/') for k in arrays)
    meta = checkpoints.read_meta(str(out / 'final.model'))
    assert (meta['head'], meta['dim'], len(meta['centre'])) == ('none', 16, 16)
    raw = extract(tmp_path, tiny, out, '--no_centre')
    assert raw.shape == (3, 16)
    # The centred features are the raw ones, normalised, minus the centre, normalised.
    expected = dml.centred(raw, np.array(meta['centre'], dtype=np.float32))
    np.testing.assert_allclose(extract(tmp_path, tiny, out), expected, atol=2e-6)
    assert not np.allclose(expected, dml.unit_rows(raw), atol=1e-3)


def test_the_stored_centre_is_the_training_sample_mean(tmp_path, tiny):
    from bertlib import checkpoints
    out = run(tmp_path, tiny, 'linear', '--epoch', '1')
    meta = checkpoints.read_meta(str(out / 'final.model'))
    training = extract(tmp_path, tiny, out, '--no_centre',
                       text=(tmp_path / 'train.txt').read_text())
    # The tiny training set (40 sentences) is the whole training sample.
    # (to the rounding of the six-decimal features)
    np.testing.assert_allclose(meta['centre'], dml.centre_of(training), atol=2e-5)


@pytest.mark.parametrize('flags', [('--ema', '0.5'), ('--memory_size', '24',
                                                      '--memory_warmup', '2'),
                                   ('--sampling', 'random'),
                                   ('--loss', 'supcon_ce', '--supcon_weight', '0.5'),
                                   ('--distill', '0.5'), ('--l2sp', '0.1'),
                                   ('--layer_decay', '0.8')])
def test_each_option_changes_the_trained_model(tmp_path, tiny, flags):
    plain = final_arrays(run(tmp_path, tiny, 'plain', '--epoch', '2'))
    changed = final_arrays(run(tmp_path, tiny, 'changed', '--epoch', '2', *flags))
    assert not np.array_equal(plain['bert/encoder/layer_0/attention/key/W'],
                              changed['bert/encoder/layer_0/attention/key/W'])
    if '--loss' in flags:
        assert changed['loss/classifier/W'].shape == (2, 8)


@pytest.mark.parametrize('flags', [('--ema', '0.7'),
                                   ('--memory_size', '20', '--memory_warmup', '3'),
                                   ('--loss', 'supcon_ce', '--memory_size', '30',
                                    '--memory_warmup', '1', '--ema',
                                    '0.9'),
                                   # The teacher and the L2-SP anchor are the pre-trained
                                   # weights again, not the resumed ones.
                                   ('--distill', '0.5', '--distill_temperature', '0.2',
                                    '--l2sp', '0.1', '--layer_decay', '0.8')])
def test_resume_is_bit_exact_with_the_average_and_the_memory(tmp_path, tiny, monkeypatch,
                                                             flags):
    from bertlib import training
    common = ('--epoch', '3', '--seed', '5') + flags
    whole = run(tmp_path, tiny, 'whole', *common)
    save_epoch = training.save_epoch

    def save_then_stop(*args):
        save_epoch(*args)
        raise KeyboardInterrupt
    monkeypatch.setattr(training, 'save_epoch', save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, tiny, 'part', *common)
    monkeypatch.setattr(training, 'save_epoch', save_epoch)
    part = run(tmp_path, tiny, 'part', *common, '--resume', str(tmp_path / 'part'))
    for name in ('final.model', 'final.state'):
        with np.load(whole / name) as a, np.load(part / name) as b:
            assert sorted(a.files) == sorted(b.files)
            for key in a.files:
                assert np.array_equal(a[key], b[key]), (name, key)
    with np.load(whole / 'final.state') as state:
        assert any(k.startswith('ema/') for k in state.files) == ('--ema' in flags)
        assert ('memory/embeddings' in state.files) == ('--memory_size' in flags)
        if '--memory_size' in flags:
            assert (state['memory/labels'] >= 0).sum() > 0


def test_flag_errors(tmp_path, tiny):
    from bertlib.errors import UsageError
    import train_dml
    for flags, message in ((('--loss', 'batch_hard', '--memory_size', '8'),
                            '--memory_size works with'),
                           (('--ema', '1.5'), '--ema must be a number above 0 and below 1'),
                           (('--supcon_weight', '2'), '--supcon_weight must be'),
                           (('--memory_size', '-1'), '--memory_size must be between 0 and')):
        with pytest.raises(UsageError, match=message):
            train_dml.main(train_args(tmp_path, tiny, tmp_path / 'x', *flags))
    out = run(tmp_path, tiny, 'plain', '--epoch', '1')
    with pytest.raises(UsageError, match='trained with --ema None, not 0.9'):
        run(tmp_path, tiny, 'again', '--epoch', '2', '--ema', '0.9', '--resume', str(out))
