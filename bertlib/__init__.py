"""BERT-DML: Chainer BERT, WordPiece and SentencePiece tokenizers, checkpoints, metric-learning
heads and the feature pipeline behind the command-line scripts.

It re-creates "the original BERT-DML" (https://github.com/haradatm/nlp, bert/metrics and
bert/clustering), as the docstrings call it: its script names, flags and file formats.
"""

# Before anything imports Chainer: what Chainer 7.8.1 needs from NumPy 1, numpy.distutils
# and pkg_resources on NumPy 2, Python 3.12+ and setuptools 81+ (see bertlib/compat.py).
from bertlib import compat as _compat

_compat.apply()
