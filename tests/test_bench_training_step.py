"""bench/training_step.py on the tiny random BERT: it runs, and its account of the word
embedding's arrays shows what --freeze_word_embeddings removes."""

import subprocess
import sys

import pytest

from conftest import ROOT, WORDS, write_random_bert


@pytest.mark.parametrize('flags, kept', [
    ((), 'kept: weights, gradient, Adam m and v'),
    (('--freeze_word_embeddings',), 'kept: weights\n'),
])
def test_the_bench_reports_the_word_tables_arrays(tmp_path, flags, kept):
    bert = write_random_bert(tmp_path / 'bert', WORDS, hidden_size=16, num_hidden_layers=1,
                             intermediate_size=32)
    lines = ['c%d\t%s %s the film' % (i % 4, WORDS[i % 8], WORDS[(i * 3) % 8])
             for i in range(64)]
    (tmp_path / 'train.txt').write_text('\n'.join(lines) + '\n')
    result = subprocess.run(
        [sys.executable, str(ROOT / 'bench' / 'training_step.py'), '--model_dir', str(bert),
         '--train', str(tmp_path / 'train.txt'), '--batchsize', '16', '--steps', '1']
        + list(flags), capture_output=True, text=True, cwd=str(ROOT), timeout=300)
    assert result.returncode == 0, result.stderr
    assert kept in result.stdout
    for phase in ('forward', 'backward', 'update', 'step'):
        assert '\n%s ' % phase in result.stdout
