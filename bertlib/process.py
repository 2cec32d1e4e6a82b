"""How every script runs as a process: logging to stderr, the standard streams checked,
SIGTERM and Ctrl-C turned into clean exits, and bad input turned into one `error:` line
and exit status 2 instead of a traceback."""

import ctypes
import errno
import logging
import os
import signal
import sys

from bertlib import distributed
from bertlib.errors import UsageError

LOG_FORMAT = '%(asctime)s - %(funcName)s - %(levelname)s - %(message)s'


def setup_logging(level=logging.INFO):
    """Logs go to stderr in the original BERT-DML's format; stdout is left for data."""
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr)


def keep_freed_memory():
    """Tells glibc to keep freed blocks instead of returning them to the system.

    NumPy's large temporaries (tens of MB in a BERT layer) are otherwise mmapped and
    unmapped at every operation, and every fresh page faults on first touch: that cost
    CPU inference about 10% of its time.
    """
    if not sys.platform.startswith('linux'):
        return
    try:
        libc = ctypes.CDLL('libc.so.6')
    except OSError:
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    libc.mallopt(M_MMAP_THRESHOLD, 1 << 30)
    libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that it cleans up as Ctrl-C does (temporary
    files removed, the last complete files kept)."""


_MAIN_PID = []  # the process that installed the handler


def _terminate(signum, frame):
    if os.getpid() not in _MAIN_PID:
        # A forked worker (e.g. a clustering child) dies of SIGTERM as it always did.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    raise Terminated()


def run(main):
    """Runs `main()` as a script: UsageError -> 'error: ...' and exit 2, no traceback.

    So is an OSError that escaped (a full disk, also under a redirected stdout, which is
    flushed here so that its error is ours, not the interpreter's at exit). SIGTERM ends
    the run as Ctrl-C does, with status 143 (130 for Ctrl-C).

    Under mpiexec (--communicator) a rank's error ends every rank: see
    `distributed.fail`."""
    try:
        check_standard_streams()
    except UsageError as e:
        print('error: %s' % e, file=sys.stderr)
        sys.exit(2)
    setup_logging()
    keep_freed_memory()
    _MAIN_PID[:] = [os.getpid()]
    signal.signal(signal.SIGTERM, _terminate)
    try:
        status = main()
        sys.stdout.flush()
    except UsageError as e:
        _flush_stdout()
        distributed.fail(e, 2)
    except Terminated:
        _flush_stdout()
        print('terminated', file=sys.stderr)
        sys.exit(143)
    except KeyboardInterrupt:
        _flush_stdout()
        print('interrupted', file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:
        # The reader (e.g. `head`) went away; that is not an error of ours.
        _silence_stdout()
        distributed.abort(0)  # the other ranks would wait for rank 0 for ever
        sys.exit(0)
    except OSError as e:
        _silence_stdout()
        where = e.filename if e.filename is not None else 'standard output' \
            if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO) else None
        distributed.fail(UsageError('%s%s' % ('%s: ' % where if where else '',
                                             e.strerror or e)), 2)
    sys.exit(status or 0)


def _flush_stdout():
    """Writes out what was printed before an error; drops it if that fails too."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        _silence_stdout()


def _silence_stdout():
    """Points stdout at /dev/null, dropping what could not be written: the interpreter
    would otherwise fail again flushing it at exit, with a second message."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def check_standard_streams():
    """Gives a closed standard stream (a shell's `<&-`, `>&-`, `2>&-`) /dev/null in its
    place, so that no file the run opens gets descriptor 0, 1 or 2 (print() would write
    into it); a closed standard output is then an error, as what would be printed there
    (features, tables, the flags) would be lost. A closed standard input stays None:
    `data` refuses '-' then."""
    closed = []
    for fd, name in ((0, 'stdin'), (1, 'stdout'), (2, 'stderr')):
        if getattr(sys, name) is None:
            closed.append(name)
            replacement = os.open(os.devnull, os.O_RDWR)
            if replacement != fd:
                os.dup2(replacement, fd)
                os.close(replacement)
    if 'stderr' in closed:
        sys.stderr = open(2, 'w', closefd=False)  # the error messages go nowhere, quietly
    if 'stdout' in closed:
        sys.stdout = open(1, 'w', closefd=False)
        raise UsageError('standard output is closed (>&-): redirect it to a file or to '
                         '/dev/null')
