"""BERT-DML: Chainer BERT, WordPiece tokenizer, checkpoints, metric-learning heads and the
feature pipeline behind the command-line scripts."""
