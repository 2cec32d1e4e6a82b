"""extruct_bert_embed.py end to end: output format and order, bad input, the demo model."""

import json
import subprocess
import sys

import numpy as np
import pytest

import extruct_bert_embed
from bertlib.errors import UsageError
from conftest import ROOT, gpu_usable, model_flags, write_random_bert

WORDS = ['the', 'movie', 'was', 'good', 'bad', 'very', 'a', 'film', 'plot', 'actor', '.',
         ',', '!', 'not', 'it', 'is']


@pytest.fixture
def tiny_model(tmp_path):
    """A 2-layer random BERT with a 21-entry uncased vocabulary, as files."""
    return write_random_bert(tmp_path / 'tiny', WORDS)


def run_main(argv, capsys):
    extruct_bert_embed.main(argv)
    captured = capsys.readouterr()
    return captured.out, captured.err


def parse_tsv(text):
    rows = [line.split('\t') for line in text.splitlines()]
    return [r[0] for r in rows], np.array([[float(v) for v in r[1:]] for r in rows])


def test_rows_in_input_order_with_labels(tiny_model, tmp_path, capsys):
    lines = ['0\tthe movie was very very very good .', '', '1\tbad', 'a film , not a plot !',
             '1\tthe actor is not bad , the plot is .', '   ', '0\tgood']
    (tmp_path / 'in.txt').write_text('\n'.join(lines) + '\n', encoding='utf-8')
    out, err = run_main(['--input', str(tmp_path / 'in.txt'), '--batchsize', '2']
                        + model_flags(tiny_model), capsys)
    labels, vectors = parse_tsv(out)
    assert labels == ['0', '1', '', '1', '0']
    assert vectors.shape == (5, 8)
    first = out.splitlines()[0].split('\t')
    assert all(len(v.split('.')[1]) == 6 for v in first[1:])  # six decimals, as the original

    # Each sentence alone gives the same vector as inside a sorted, padded batch.
    for index, text in enumerate([l.split('\t')[-1] for l in lines if l.strip()]):
        (tmp_path / 'one.txt').write_text(text + '\n', encoding='utf-8')
        single, _ = run_main(['--input', str(tmp_path / 'one.txt')]
                             + model_flags(tiny_model), capsys)
        assert np.abs(parse_tsv(single)[1][0] - vectors[index]).max() <= 2e-6


def test_pooling_choices_differ(tiny_model, tmp_path, capsys):
    (tmp_path / 'in.txt').write_text('x\tthe movie was good\n', encoding='utf-8')
    outputs = {}
    for pooling in ('pooled', 'cls', 'mean'):
        out, _ = run_main(['--input', str(tmp_path / 'in.txt'), '--pooling', pooling]
                          + model_flags(tiny_model), capsys)
        outputs[pooling] = parse_tsv(out)[1]
    assert np.all(np.abs(outputs['pooled']) <= 1.0)  # tanh
    assert not np.allclose(outputs['pooled'], outputs['cls'])
    assert not np.allclose(outputs['cls'], outputs['mean'])


def test_long_lines_are_truncated_and_counted(tiny_model, tmp_path, capsys, caplog):
    (tmp_path / 'in.txt').write_text('a\t' + 'good ' * 50 + '\nb\tbad\n', encoding='utf-8')
    out, _ = run_main(['--input', str(tmp_path / 'in.txt'), '--max_seq_length', '16']
                      + model_flags(tiny_model), capsys)
    assert len(out.splitlines()) == 2
    assert '1 lines were longer than --max_seq_length 16' in caplog.text


def test_output_file_is_written_whole(tiny_model, tmp_path, capsys):
    (tmp_path / 'in.txt').write_text('a\tgood\nb\tbad\n', encoding='utf-8')
    target = tmp_path / 'features.tsv'
    out, _ = run_main(['--input', str(tmp_path / 'in.txt'), '--output', str(target)]
                      + model_flags(tiny_model), capsys)
    assert out == ''
    assert len(target.read_text().splitlines()) == 2
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith('.')] == []


def test_invalid_utf8_names_the_line_and_writes_nothing(tiny_model, tmp_path, capsys):
    (tmp_path / 'in.txt').write_bytes(b'a\tgood\nb\tbad\nc\t\xff\xfe bad\n')
    target = tmp_path / 'features.tsv'
    with pytest.raises(UsageError, match=r'in.txt:3: invalid UTF-8'):
        run_main(['--input', str(tmp_path / 'in.txt'), '--output', str(target)]
                 + model_flags(tiny_model), capsys)
    assert not target.exists()
    with pytest.raises(UsageError, match=r'in.txt:3: invalid UTF-8'):
        run_main(['--input', str(tmp_path / 'in.txt')] + model_flags(tiny_model), capsys)
    assert capsys.readouterr().out == ''


