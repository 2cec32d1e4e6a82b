"""For users of the original BERT-DML: its model files load, and its README's command
lines run as written (on small data and a small random BERT put at its model paths)."""

import json
import os
import pickle
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import extruct_bert_metrics
import train_dml
from bertlib import checkpoints
from conftest import ROOT, model_flags, train_args

ORIGINAL_README = ROOT.parent / 'shared' / 'seed' / 'BERT-DML-README.md'


def write_original_model(source, target):
    """What the original train_dml.py wrote: chainer.serializers.save_npz of its BertDML,
    i.e. arrays `bert/...` and `output/{W,b}` only (no metadata, no loss head)."""
    with np.load(source, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files
                  if name.startswith(('bert/', 'output/'))}
    assert 'output/W' in arrays and not any(n.startswith('meta') for n in arrays)
    with open(target, 'wb') as stream:  # a path would get '.npz' appended
        np.savez(stream, **arrays)


def test_original_final_model_extracts_the_same_features_and_resumes(tmp_path, tiny,
                                                                     capsys, caplog):
    caplog.set_level('INFO')
    ours = tmp_path / 'ours'
    train_dml.main(train_args(tmp_path, tiny, ours, '--epoch', '1', '--triplets', '8'))
    original = tmp_path / 'original'
    original.mkdir()
    write_original_model(ours / 'final.model', original / 'final.model')
    assert checkpoints.read_meta(str(original / 'final.model')) == {}
    # The original pickled its label dict with the default protocol.
    (original / 'labels.bin').write_bytes(pickle.dumps({'pos': 0, 'neg': 1}))
    capsys.readouterr()

    (tmp_path / 'in.txt').write_text('pos\tgood film\nneg\tthe plot was dull\nx\tbad\n')
    outputs = {}
    for name, folder in (('ours', ours), ('original', original)):
        extruct_bert_metrics.main(['--input', str(tmp_path / 'in.txt'),
                                   '--model', str(folder / 'final.model'),
                                   '--label', str(folder / 'labels.bin')] + model_flags(tiny)
                                  # Ours stores a centre, which the original had not.
                                  + (['--no_centre'] if name == 'ours' else []))
        outputs[name] = capsys.readouterr().out
    assert outputs['original'] == outputs['ours']
    rows = [line.split('\t') for line in outputs['original'].splitlines()]
    # Pooled output, --dim as stored (8 here; the original's 512), the input's labels,
    # an unknown one ('x') included.
    assert [r[0] for r in rows] == ['pos', 'neg', 'x'] and len(rows[0]) == 1 + 8

    # --resume from the original's folder (with an optimizer state beside it): the
    # model loads, training goes on from --start_epoch and saves with metadata.
    shutil.copy(ours / 'final.state', original / 'final.state')
    train_dml.main(train_args(tmp_path, tiny, original, '--epoch', '2', '--triplets', '8',
                              '--resume', str(original), '--start_epoch', '2'))
    assert 'resumed from %s at epoch 2' % original in caplog.text
    assert checkpoints.read_meta(str(original / 'final.model'))['epoch'] == 2


# --- the original README's command lines ------------------------------------------------

CLUSTERING_LINES = [
    'python scikit-clustering.py --input features/%s-%s-04-test.txt --samples 3000 '
    '--plots 300 --output results/plot_%s-%s-04-test.png' % (data, kind, data, kind)
    for data in ('rt', 'mlit') for kind in ('embed', 'clsed', 'dml')]

# The original's script names and where its models were (the README trains into
# results_dml-*, then reads models/metrics/*: the user copied them).
RENAMED = {'scikit-clustering.py': 'cluster_features.py', 'train_bert.py': 'train_classifier.py'}


def readme_commands(text):
    """Every `python ...` command (continuation lines joined) of the README's code
    blocks, with its redirections."""
    commands = []
    for block in re.findall(r'```\n(.*?)```', text, flags=re.S):
        joined = block.replace('\\\n', ' ')
        commands += [' '.join(line.split()) for line in joined.splitlines()
                     if line.startswith('python ')]
    return commands


def small_data(folder):
    """Tiny rt-polarity and MLIT look-alikes at the original's dataset paths."""
    rng = np.random.RandomState(0)
    english = {'0': ['bad', 'awful', 'dull', 'poor'], '1': ['good', 'great', 'fine', 'nice']}
    japanese = {'エンジン': ['エンジン', '停止'], '制動装置': ['ブレーキ', '制動'],
                '車枠・車体': ['ルーフ', '車体']}
    for name, words, filler in (('rt-polarity', english, ['the', 'film', 'was', '. . .']),
                                ('mlit', japanese, ['走行', '中', 'に', '。'])):
        (folder / 'datasets' / name).mkdir(parents=True)
        for split, n in (('train', 36), ('test', 18)):
            lines = []
            for i in range(n):
                label = sorted(words)[i % len(words)]
                text = ' '.join(list(rng.choice(filler, 2)) + list(rng.choice(words[label], 2)))
                lines.append('%s\t%s' % (label, text))
            (folder / 'datasets' / name / ('04-%s.txt' % split)).write_text(
                '\n'.join(lines) + '\n', encoding='utf-8')


