"""Data-parallel training and sharded extraction over MPI with ChainerMN.

`mpiexec -n N python train_dml.py --communicator naive ...` starts N copies of a script;
`setup` makes each one a rank of a ChainerMN communicator. Without --communicator
nothing here runs and every function below is the single-process one.

Training (`encode_by_length`, `wrap_optimizer`). --batchsize stays the global batch and
every rank draws the same batches (same seeds). The encoder runs sharded: each rank
encodes a slice of every length piece of the batch, the embeddings are gathered with the
differentiable `chainermn.functions.allgather`, and every rank computes the loss of the
whole batch, the same number one process computes. The gradient then comes out right
with no rescaling: the gather's backward sums the N ranks' (identical) gradients into
each slice, N * dL/d(slice), and the multi-node optimizer averages the parameter
gradients over the N ranks, which divides by N again. Parameters after the gather (the
ArcFace proxies) get dL/dW on every rank, whose mean is dL/dW. Because the loss is that
of the whole batch, it holds for every loss (batch-level P x K ones, triplets, softmax
cross-entropy) and for an uneven last batch alike. Each slice is padded as the whole
piece and its dropout masks are the rows of the whole piece's masks
(`bertlib.dropout.rows`), so on the CPU N ranks train as one process does.

Evaluation and extraction (`encode_sorted`) cut the same length-sorted batches as one
process and deal them out round-robin, so the vectors are the same numbers too.

Errors. A `UsageError` on a rank ends the job: rank 0's message is printed and
MPI_Abort stops every rank (`fail`); errors that every rank finds together
(`AgreedError`) end it without MPI_Abort. Any other exception goes to ChainerMN's
global exception hook, which prints it with its rank and calls MPI_Abort: no rank is
left waiting in a collective.
"""

import hashlib
import logging
import os
import socket
import sys
import time
import warnings

import numpy as np

from bertlib.errors import UsageError

logger = logging.getLogger(__name__)

COMMUNICATORS = ('naive', 'flat', 'pure_nccl')
# Communicators that move gradients in GPU memory.
_GPU_ONLY = ('flat', 'pure_nccl')
# How long a rank other than 0 waits before reporting its own UsageError, so that an
# error every rank hits is printed once, by rank 0, whose MPI_Abort ends the others.
_PEER_GRACE_SECONDS = 3.0

_world = None  # mpi4py's COMM_WORLD once `setup` ran


class AgreedError(UsageError):
    """A UsageError that every rank raises at the same point (e.g. data files that
    differ between ranks): rank 0 prints it, every rank exits, no MPI_Abort needed."""


def setup(args):
    """The communicator of --communicator, or None without it (a single process).

    Ranks other than 0 are made quiet (stdout to /dev/null, only errors logged), and an
    uncaught exception on any rank aborts the whole job."""
    global _world
    name = getattr(args, 'communicator', None)
    if not name:
        return None
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise UsageError('--communicator %s needs mpi4py and an MPI library (%s): run '
                         '`make mpi`' % (name, e))
    _world = MPI.COMM_WORLD
    import chainermn
    import chainermn.global_except_hook
    chainermn.global_except_hook.add_hook()
    # ChainerMN flags allgather and friends as experimental at every call.
    warnings.filterwarnings('ignore', message=r'chainermn\..* is experimental',
                            category=FutureWarning)
    if _world.rank != 0:
        sys.stdout = open(os.devnull, 'w')
        logging.getLogger().setLevel(logging.ERROR)
    if name in _GPU_ONLY:
        _check_gpu_communicator(name, args.gpu)
    try:
        comm = chainermn.create_communicator(name, mpi_comm=_world)
    except (ImportError, RuntimeError) as e:
        raise AgreedError('--communicator %s cannot start: %s; use --communicator naive'
                          '%s' % (name, e, '' if name == 'flat' else ' or flat'))
    logger.info('%d processes, communicator %s', comm.size, name)
    return comm


def _check_gpu_communicator(name, gpu):
    if gpu < 0:
        raise AgreedError('--communicator %s moves gradients in GPU memory and needs '
                          '--gpu (one GPU per process); on the CPU use --communicator '
                          'naive' % name)
    try:
        import cupy  # noqa: F401
    except ImportError:
        raise AgreedError('--communicator %s --gpu %d: CuPy is not installed; install the '
                          'one for your CUDA (e.g. cupy-cuda12x), or use --communicator '
                          'naive on the CPU' % (name, gpu))


