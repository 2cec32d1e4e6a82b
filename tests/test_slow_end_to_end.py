"""End-to-end checks on real data with the demo model (minutes; `make test-slow`)."""

import os
import subprocess
import sys

import numpy as np
import pytest

from bertlib.metrics import retrieval_metrics
from conftest import ROOT, model_flags

pytestmark = pytest.mark.slow


def test_pretrained_features_reach_the_published_reference_figures(demo_model, datasets,
                                                                   tmp_path):
    """../shared/datasets/README.md: all-MiniLM-L6-v2 without fine-tuning, mean-pooled,
    cosine: precision@1 0.634, MAP@R 0.288 on rt-polarity/04-test.txt."""
    output = tmp_path / 'rt-embed-04-test.txt'
    result = subprocess.run(
        [sys.executable, str(ROOT / 'extruct_bert_embed.py'),
         '--input', str(datasets / 'rt-polarity' / '04-test.txt'), '--pooling', 'mean',
         '--output', str(output)] + model_flags(demo_model),
        capture_output=True, text=True, cwd=str(ROOT), timeout=600)
    assert result.returncode == 0, result.stderr
    rows = [line.split('\t') for line in output.read_text().splitlines()]
    assert len(rows) == 1066
    labels = np.array([r[0] for r in rows])
    vectors = np.array([[float(v) for v in r[1:]] for r in rows], dtype=np.float32)
    assert vectors.shape == (1066, 384)
    scores = retrieval_metrics(vectors, labels)
    assert abs(scores['precision_at_1'] - 0.634) < 0.005
    assert abs(scores['map_at_r'] - 0.288) < 0.005


def test_demo_runs_every_script_on_the_bundled_held_out_split(demo_model, tmp_path):
    """`make demo` without rt-polarity: trains both models on samples/rt-polarity/train.txt,
    extracts the three feature sets of its unseen test.txt, plots, clusters and compares
    them under the original project's file names, and writes an explorer page and
    Projector folder per feature set and one page comparing the three. DML features beat
    pre-trained ones even after one epoch. The pictures and pages name the labels."""
    env = dict(os.environ, PY=sys.executable, MODEL_DIR=str(demo_model), OUT=str(tmp_path),
               EPOCHS='1')
    for name in ('NAME', 'TRAIN', 'TEST'):
        env.pop(name, None)
    in_project = ROOT / 'features' / 'rt-sample-dml-test.txt'

    def stamp():
        return in_project.stat().st_mtime_ns if in_project.exists() else None
    before = stamp()
    result = subprocess.run(['bash', str(ROOT / 'tools' / 'demo.sh')], env=env,
                            capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    test = (ROOT / 'samples' / 'rt-polarity' / 'test.txt').read_text().splitlines()
    for kind, dim in (('dml', 512), ('clsed', 384), ('embed', 384)):
        rows = (tmp_path / 'features' / ('rt-sample-%s-test.txt' % kind)).read_text()
        rows = [row.split('\t') for row in rows.splitlines()]
        assert len(rows) == len(test) and {len(r) for r in rows} == {dim + 1}, kind
        assert (tmp_path / 'results' / ('plot_rt-sample-%s-test.png' % kind)).stat().st_size
        scores = (tmp_path / 'results' / 'clustering' /
                  ('plot_rt-sample-%s-test.tsv' % kind)).read_text().splitlines()
        assert len(scores) == 1 + 10, scores  # a header and the ten algorithms
        page = (tmp_path / 'results' / ('explore_rt-sample-%s-test.html' % kind))
        assert 'explorer-data' in page.read_text(encoding='utf-8'), kind
        projector = tmp_path / 'results' / 'projector' / ('rt-sample-%s-test' % kind)
        metadata = (projector / 'metadata.tsv').read_text().splitlines()
        assert len(metadata) == 1 + len(test)
        # samples/rt-polarity/label_names.txt: the pages show the names, not 0 and 1.
        assert {row.split('\t')[0] for row in metadata[1:]} == {'negative', 'positive'}
    # The page comparing the three sets names each of them.
    page = (tmp_path / 'results' / 'explore_rt-sample-compare-test.html').read_text(
        encoding='utf-8')
    assert all('rt-sample-%s-test' % kind in page for kind in ('dml', 'clsed', 'embed'))
    for name in ('results_dml-rt-sample.png', 'results_clsed-rt-sample.png',
                 'comparison_rt-sample-test.png'):
        assert (tmp_path / 'results' / name).stat().st_size > 0, name
    table = (tmp_path / 'results' / 'comparison_rt-sample-test.md').read_text()
    rows = {line.split('|')[1].strip(): [float(v) for v in line.split('|')[2:4]]
            for line in table.splitlines()[2:]}
    assert set(rows) == {'DML', 'Classified', 'Pre-trained'}
    assert all(0.0 <= v <= 1.0 for values in rows.values() for v in values)
    assert rows['DML'][0] > rows['Pre-trained'][0] + 0.05   # P@1 on unseen sentences
    assert rows['DML'][1] > rows['Pre-trained'][1] + 0.10   # MAP@R
    assert table in result.stdout  # the table is also printed at the end
    assert stamp() == before  # OUT took everything; the project's own files are untouched
