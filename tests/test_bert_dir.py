"""--bert_dir DIR: one flag for the folder a converted model lives in, standing for the
original BERT-DML's --vocab_file, --bert_config_file and --init_checkpoint."""

import argparse
import os
import subprocess
import sys

import pytest

import extruct_bert_embed
from bertlib import convert, flags
from bertlib.errors import UsageError
from bertlib.testing import (ROOT, model_flags, sentencepiece_model_flags,
                             write_random_bert, write_random_sentencepiece_bert)

WORDS = ['the', 'movie', 'was', 'good', 'bad', 'very', 'a', 'film', 'plot', '.']
SCRIPTS = ['train_dml.py', 'train_classifier.py', 'test_classifier.py',
           'extruct_bert_embed.py', 'extruct_bert_metrics.py', 'extruct_bert_classified.py']


def parse(argv):
    parser = flags.add_bert_arguments(argparse.ArgumentParser())
    args = parser.parse_args(argv)
    flags.check_bert_arguments(args)
    return args


def test_the_folder_names_are_those_the_converter_writes():
    assert (flags.BERT_DIR_TOKENIZER_JSON, flags.BERT_DIR_VOCAB, flags.BERT_DIR_CONFIG,
            flags.BERT_DIR_CHECKPOINT) == (convert.TOKENIZER_JSON_NAME, convert.VOCAB_NAME,
                                         convert.CONFIG_NAME, convert.NPZ_NAME)


def test_bert_dir_stands_for_the_three_files(tmp_path):
    wordpiece = write_random_bert(tmp_path / 'wp', WORDS)
    args = parse(['--bert_dir', str(wordpiece)])
    assert ['--vocab_file', args.vocab_file, '--bert_config_file', args.bert_config_file,
            '--init_checkpoint', args.init_checkpoint] == model_flags(wordpiece)
    # A folder with a tokenizer.json (a SentencePiece model) uses it, not vocab.txt.
    pieces = write_random_sentencepiece_bert(tmp_path / 'sp', WORDS)
    (pieces / 'vocab.txt').write_text('[PAD]\n', encoding='utf-8')
    args = parse(['--bert_dir', str(pieces)])
    assert args.vocab_file == sentencepiece_model_flags(pieces)[1]


def test_the_three_flags_still_work_alone(tmp_path):
    folder = write_random_bert(tmp_path / 'wp', WORDS)
    args = parse(model_flags(folder))
    assert args.bert_dir is None and args.init_checkpoint == model_flags(folder)[5]


@pytest.mark.parametrize('argv, message', [
    (['--bert_dir', 'M', '--vocab_file', 'v'], 'give it or them, not both (--vocab_file'),
    (['--bert_dir', 'M', '--init_checkpoint', 'c'], 'not both (--init_checkpoint given'),
    ([], 'missing: --vocab_file, --bert_config_file, --init_checkpoint'),
    (['--vocab_file', 'v', '--bert_config_file', 'c'], 'missing: --init_checkpoint'),
])
def test_both_or_neither_is_a_usage_error(argv, message):
    with pytest.raises(UsageError) as caught:
        parse(argv)
    assert message in str(caught.value)


def test_a_missing_folder_is_named(tmp_path):
    with pytest.raises(UsageError) as caught:
        parse(['--bert_dir', str(tmp_path / 'nowhere')])
    assert str(caught.value) == '%s: --bert_dir not found' % (tmp_path / 'nowhere')
    (tmp_path / 'file').write_text('')
    with pytest.raises(UsageError, match='is not a folder'):
        parse(['--bert_dir', str(tmp_path / 'file')])


def test_extractor_output_is_byte_identical_both_ways(tmp_path, capsys):
    folder = write_random_bert(tmp_path / 'tiny', WORDS)
    (tmp_path / 'in.txt').write_text('0\tthe movie was very good .\n1\tbad film\n',
                                     encoding='utf-8')
    outputs = []
    for model in (['--bert_dir', str(folder)], model_flags(folder)):
        extruct_bert_embed.main(['--input', str(tmp_path / 'in.txt')] + model)
        outputs.append(capsys.readouterr().out.encode('utf-8'))
    assert outputs[0] == outputs[1] and outputs[0].count(b'\n') == 2


@pytest.mark.parametrize('script', SCRIPTS)
def test_every_script_says_it_and_refuses_both_in_one_line(script, tmp_path):
    """--help names --bert_dir; --bert_dir with a file flag is one error line, exit 2."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    shown = subprocess.run([sys.executable, str(ROOT / script), '--help'], cwd=tmp_path,
                           env=env, capture_output=True, text=True)
    assert shown.returncode == 0 and '--bert_dir DIR' in shown.stdout
    # Enough of each script's other required flags that only the BERT ones are wrong.
    other = ['--input', 'x', '--output', 'y', '--train', 'x', '--eval', 'x', '--model', 'x',
             '--label', 'x']
    known = {'train_dml.py': other[4:8], 'train_classifier.py': other[4:8],
             'test_classifier.py': other[:2] + other[8:],
             'extruct_bert_embed.py': other[:2], 'extruct_bert_metrics.py': other[:2] + other[8:],
             'extruct_bert_classified.py': other[:2] + other[8:]}[script]
    failed = subprocess.run([sys.executable, str(ROOT / script), '--bert_dir', 'M',
                             '--vocab_file', 'v'] + known, cwd=tmp_path, env=env,
                            capture_output=True, text=True)
    assert failed.returncode == 2
    assert failed.stderr.splitlines() == [
        'error: --bert_dir stands for --vocab_file, --bert_config_file and '
        '--init_checkpoint: give it or them, not both (--vocab_file given too)']