def check_training_communicator(args):
    """Training on GPUs needs a communicator that moves gradients in GPU memory without
    MPI: naive and flat hand GPU pointers to MPI, which the MPICH of `make mpi` (no CUDA
    support) cannot read. Called before anything is loaded."""
    name = getattr(args, 'communicator', None)
    if name in ('naive', 'flat') and args.gpu >= 0:
        raise AgreedError('--communicator %s --gpu %d: %s hands GPU memory to MPI, and '
                          'this MPI has no CUDA support; train on GPUs with --communicator '
                          'pure_nccl (NCCL), or on the CPU with --gpu -1' % (name, args.gpu, name))


def is_root(comm):
    """True on the process that prints and writes: rank 0, or the only process."""
    return comm is None or comm.rank == 0


def fail(error, status=2):
    """Ends the job for a UsageError raised on this rank (process.run calls it)."""
    if _world is None or _world.size == 1:
        print('error: %s' % error, file=sys.stderr)
        sys.exit(status)
    rank = _world.rank
    if isinstance(error, AgreedError):
        if rank == 0:
            print('error: %s' % error, file=sys.stderr)
        sys.stderr.flush()
        sys.exit(status)
    if rank != 0:
        # If rank 0 has hit the same error, its MPI_Abort ends this process first.
        time.sleep(_PEER_GRACE_SECONDS)
    print('error: %s%s' % ('' if rank == 0 else 'rank %d: ' % rank, error), file=sys.stderr)
    sys.stderr.flush()
    _world.Abort(status)


def abort(status):
    """Ends every rank at once (e.g. rank 0's reader closed the pipe): no rank may be
    left waiting in a collective. Returns if there is no MPI job."""
    if _world is not None and _world.size > 1:
        _world.Abort(status)


def share(n, rank, size):
    """[start, stop) of `rank`'s contiguous share of n items; shares differ by <= 1."""
    return n * rank // size, n * (rank + 1) // size


# --- start-up checks ---------------------------------------------------------------------

def file_fingerprint(path):
    """(line count, sha256 hex digest) of a file's bytes, read in 1 MiB blocks."""
    digest, lines = hashlib.sha256(), 0
    with open(path, 'rb') as stream:
        for block in iter(lambda: stream.read(1 << 20), b''):
            digest.update(block)
            lines += block.count(b'\n')
    return lines, digest.hexdigest()


def check_same_files(comm, files):
    """Every rank must read the same data: agrees the line count and sha256 of each file
    in `files` ([(flag, path)]) across ranks; an `AgreedError` names the file otherwise.
    A pipe (/dev/stdin, `<(...)`) is refused: every rank would read another one, and
    fingerprinting it would consume it."""
    if comm is None or comm.size == 1:
        return
    mine = (socket.gethostname(), [file_fingerprint(path) if os.path.isfile(path) else None
                                   for _, path in files])
    everyone = comm.mpi_comm.allgather(mine)
    for index, (flag, path) in enumerate(files):
        if any(prints[index] is None for _, prints in everyone):
            raise AgreedError('%s %s is not a regular file (a pipe?): under --communicator '
                              'every process reads it, so it must be a file' % (flag, path))
        root_host, root_prints = everyone[0]
        reference = root_prints[index]
        for rank, (host, prints) in enumerate(everyone):
            if prints[index] != reference:
                lines, digest = prints[index]
                raise AgreedError(
                    '%s %s differs between processes: rank 0 (%s) reads %d lines, sha256 '
                    '%s..., rank %d (%s) reads %d lines, sha256 %s...; every process must '
                    'read the same file' % (flag, path, root_host, reference[0],
                                            reference[1][:12], rank, host, lines,
                                            digest[:12]))


# --- training ----------------------------------------------------------------------------

def wrap_optimizer(comm, optimizer, model):
    """Rank 0's weights to every rank, and `optimizer` wrapped so that each update
    averages the gradients over the ranks first. Returns `optimizer` without a comm.

    Call it after the model is on its device and any --resume state is loaded."""
    if comm is None:
        return optimizer
    import chainermn
    comm.bcast_data(model)
    multi = chainermn.create_multi_node_optimizer(optimizer, comm)
    # ChainerMN's optimizer treats its first update() as "the parameters changed":
    # it broadcasts instead of updating, which would drop the first batch. The weights
    # were just broadcast, so record the parameters now: every update() then updates.
    multi.is_changed(model)
    return multi


