"""Sentence features: tokenise, batch by length, encode, restore input order, write TSV.

The extraction pipeline and its command line (flags, first steps, reading, writing,
progress); the batching and encoding engine under it is `bertlib.length_batching`.

Shared by the three `extruct_bert_*.py` scripts, which differ only in the `encode`
function they pass. Input is read in chunks of `chunk_batches * batchsize` lines; inside a
chunk, sentences are sorted by length so a batch pads to its own longest sentence, not the
file's; features are written back in input order. Memory stays flat however long the file.

Under `mpiexec -n N ... --communicator naive` (bertlib/distributed.py) every chunk is a
round: rank 0 reads it and hands it out, each rank encodes its share of the chunk's
batches (the same batches one process would make, so the numbers are the same), and
rank 0 gathers the vectors and writes them in input order.
"""

import argparse
import itertools
import logging
import sys
import threading
import time

import numpy as np

from bertlib import data, devices, distributed, flags
from bertlib.length_batching import encode_sorted
from bertlib.errors import UsageError
from bertlib.fileio import atomic_write, check_output
from bertlib.progress import Progress

logger = logging.getLogger(__name__)


def _in_background(work):
    """Starts work() in a daemon thread; returns a function that waits for it and returns
    its value (or raises its exception).

    A daemon thread, not a thread pool's: Ctrl-C or SIGTERM interrupts the main thread's
    wait at once, and the process then exits even if the thread is still blocked reading
    a slow pipe or opening a FIFO (a pool's thread is joined at exit: the run would hang
    until input came). `bertlib.data` reads with os.read, so that thread holds no lock
    that the interpreter's exit needs."""
    outcome = {}

    def run():
        try:
            outcome['value'] = work()
        except BaseException as e:  # handed to the waiting thread
            outcome['error'] = e
    thread = threading.Thread(target=run, name='read-ahead', daemon=True)
    thread.start()

    def result():
        thread.join()
        if 'error' in outcome:
            raise outcome['error']
        return outcome['value']
    return result


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
        tokenizer: a `bertlib.tokenization.FullTokenizer` or a
            `bertlib.sentencepiece_tokenization.SentencePieceTokenizer`.
        encode: callable (input_ids, input_mask) -> Variable or array (B, D); it is called
            in test mode without back-propagation.
        max_seq_length: longest token sequence, [CLS] and [SEP] included; longer
            sentences are truncated and counted in `self.truncated`.
        batchsize: sentences per forward pass.
        xp: numpy or cupy, where the model lives.
        comm: a ChainerMN communicator to share the work with (every rank calls this
            with the same arguments; only rank 0's `examples` are read and only rank 0
            gets pairs), or None.
    """

    def __init__(self, tokenizer, encode, max_seq_length=128, batchsize=64, xp=np,
                 chunk_batches=32, comm=None):
        self.tokenizer = tokenizer
        self.encode = encode
        self.max_seq_length = max_seq_length
        self.batchsize = batchsize
        self.xp = xp
        self.chunk_size = batchsize * chunk_batches
        self.truncated = 0
        self.count = 0
        self.comm = comm

    def _tokenize(self, texts):
        id_lists = []
        for text in texts:
            ids, truncated = self.tokenizer.encode(text, self.max_seq_length)
            self.truncated += truncated
            id_lists.append(ids)
        return id_lists

    def __call__(self, examples, progress=None):
        """Yields (example, float32 vector) in the order of `examples`."""
        if self.comm is not None:
            yield from self._shared(examples, progress)
            return
        chunks = _chunks(examples, self.chunk_size)

        def read_and_tokenize():
            chunk = next(chunks, None)
            return chunk, chunk and self._tokenize([example.text for example in chunk])
        # The next chunk is read and tokenised in a thread while this one is encoded (and
        # the caller formats its rows): the device, or NumPy's BLAS, which releases the
        # GIL, is kept busy meanwhile.
        ahead = _in_background(read_and_tokenize)
        while True:
            chunk, id_lists = ahead()
            if chunk is None:
                break
            ahead = _in_background(read_and_tokenize)
            vectors = encode_sorted(id_lists, self.encode, self.batchsize, self.xp,
                                    progress)
            for example, vector in zip(chunk, vectors):
                self.count += 1
                yield example, vector

    def _shared(self, examples, progress):
        """The rounds of a data-parallel run; pairs come out on rank 0 only."""
        comm = self.comm
        chunks = _chunks(examples, self.chunk_size) if comm.rank == 0 else None
        while True:
            chunk = next(chunks, None) if comm.rank == 0 else None
            texts = comm.mpi_comm.bcast(None if chunk is None else [e.text for e in chunk])
            if texts is None:
                break
            # Each rank tokenises a slice; all need every length to cut the same batches.
            start, stop = distributed.share(len(texts), comm.rank, comm.size)
            parts = comm.mpi_comm.allgather(self._tokenize(texts[start:stop]))
            id_lists = [ids for part in parts for ids in part]
            vectors = distributed.encode_sorted(comm, id_lists, self.encode, self.batchsize,
                                                self.xp, to_all=False)
            if comm.rank == 0:
                if progress is not None:
                    progress(len(chunk))
                for example, vector in zip(chunk, vectors):
                    self.count += 1
                    yield example, vector
        self.truncated = sum(comm.mpi_comm.allgather(self.truncated))


def format_row(label, vector):
    """'label<TAB>f1<TAB>f2...' with six decimals, as the original BERT-DML wrote
    them."""
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
    group.add_argument('--max_length', type=int, default=None,
                       help='read only the first N lines of --input, as the original '
                            'BERT-DML\'s flag of that name (default: all lines)')
    return parser


def read_examples(args, require_label=False):
    """The examples of --input, up to line --max_length when it is given
    (`data.iter_examples`)."""
    examples = data.iter_examples(args.input, require_label=require_label)
    limit = getattr(args, 'max_length', None)
    if limit is None:
        return examples
    return itertools.takewhile(lambda e: e.line_number <= limit, examples)


def check_io(args, inputs, comm=None):
    """Checks --input (readable, UTF-8) and --output before any work; returns the number
    of non-empty input lines (None for standard input or a pipe, which are read once, as
    they stream). --output may be none of `inputs` ([(flag, path)]: every file the
    command reads, `flags.input_files`). With a communicator only rank 0 reads and writes,
    so only it checks, and tells the others the count."""
    if comm is not None:
        return comm.mpi_comm.bcast(check_io(args, inputs) if comm.rank == 0 else None)
    limit = getattr(args, 'max_length', None)
    if limit is not None and limit < 1:
        raise UsageError('--max_length must be at least 1 line, got %d' % limit)
    total = data.check_input(args.input)
    check_output(args.output, '--output', inputs)
    if total is not None and limit is not None:
        total = min(total, limit)
    return total


def argument_parser(description):
    """The parser of an extraction script: --input/--output, then the BERT flags (with
    --communicator); the script adds its model's own."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_io_arguments(parser)
    flags.add_bert_arguments(parser, communicator=True)
    return parser


def start(args):
    """Joins the MPI group (--communicator), checks the BERT files, --input and --output,
    and picks --gpu, in that order, before any slow work.

    Returns (comm or None, the number of input lines or None when unknown, device).
    """
    comm = distributed.setup(args)
    flags.check_bert_arguments(args)
    total = check_io(args, flags.input_files(args), comm)
    device = devices.select_device(args.gpu, comm)
    return comm, total, device


def run(args, tokenizer, encode, xp, total=None, comm=None):
    """Extracts features of every line of --input with `encode` and writes them.

    comm: a ChainerMN communicator (every rank calls this): the ranks share the encoding,
    rank 0 alone reads --input and writes --output. None: this process does it all."""
    extractor = FeatureExtractor(tokenizer, encode, max_seq_length=args.max_seq_length,
                                 batchsize=args.batchsize, xp=xp, comm=comm)
    if comm is not None and comm.rank != 0:
        for _ in extractor(None):
            pass
        return 0
    progress = Progress(total, unit='lines', what='extracting')
    start = time.time()
    pairs = extractor(read_examples(args), progress)
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