def small_berts(folder):
    """A small random BERT at each of the original's model paths."""
    from conftest import write_random_bert
    words = ['the', 'film', 'was', '.', 'bad', 'awful', 'dull', 'poor', 'good', 'great',
             'fine', 'nice', 'エンジン', '停止', 'ブレーキ', '制動', 'ルーフ', '車体', '走行',
             '中', 'に', '。']
    for name in ('uncased_L-12_H-768_A-12', 'Japanese_L-12_H-768_A-12_E-30_BPE'):
        write_random_bert(folder / 'BERT' / name, words, hidden_size=16, num_hidden_layers=1,
                          intermediate_size=32)


def run_shell(command, folder):
    """Runs one command line as a shell would in `folder`, with this project's scripts
    under the original's names; returns the CompletedProcess."""
    script = command.split()[1]
    command = command.replace('python ' + script,
                              '%s %s' % (sys.executable, ROOT / RENAMED.get(script, script)),
                              1)
    # The original README trains 100 epochs: the same command, fewer epochs, keeps the
    # test fast; everything else is as written.
    command = command.replace('--epoch 100', '--epoch 2')
    return subprocess.run(['bash', '-o', 'pipefail', '-c', command], cwd=str(folder),
                          capture_output=True, text=True, timeout=600)


def assert_features(path, rows, width):
    lines = path.read_text(encoding='utf-8').splitlines()
    assert len(lines) == rows, path
    assert all(len(line.split('\t')) == 1 + width for line in lines), path


@pytest.mark.slow
def test_the_original_readme_runs_as_written(tmp_path):
    if not ORIGINAL_README.is_file():
        pytest.skip('%s is absent' % ORIGINAL_README)
    commands = readme_commands(ORIGINAL_README.read_text(encoding='utf-8'))
    assert len(commands) == 8, commands  # 2 trainings, 6 extractions
    small_data(tmp_path)
    small_berts(tmp_path)
    (tmp_path / 'features').mkdir()
    (tmp_path / 'results').mkdir()
    # The original user had trained the classifiers with the original train_bert.py.
    for name, data, bert in (('rt-polarity', 'rt-polarity', 'uncased_L-12_H-768_A-12'),
                             ('mlit', 'mlit', 'Japanese_L-12_H-768_A-12_E-30_BPE')):
        result = run_shell('python train_bert.py --batchsize 64 --epoch 2 --train '
                           'datasets/%s/04-train.txt --eval datasets/%s/04-test.txt '
                           '--init_checkpoint BERT/%s/arrays_bert_model.ckpt.npz '
                           '--bert_config_file BERT/%s/bert_config.json --vocab_file '
                           'BERT/%s/vocab.txt --out models/classified/%s'
                           % (data, data, bert, bert, bert, name), tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]

    for command in commands:
        if command.startswith('python extruct_bert_metrics.py'):
            # The README trained into results_dml-*; the user moved them to models/.
            for data, name in (('rt', 'rt-polarity'), ('mlit', 'mlit')):
                target = tmp_path / 'models' / 'metrics' / name
                if not target.exists():
                    shutil.copytree(tmp_path / ('results_dml-%s' % data), target)
        result = run_shell(command, tmp_path)
        assert result.returncode == 0, (command, result.stderr[-2000:])

    for data, name, classes in (('rt', 'rt-polarity', 2), ('mlit', 'mlit', 3)):
        out = tmp_path / ('results_dml-%s' % data)
        for file in ('final.model', 'final.state', 'labels.bin', 'early_stopped-loss.model'):
            assert (out / file).is_file(), (out, file)
        assert (tmp_path / ('results_dml-%s.png' % data)).is_file()  # beside, as there
        log = (tmp_path / ('train_dml-%s.log' % data)).read_text(encoding='utf-8')
        assert log.lstrip().startswith('{')
        assert '# train: 36, eval: 18,' in log and '# class: %d, labels:' % classes in log
        assert 'saving final model at epoch 2' in log
        for kind, width in (('dml', 512), ('clsed', 16), ('embed', 16)):
            assert_features(tmp_path / 'features' / ('%s-%s-04-test.txt' % (data, kind)),
                            18, width)
        assert (tmp_path / 'models' / 'classified' / name / 'early_stopped-uar.model').is_file()
        assert (tmp_path / 'models' / 'classified' / ('%s-cm-final.png' % name)).is_file()

    for command in CLUSTERING_LINES:
        result = run_shell(command, tmp_path)
        assert result.returncode == 0, (command, result.stderr[-2000:])
        picture = tmp_path / command.split('--output ')[1]
        from PIL import Image
        width, height = Image.open(picture).size
        assert width < 3000 and height < 3000, (picture, width, height)
        assert picture.with_suffix('.tsv').read_text().startswith('algorithm\t')