def bcast_model(comm, model):
    """Rank 0's weights to every rank (e.g. a model file only rank 0 has read)."""
    if comm is not None:
        comm.bcast_data(model)


def encode_by_length(comm, encode, id_lists, xp, pieces=None):
    """`length_batching.encode_by_length` of a training batch, with the work shared by
    the ranks.

    Every rank passes the whole batch and gets the whole (B, D) Variable back, rows in
    the order of `id_lists`, differentiable. The batch is cut into the same length
    pieces as in one process (`length_batching.cut_by_length`); each rank encodes a
    contiguous slice of every piece, padded to the piece's length, with the piece's dropout masks
    (`dropout.rows`).
    """
    from bertlib import length_batching  # here, not above: Chainer stays out of start-up (flags)
    pieces = pieces or length_batching.length_pieces(xp)
    if comm is None or comm.size == 1:
        return length_batching.encode_by_length(encode, id_lists, xp, pieces)
    import chainer.functions as F
    import chainermn.functions
    from bertlib import dropout
    parts, owners = [], [[] for _ in range(comm.size)]
    for piece in length_batching.cut_by_length(id_lists, pieces):
        length = max(len(id_lists[i]) for i in piece)
        for rank in range(comm.size):
            start, stop = share(len(piece), rank, comm.size)
            owners[rank].extend(piece[start:stop])
        start, stop = share(len(piece), comm.rank, comm.size)
        # A rank without rows here encodes the piece's first sentence and drops it:
        # its generator must move past the piece's masks, and its parameters need
        # (zero) gradients like every other rank's for the all-reduce.
        rows = piece[start:stop] if stop > start else piece[:1]
        window = (start, stop) if stop > start else (0, 1)
        input_ids, input_mask = length_batching.pad_batch([id_lists[i] for i in rows], xp, length)
        with dropout.rows(window[0], window[1], len(piece)):
            encoded = encode(input_ids, input_mask)
        parts.append(encoded if stop > start else encoded[:0])
    local = F.concat(parts, axis=0) if len(parts) > 1 else parts[0]
    if xp is np:
        everything = F.concat(chainermn.functions.allgather(comm, local), axis=0)
    else:
        # ChainerMN's allgather hands GPU pointers to MPI, which only a CUDA-aware MPI
        # takes (pure_nccl's NCCL covers weights and gradients, not this). The (B/N, D)
        # embeddings are small: gather them through host memory, differentiably.
        gpu = int(local.array.device.id)
        gathered = chainermn.functions.allgather(comm, F.copy(local, -1))
        everything = F.copy(F.concat(gathered, axis=0), gpu)
    rows = [i for owned in owners for i in owned]
    return length_batching.restore_order(rows, everything, xp)


# --- evaluation and extraction ----------------------------------------------------------

def encode_sorted(comm, id_lists, encode, batchsize, xp=np, progress=None, to_all=True):
    """`length_batching.encode_sorted` with the batches dealt out to the ranks round-robin.

    Every rank passes the same `id_lists`; the result, (N, D) float32 in their order, is
    on every rank (`to_all`) or on rank 0 only (None elsewhere). The batches are those
    of one process, so are the vectors."""
    from bertlib import length_batching  # here, not above: Chainer stays out of start-up (flags)
    if comm is None:
        return length_batching.encode_sorted(id_lists, encode, batchsize, xp, progress)
    batches = length_batching.length_batches(id_lists, batchsize)
    mine = batches[comm.rank::comm.size]
    rows = [i for batch in mine for i in batch]
    vectors = length_batching.encode_batches(id_lists, mine, encode, xp, progress)
    mpi = comm.mpi_comm
    pieces = mpi.allgather((rows, vectors)) if to_all else mpi.gather((rows, vectors))
    if pieces is None:
        return None
    dims = [v.shape[1] for _, v in pieces if v is not None]
    if not dims:
        return None
    result = np.empty((len(id_lists), dims[0]), dtype=np.float32)
    for piece_rows, piece_vectors in pieces:
        if piece_rows:
            result[piece_rows] = piece_vectors
    return result
