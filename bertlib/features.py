"""Sentence features: tokenise, batch by length, encode, restore input order, write TSV.

Shared by the three `extruct_bert_*.py` scripts, which differ only in the `encode`
function they pass. Input is read in chunks of `chunk_batches * batchsize` lines; inside a
chunk, sentences are sorted by length so a batch pads to its own longest sentence, not the
file's; features are written back in input order. Memory stays flat however long the file.
"""

import logging
import os
import sys
import time

import chainer
import chainer.functions as F
import numpy as np

from bertlib import cli, data
from bertlib.errors import UsageError
from bertlib.fileio import atomic_write

logger = logging.getLogger(__name__)


def pad_batch(id_lists, xp=np):
    """Lists of token ids -> (input_ids, input_mask), int32 arrays of shape (B, T)."""
    length = max(len(ids) for ids in id_lists)
    input_ids = np.zeros((len(id_lists), length), dtype=np.int32)
    input_mask = np.zeros((len(id_lists), length), dtype=np.int32)
    for row, ids in enumerate(id_lists):
        input_ids[row, :len(ids)] = ids
        input_mask[row, :len(ids)] = 1
    return xp.asarray(input_ids), xp.asarray(input_mask)


def _chunks(iterable, size):
    chunk = []
    for item in iterable:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class FeatureExtractor(object):
    """Turns examples into feature vectors with a model's `encode` function.

    Args:
        tokenizer: a `bertlib.tokenization.FullTokenizer`.
        encode: callable (input_ids, input_mask) -> Variable or array (B, D); it is called
            in test mode without back-propagation.
        max_seq_length: longest token sequence, [CLS] and [SEP] included; longer
            sentences are truncated and counted in `self.truncated`.
        batchsize: sentences per forward pass.
        xp: numpy or cupy, where the model lives.
    """

    def __init__(self, tokenizer, encode, max_seq_length=128, batchsize=64, xp=np,
                 chunk_batches=32):
        self.tokenizer = tokenizer
        self.encode = encode
        self.max_seq_length = max_seq_length
        self.batchsize = batchsize
        self.xp = xp
        self.chunk_size = batchsize * chunk_batches
        self.truncated = 0
        self.count = 0

    def __call__(self, examples, progress=None):
        """Yields (example, float32 vector) in the order of `examples`."""
        for chunk in _chunks(examples, self.chunk_size):
            id_lists = []
            for example in chunk:
                ids, truncated = self.tokenizer.encode(example.text, self.max_seq_length)
                self.truncated += truncated
                id_lists.append(ids)
            vectors = encode_sorted(id_lists, self.encode, self.batchsize, self.xp, progress)
            for example, vector in zip(chunk, vectors):
                self.count += 1
                yield example, vector


def encode_sorted(id_lists, encode, batchsize, xp=np, progress=None):
    """Encodes token-id lists in batches of similar length; returns (N, D) float32 rows in
    the order of `id_lists`. `encode(input_ids, input_mask)` runs in test mode."""
    order = sorted(range(len(id_lists)), key=lambda i: len(id_lists[i]))
    vectors = None
    for start in range(0, len(order), batchsize):
        batch = order[start:start + batchsize]
        input_ids, input_mask = pad_batch([id_lists[i] for i in batch], xp)
        with chainer.using_config('train', False), chainer.no_backprop_mode():
            encoded = encode(input_ids, input_mask)
        encoded = chainer.backend.CpuDevice().send(getattr(encoded, 'array', encoded))
        if vectors is None:
            vectors = np.empty((len(id_lists), encoded.shape[1]), dtype=np.float32)
        vectors[batch] = encoded
        if progress is not None:
            progress(len(batch))
    return vectors


def encode_by_length(encode, id_lists, xp, pieces=4):
    """encode(...) of a training batch, computed in `pieces` runs of similar length.

    A sentence's output does not depend on the others in its batch, so splitting a
    random batch by length gives the same result while padding each piece only to its
    own longest sentence: on rt-polarity a batch of 64 otherwise pads to about twice the
    mean length. Returns a (B, D) Variable, differentiable, in the order of `id_lists`.
    """
    order = np.argsort([len(ids) for ids in id_lists], kind='stable')
    size = -(-len(order) // pieces)
    parts = []
    for start in range(0, len(order), size):
        chosen = order[start:start + size]
        input_ids, input_mask = pad_batch([id_lists[i] for i in chosen], xp)
        parts.append(encode(input_ids, input_mask))
    embeddings = F.concat(parts, axis=0) if len(parts) > 1 else parts[0]
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    return F.get_item(embeddings, xp.asarray(inverse))


def format_row(label, vector):
    """'label<TAB>f1<TAB>f2...' with six decimals, as the seed wrote them."""
    return label + '\t' + '\t'.join(['%.6f' % v for v in vector.tolist()]) + '\n'


def write_features(stream, pairs):
    """Writes (example, vector) pairs as TSV rows; returns how many were written."""
    written = 0
    for example, vector in pairs:
        stream.write(format_row(example.label, vector))
        written += 1
    return written


def add_io_arguments(parser):
    """--input and --output of the extraction scripts."""
    group = parser.add_argument_group('input and output')
    group.add_argument('--input', '-i', required=True,
                       help="sentences, one a line: 'label<TAB>text' or bare text; "
                            "'-' reads standard input")
    group.add_argument('--output', '-o', default='-',
                       help="features TSV; '-' (default) is standard output. A file is "
                            "written whole or not at all")
    return parser


def check_io(args):
    """Checks --input (readable, UTF-8) and --output before any work; returns the number
    of non-empty input lines (None for standard input)."""
    total = data.check_input(args.input)
    if args.output != '-':
        directory = os.path.dirname(os.path.abspath(args.output))
        if not os.path.isdir(directory):
            raise UsageError('%s: output directory %s does not exist'
                             % (args.output, directory))
    return total


def run(args, tokenizer, encode, xp, total=None):
    """Extracts features of every line of --input with `encode` and writes them."""
    extractor = FeatureExtractor(tokenizer, encode, max_seq_length=args.max_seq_length,
                                 batchsize=args.batchsize, xp=xp)
    progress = cli.Progress(total, unit='lines', what='extracting')
    start = time.time()
    pairs = extractor(data.iter_examples(args.input), progress)
    if args.output == '-':
        sys.stdout.reconfigure(encoding='utf-8', newline='\n')
        written = write_features(sys.stdout, pairs)
        sys.stdout.flush()
    else:
        with atomic_write(args.output) as stream:
            written = write_features(stream, pairs)
    progress.close()
    seconds = time.time() - start
    logger.info('extracted %d lines in %.1f sec (%.1f lines/sec)', written, seconds,
                written / max(seconds, 1e-9))
    if extractor.truncated:
        logger.warning('%d lines were longer than --max_seq_length %d tokens and were '
                       'truncated', extractor.truncated, args.max_seq_length)
    return written
