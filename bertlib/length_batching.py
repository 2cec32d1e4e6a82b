"""Encoding token-id lists in batches of similar length: the engine under extraction,
evaluation and training.

A sentence's output does not depend on the other sentences of its batch, so batches may
be cut from the length-sorted order and each padded only to its own longest sentence;
the rows are put back in input order afterwards. `bertlib.distributed` shares the same
batches and pieces between MPI ranks; `bertlib.features` is the extraction pipeline of
the `extruct_bert_*.py` scripts on top of this module. This module imports neither.
"""

import chainer
import chainer.functions as F
import numpy as np


def pad_batch(id_lists, xp=np, length=None):
    """Lists of token ids -> (input_ids, input_mask), int32 arrays of shape (B, T).

    T is the longest list's length, or `length` (>= it) where a data-parallel process
    must pad its rows as the whole batch is padded."""
    length = max(len(ids) for ids in id_lists) if length is None else length
    input_ids = np.zeros((len(id_lists), length), dtype=np.int32)
    input_mask = np.zeros((len(id_lists), length), dtype=np.int32)
    for row, ids in enumerate(id_lists):
        input_ids[row, :len(ids)] = ids
        input_mask[row, :len(ids)] = 1
    return xp.asarray(input_ids), xp.asarray(input_mask)


def length_batches(id_lists, batchsize):
    """Index lists of at most `batchsize` sentences of similar length: the order sorted
    by length, cut every `batchsize`."""
    order = sorted(range(len(id_lists)), key=lambda i: len(id_lists[i]))
    return [order[start:start + batchsize] for start in range(0, len(order), batchsize)]


def encode_batches(id_lists, batches, encode, xp=np, progress=None):
    """Encodes the given index `batches` of `id_lists` in test mode; returns the float32
    vectors of their rows, (sum of batch sizes, D), batch after batch; None if none."""
    parts, pending = [], []
    cpu = chainer.backend.CpuDevice()

    def collect(array, count):
        parts.append(cpu.send(array))
        if progress is not None:
            progress(count)
    for batch in batches:
        input_ids, input_mask = pad_batch([id_lists[i] for i in batch], xp)
        with chainer.using_config('train', False), chainer.no_backprop_mode():
            encoded = encode(input_ids, input_mask)
        # A batch's vectors are copied to the host after the next batch is queued, so a
        # GPU is not left idle while the host waits for the copy and pads the next batch.
        pending.append((getattr(encoded, 'array', encoded), len(batch)))
        if len(pending) > 1:
            collect(*pending.pop(0))
    for array, count in pending:
        collect(array, count)
    return np.concatenate(parts).astype(np.float32, copy=False) if parts else None


def encode_sorted(id_lists, encode, batchsize, xp=np, progress=None):
    """Encodes token-id lists in batches of similar length; returns (N, D) float32 rows in
    the order of `id_lists`. `encode(input_ids, input_mask)` runs in test mode."""
    batches = length_batches(id_lists, batchsize)
    encoded = encode_batches(id_lists, batches, encode, xp, progress)
    if encoded is None:
        return None
    vectors = np.empty_like(encoded)
    vectors[[i for batch in batches for i in batch]] = encoded
    return vectors


def length_pieces(xp):
    """How many length pieces `encode_by_length` cuts a training batch into: 4 on the
    CPU, 1 on a GPU, where the padding they save costs less than the extra launches of
    four small forward and backward passes."""
    return 4 if xp is np else 1


def cut_by_length(id_lists, pieces):
    """The rows of a training batch in `pieces` runs of similar length: a list of int
    index arrays, (ceil(B / pieces),) each but the last, that together are the stable
    length-sorted order of `id_lists`. One process and the MPI ranks cut alike."""
    order = np.argsort([len(ids) for ids in id_lists], kind='stable')
    size = -(-len(order) // pieces)
    return [order[start:start + size] for start in range(0, len(order), size)]


def restore_order(rows, embeddings, xp):
    """`embeddings` (B, D), whose row k is that of sentence `rows[k]`, put back in
    sentence order; a differentiable Variable."""
    position = np.empty(len(rows), dtype=np.int64)
    position[np.asarray(rows, dtype=np.int64)] = np.arange(len(rows))
    return F.get_item(embeddings, xp.asarray(position))


def encode_by_length(encode, id_lists, xp, pieces=None):
    """encode(...) of a training batch, computed in `pieces` runs of similar length
    (default: `length_pieces(xp)`, runs cut by `cut_by_length`).

    A sentence's output does not depend on the others in its batch, so splitting a
    random batch by length gives the same result while padding each piece only to its
    own longest sentence: on rt-polarity a batch of 64 otherwise pads to about twice the
    mean length. Returns a (B, D) Variable, differentiable, in the order of `id_lists`.
    """
    cut = cut_by_length(id_lists, pieces or length_pieces(xp))
    parts = [encode(*pad_batch([id_lists[i] for i in piece], xp)) for piece in cut]
    embeddings = F.concat(parts, axis=0) if len(parts) > 1 else parts[0]
    return restore_order(np.concatenate(cut), embeddings, xp)