def test_vocabulary_that_does_not_belong_to_the_model(tiny_model, tmp_path, capsys):
    (tmp_path / 'in.txt').write_text('a\tgood\n')
    with open(tiny_model / 'vocab.txt', 'a') as f:
        f.write('extra\n')
    with pytest.raises(UsageError, match='22 entries but .*has 21 word embeddings'):
        run_main(['--input', str(tmp_path / 'in.txt')] + model_flags(tiny_model), capsys)


def test_config_that_does_not_match_the_checkpoint(tiny_model, tmp_path, capsys):
    (tmp_path / 'in.txt').write_text('a\tgood\n')
    config = json.loads((tiny_model / 'bert_config.json').read_text())
    config['num_hidden_layers'] = 3
    (tiny_model / 'bert_config.json').write_text(json.dumps(config))
    with pytest.raises(UsageError, match='missing 16 arrays .*layer_2'):
        run_main(['--input', str(tmp_path / 'in.txt')] + model_flags(tiny_model), capsys)


def run_script(args):
    return subprocess.run([sys.executable, str(ROOT / 'extruct_bert_embed.py')] + args,
                          capture_output=True, text=True, cwd=str(ROOT), timeout=120)


def test_errors_exit_2_with_one_line_and_no_traceback(tiny_model, tmp_path):
    cases = [
        (['--input', str(tmp_path / 'missing.txt')], 'missing.txt: cannot open input'),
        (['--input', str(tmp_path)], 'is a directory'),
    ]
    (tmp_path / 'in.txt').write_text('a\tgood\n')
    if not gpu_usable():  # no CuPy, or CuPy without a GPU: --gpu 0 must say so
        cases.append((['--input', str(tmp_path / 'in.txt'), '--gpu', '0'], '--gpu 0'))
    for extra, message in cases:
        result = run_script(extra + model_flags(tiny_model))
        assert result.returncode == 2, result.stderr
        assert 'Traceback' not in result.stderr
        assert message in result.stderr
        assert result.stdout == ''


def test_help_explains_every_flag():
    result = run_script(['--help'])
    assert result.returncode == 0
    for flag in ('--input', '--output', '--vocab_file', '--bert_config_file',
                 '--init_checkpoint', '--gpu', '--batchsize', '--pooling',
                 '--max_seq_length', '--do_lower_case'):
        assert flag in result.stdout


def test_demo_model_on_stdin(demo_model):
    result = subprocess.run(
        [sys.executable, str(ROOT / 'extruct_bert_embed.py'), '--input', '-',
         '--pooling', 'mean'] + model_flags(demo_model),
        input='pos\tA gripping, beautiful film.\n\nplain text line\n', capture_output=True,
        text=True, cwd=str(ROOT), timeout=120)
    assert result.returncode == 0, result.stderr
    labels, vectors = parse_tsv(result.stdout)
    assert labels == ['pos', ''] and vectors.shape == (2, 384)


def test_max_length_reads_only_the_first_lines(tiny_model, tmp_path, capsys):
    """The original extractors' --max_length: lines past the N-th are not read (the
    original counted empty lines too)."""
    lines = ['0\tgood', '', '1\tbad', '0\tthe movie', '1\tnot good']
    (tmp_path / 'in.txt').write_text('\n'.join(lines) + '\n', encoding='utf-8')
    out, _ = run_main(['--input', str(tmp_path / 'in.txt'), '--max_length', '3']
                      + model_flags(tiny_model), capsys)
    whole, _ = run_main(['--input', str(tmp_path / 'in.txt')] + model_flags(tiny_model),
                        capsys)
    labels, vectors = parse_tsv(out)
    whole_labels, whole_vectors = parse_tsv(whole)
    assert labels == ['0', '1'] and whole_labels == ['0', '1', '0', '1']
    # Two sentences are batched apart from four, and BLAS may round such batches apart
    # in the last printed digit.
    np.testing.assert_allclose(vectors, whole_vectors[:2], atol=2e-6)
    with pytest.raises(UsageError, match='--max_length must be at least 1'):
        run_main(['--input', str(tmp_path / 'in.txt'), '--max_length', '0']
                 + model_flags(tiny_model), capsys)


def test_join_ellipsis_turns_spaced_dots_into_one_token(tmp_path, capsys):
    """--join_ellipsis: the original's '. . .' -> '…' before tokenising."""
    model = write_random_bert(tmp_path / 'm', WORDS + ['\u2026'])
    (tmp_path / 'in.txt').write_text('0\tgood . . . bad\n0\tgood \u2026 bad\n', encoding='utf-8')
    plain, _ = run_main(['--input', str(tmp_path / 'in.txt')] + model_flags(model), capsys)
    joined, _ = run_main(['--input', str(tmp_path / 'in.txt'), '--join_ellipsis']
                         + model_flags(model), capsys)
    plain, joined = parse_tsv(plain)[1], parse_tsv(joined)[1]
    assert np.abs(plain[0] - plain[1]).max() > 1e-4  # three '.' tokens vs one '…'
    assert np.array_equal(joined[0], joined[1]) and np.array_equal(joined[1], plain[1])
