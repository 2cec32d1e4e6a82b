"""Where a run computes: the CPU or a CUDA GPU for --gpu, tried before any work, and
under MPI (--communicator) which GPU each process of a node takes."""

import os

from bertlib.errors import UsageError


def select_device(gpu, comm=None):
    """Returns the chainer device for `--gpu`: the CPU for -1, else a CUDA device that
    has been tried (a small cuBLAS product and a compiled kernel ran on it).

    With a communicator, the processes of a node share its GPUs: the one that is r-th
    on its node (comm.intra_rank) takes GPU `gpu` + r, unless each process sees GPUs of
    its own (a scheduler sets CUDA_VISIBLE_DEVICES per process): then each takes `gpu`
    of what it sees. Every failure is a UsageError that names the fix."""
    import chainer
    if gpu < 0:
        return chainer.get_device('@numpy')
    count = _visible_gpus(gpu)
    index = gpu
    if comm is not None:
        index = gpu_for_rank(gpu, count, comm.intra_rank, comm.intra_size)
    if index >= count:
        raise UsageError('--gpu %d: only %d GPU(s) visible (CUDA_VISIBLE_DEVICES=%s)'
                         % (gpu, count, os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')))
    device = _try_gpu(gpu, index)
    if comm is not None:
        check_distinct_gpus(comm.mpi_comm.allgather((_hostname(), _bus_id(index))), gpu)
    return device


def _visible_gpus(gpu):
    """How many GPUs CuPy sees; a UsageError if CuPy or the driver is missing."""
    try:
        import cupy
    except ImportError:
        raise UsageError('--gpu %d: CuPy is not installed; install it with `make gpu` '
                         '(CUDA 12) or `make gpu CUDA=13`, or run on the CPU with --gpu -1'
                         % gpu)
    except Exception as e:  # a CuPy built for another NumPy or CUDA
        raise UsageError('--gpu %d: CuPy does not import (%s); reinstall it with `make '
                         'gpu`, or run on the CPU with --gpu -1' % (gpu, _first_line(e)))
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # no driver, or no GPU on this machine (a login node)
        raise UsageError('--gpu %d: no usable CUDA GPU (%s); run on the CPU with --gpu -1'
                         % (gpu, _first_line(e)))
    if count == 0:
        raise UsageError('--gpu %d: no CUDA GPU visible; run on the CPU with --gpu -1' % gpu)
    return count


def gpu_for_rank(gpu, count, intra_rank, intra_size):
    """The GPU index, among the `count` this process sees, for the `intra_rank`-th of
    `intra_size` processes on a node started with --gpu `gpu`."""
    if gpu + intra_size <= count:
        return gpu + intra_rank  # every process sees all the node's GPUs
    if count < intra_size and gpu < count:
        return gpu  # too few to share: each process sees its own (CUDA_VISIBLE_DEVICES)
    raise UsageError('--gpu %d: process %d of %d on this node needs GPU %d but only %d are '
                     'visible: start at most %d processes per node, or give each its own '
                     'GPU with CUDA_VISIBLE_DEVICES'
                     % (gpu, intra_rank + 1, intra_size, gpu + intra_rank, count,
                        max(count - gpu, 0)))


def check_distinct_gpus(placements, gpu):
    """placements: (host, PCI bus id) of every rank. Two ranks on one GPU would share
    its memory and NCCL refuses them: a UsageError names the two."""
    seen = {}
    for rank, placement in enumerate(placements):
        if placement in seen:
            raise UsageError('--gpu %d: processes %d and %d on %s both use the GPU at %s; '
                             'give each process its own GPU (CUDA_VISIBLE_DEVICES)'
                             % (gpu, seen[placement], rank, placement[0], placement[1]))
        seen[placement] = rank


def _try_gpu(gpu, index):
    """Makes GPU `index` current and runs a cuBLAS product and an NVRTC-compiled kernel
    on it, so that a broken CUDA set-up stops here with one line, not mid-training."""
    import chainer
    from chainer.backends import cuda
    if not cuda.available:
        raise UsageError('--gpu %d: Chainer cannot use CuPy (%s); reinstall CuPy for your '
                         'CUDA with `make gpu` or `make gpu CUDA=13`'
                         % (gpu, _first_line(cuda._resolution_error)))
    try:
        device = chainer.get_device('@cupy:%d' % index)
        device.use()
        import cupy
        a = cupy.arange(16, dtype=cupy.float32).reshape(4, 4)
        value = float((a @ a).sum() + cupy.ElementwiseKernel(
            'float32 x', 'float32 y', 'y = x * 2', 'bertlib_probe')(a).sum())
    except Exception as e:  # missing cuBLAS or NVRTC, driver too old, GPU busy
        raise UsageError('--gpu %d: CUDA cannot run on GPU %d (%s: %s); check the driver '
                         '(nvidia-smi) and reinstall CuPy for your CUDA with `make gpu` or '
                         '`make gpu CUDA=13`' % (gpu, index, type(e).__name__, _first_line(e)))
    if value != 3920.0 + 240.0:
        raise UsageError('--gpu %d: GPU %d computed a wrong test sum (%s)' % (gpu, index, value))
    return device


def _bus_id(index):
    import cupy
    return cupy.cuda.Device(index).pci_bus_id


def _hostname():
    import socket
    return socket.gethostname()


def _first_line(error):
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
