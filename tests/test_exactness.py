"""The Chainer BERT reproduces sentence-transformers' all-MiniLM-L6-v2 encodings.

tests/data/minilm_reference.json was made with PyTorch by tools/make_reference_vectors.py.
"""

import argparse
import json
import pathlib

import chainer
import numpy as np

from bertlib import bert_loading, length_batching

REFERENCE = pathlib.Path(__file__).parent / 'data' / 'minilm_reference.json'


def test_mean_pooled_features_equal_sentence_transformers(demo_model):
    reference = json.loads(REFERENCE.read_text(encoding='utf-8'))
    args = argparse.Namespace(
        vocab_file=str(demo_model / 'vocab.txt'),
        bert_config_file=str(demo_model / 'bert_config.json'),
        init_checkpoint=str(demo_model / 'arrays_bert_model.ckpt.npz'),
        do_lower_case='auto', max_seq_length=reference['max_seq_length'])
    _, tokenizer, bert = bert_loading.load_bert(args)
    assert tokenizer.basic_tokenizer.do_lower_case  # 'auto' found the vocabulary uncased

    ids = [tokenizer.encode(s, reference['max_seq_length'])[0] for s in reference['sentences']]
    input_ids, input_mask = length_batching.pad_batch(ids)
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        vectors = bert.encode(input_ids, input_mask, pooling='mean').array
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    expected = np.array(reference['vectors'], dtype=np.float32)
    assert vectors.shape == expected.shape == (12, 384)
    assert np.abs(vectors - expected).max() < 1e-4
