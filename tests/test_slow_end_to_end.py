"""End-to-end checks on real data with the demo model (minutes; `make test-slow`)."""

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
