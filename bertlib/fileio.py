"""Writing outputs that behave like ordinary files but are never left torn.

`atomic_write(path)`: a regular file (or a new one) is written to a temporary file beside
it and renamed over it, so a killed process leaves the old content or none. The new file
gets the mode an ordinary `open` would give it (0666 less the umask) or, when it replaces
a file, that file's mode and owner; a symlink is followed to the file it names. Anything
that is not a regular file (/dev/null, /dev/stdout, a terminal, a pipe) is written straight
to. A failed write (full disk, read-only folder) is a `UsageError` naming the path.

Files that the program names itself inside a folder (`--out`, `--resume`, `--projector`
DIR: labels.bin, models, states, logs, the journal, the lock) never follow a symlink: a
folder received from someone else may hold links to any file of the user's. They are
written with `follow_symlinks=False` (the entry itself is replaced, whatever it is) and
the lock is opened with O_NOFOLLOW. A file the user names on the command line (`-o`) may
be a symlink, as for a shell redirection.

Temporary files are created with O_EXCL and hold an flock while they are written, so the
next `atomic_write` of the same path removes what a killed one left (`_remove_stale`)
without touching a temporary that another process is still writing.

`Commit`: several files replaced as one unit (an epoch's model, optimizer state and log),
all or none even if the process is killed. `DirectoryLock` and `remove_leftovers` let one
training at a time own an output folder and clear what a killed run left there.
`check_output` checks an output file before any work: not a folder, in a folder that
exists, and not one of the command's inputs (by file identity).
"""

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import stat

from bertlib.errors import UsageError

logger = logging.getLogger(__name__)

# Temporary files are '.<name>.<8 random characters>.tmp' beside <name> (mkstemp's former
# pattern too), so that the leftovers of a killed run can be recognised and removed.
_TEMP = re.compile(r'^\..+\.[A-Za-z0-9_]{8}\.tmp$')

# Errors of writing that are the user's situation, not a bug: reported as one line.
_WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES,
                 errno.EPERM, errno.EIO, errno.ENOENT, errno.ENOTDIR, errno.EISDIR)


def write_error(path, error):
    """The UsageError for an OSError met while writing `path`."""
    return UsageError('%s: cannot write: %s' % (path, error.strerror or error))


def _is_stream(path):
    """True for an existing path that is not a regular file (device, pipe, socket, or a
    /dev or /proc alias of a descriptor such as /dev/stdout): written straight to."""
    if os.path.abspath(path).startswith(('/dev/', '/proc/')):
        return True
    try:
        mode = os.stat(path).st_mode  # follows symlinks
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def _temporary_name(target):
    directory, name = os.path.split(target)
    return os.path.join(directory, '.%s.%s.tmp' % (name, os.urandom(4).hex()))


def _is_temporary_of(entry, name):
    """True when the directory entry `entry` is a temporary file name of `name`."""
    return bool(_TEMP.match(entry)) and entry[1:-len('.12345678.tmp')] == name


def _create_temp(target, follow_symlinks=True):
    """(fd, path) of a new temporary file beside `target`, flock-ed until it is closed;
    open(2) applies the umask to 0666, as for any new file. An existing regular target's
    mode and owner are copied (of the file a symlink names, with `follow_symlinks`)."""
    for _ in range(100):
        tmp = _temporary_name(target)
        try:
            # O_EXCL: never opens an existing file, nor follows a planted symlink.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except FileExistsError:
            continue
        with contextlib.suppress(OSError):  # no flock (some network file systems)
            fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_nlink:
            break
        os.close(fd)  # `_remove_stale` took it for a leftover before the lock: again
    else:
        raise FileExistsError(errno.EEXIST, 'no free temporary name', target)
    try:
        existing = os.stat(target, follow_symlinks=follow_symlinks)
    except OSError:  # a new file
        return fd, tmp
    if not stat.S_ISREG(existing.st_mode):
        return fd, tmp
    os.fchmod(fd, stat.S_IMODE(existing.st_mode))
    if (existing.st_uid, existing.st_gid) != (os.getuid(), os.getgid()):
        with contextlib.suppress(OSError):  # only root may give a file away
            os.fchown(fd, existing.st_uid, existing.st_gid)
    return fd, tmp


def _open(fd, mode, encoding):
    if 'b' in mode:
        return os.fdopen(fd, mode)
    return os.fdopen(fd, mode, encoding=encoding, newline='\n')


def _remove_stale(target):
    """Removes the temporary files of `target` that killed processes left beside it: those
    whose flock can be taken (a live writer holds its own). Returns their names."""
    directory, name = os.path.split(target)
    removed = []
    try:
        entries = os.listdir(directory or '.')
    except OSError:
        return removed
    for entry in sorted(entries):
        if not _is_temporary_of(entry, name):
            continue
        path = os.path.join(directory, entry)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            held = os.fstat(fd)
            if not stat.S_ISREG(held.st_mode):
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # being written, or no flock here: left alone
                continue
            now = os.lstat(path)
            if (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
                os.unlink(path)
                removed.append(entry)
        except OSError:
            continue
        finally:
            os.close(fd)
    if removed:
        logger.info('%s: removed %d temporary files of a killed run (%s)',
                    directory or '.', len(removed), ', '.join(removed))
    return removed


@contextlib.contextmanager
def atomic_write(path, mode='w', encoding='utf-8', follow_symlinks=True):
    """Opens `path` for writing ('w' or 'wb'); see the module docstring.

    If the block raises (or the process dies), a regular `path` keeps its old content, or
    stays absent, and the temporary file is removed (by the next write of `path` if the
    process was killed). follow_symlinks=False, for a file the program names inside a
    folder: `path` itself is replaced, even a symlink, a pipe or a device, never what a
    symlink names (a folder is refused).
    """
    if os.path.isdir(path) and (follow_symlinks or not os.path.islink(path)):
        raise UsageError('%s: is a directory, not an output file' % path)
    if follow_symlinks and _is_stream(path):
        try:
            stream = _open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666),
                           mode, encoding)
        except OSError as e:
            raise write_error(path, e)
        try:
            with stream:
                yield stream
        except OSError as e:
            if e.errno in _WRITE_ERRORS and e.filename is None:
                raise write_error(path, e)
            raise
        return
    target = os.path.realpath(path) if follow_symlinks else os.path.abspath(path)
    _remove_stale(target)

    def replace(tmp):
        os.replace(tmp, target)

    with _temporary(target, mode, encoding, path, replace, follow_symlinks) as stream:
        yield stream


@contextlib.contextmanager
def _temporary(target, mode, encoding, shown, finish=lambda tmp: None,
               follow_symlinks=True):
    """Writes a new temporary file beside `target`: yields its stream; when the block
    ends, syncs it to disk and calls finish(temporary path). On any error the temporary
    is removed, and an OSError of the writing becomes write_error(shown)."""
    try:
        fd, tmp = _create_temp(target, follow_symlinks)
    except OSError as e:
        raise write_error(shown, e)
    try:
        with _open(fd, mode, encoding) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        finish(tmp)
    except OSError as e:
        _unlink(tmp)
        if e.errno in _WRITE_ERRORS and e.filename in (None, tmp, target):
            raise write_error(shown, e)
        raise
    except BaseException:
        _unlink(tmp)
        raise


def _unlink(path):
    with contextlib.suppress(OSError):
        os.unlink(path)


def _fsync_directory(directory):
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Commit(object):
    """Files of one folder replaced together: all of them or none.

    Each file is first written completely beside its target (`open`); `apply` then writes
    a journal naming the pairs, renames every file into place and removes the journal. A
    process killed before the journal exists leaves the old files (its temporaries are
    leftovers); one killed after has its renames finished by the next run (`recover`).
    """

    JOURNAL = '.commit.json'

    def __init__(self, directory):
        self.directory = directory
        self.pending = {}  # file name -> temporary file name, both inside `directory`

    @contextlib.contextmanager
    def open(self, name, mode='wb', encoding='utf-8'):
        target = os.path.join(self.directory, name)

        def keep(tmp):
            self.pending[name] = os.path.basename(tmp)

        with _temporary(target, mode, encoding, target, keep, follow_symlinks=False) \
                as stream:
            yield stream

    def apply(self):
        """Moves every file written with `open` into place, as one unit."""
        journal = os.path.join(self.directory, self.JOURNAL)
        with atomic_write(journal, follow_symlinks=False) as f:
            json.dump(self.pending, f, sort_keys=True)
        _fsync_directory(self.directory)
        _finish(self.directory, self.pending)
        self.pending = {}

    def discard(self):
        for tmp in self.pending.values():
            _unlink(os.path.join(self.directory, tmp))
        self.pending = {}


def recover(directory):
    """Finishes a commit that a killed process left half-done in `directory`. Returns the
    names of the files it moved into place ([] when there was nothing to do)."""
    journal = os.path.join(directory, Commit.JOURNAL)
    try:
        with open_plain(journal) as f:
            data = f.read(LIMITS['journal'] + 1)
        if len(data) > LIMITS['journal']:
            raise UsageError('%s: larger than %d MB, so not a commit journal of this '
                             'program; remove it' % (journal, LIMITS['journal'] // MB))
        pending = parse_json(data, journal, 'commit journal')
    except FileNotFoundError:
        return []
    except NotPlainFile:
        raise UsageError('%s: not a commit journal of this program (a symbolic link or '
                         'not a regular file); remove it' % journal)
    except (OSError, ValueError) as e:
        raise UsageError('%s: unreadable commit journal (%s); remove it to start over'
                         % (journal, e))
    # A journal may come from someone else's folder: it may only rename a temporary file
    # of this folder onto a plain name in this folder.
    if not isinstance(pending, dict) or not all(
            isinstance(n, str) and isinstance(t, str) and '/' not in n + t
            and not n.startswith('.') and _TEMP.match(t) and t.startswith('.' + n + '.')
            for n, t in pending.items()):
        raise UsageError('%s: not a commit journal of this program; remove it' % journal)
    try:
        moved = _finish(directory, pending)
    except OSError as e:
        raise write_error(directory, e)
    return moved


def _finish(directory, pending):
    moved = []
    for name, tmp in sorted(pending.items()):
        source = os.path.join(directory, tmp)
        if os.path.exists(source):  # those renamed before the kill are gone already
            os.replace(source, os.path.join(directory, name))
            moved.append(name)
    _fsync_directory(directory)
    os.unlink(os.path.join(directory, Commit.JOURNAL))
    _fsync_directory(directory)
    return moved


class NotPlainFile(OSError):
    """`open_plain` found a symbolic link, a folder, a pipe or a device."""


def open_plain(path):
    """Opens `path`, a file of a folder the program names its files in, for reading in
    binary: a symbolic link (never followed) or anything but a regular file is a
    `NotPlainFile`, and opening it never blocks (a planted FIFO)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise NotPlainFile(errno.ELOOP, 'a symbolic link', path)
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotPlainFile(errno.EINVAL, 'not a regular file', path)
    os.set_blocking(fd, True)
    return os.fdopen(fd, 'rb')


def remove_leftovers(directory):
    """Removes the temporary files that killed runs left in `directory` (call it while
    holding the folder's `DirectoryLock`, after `recover`). Returns their names."""
    removed = []
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if _TEMP.match(name) and os.path.isfile(path) and not os.path.islink(path):
            _unlink(path)
            removed.append(name)
    return removed


class DirectoryLock(object):
    """An exclusive lock on a folder (flock on DIR/.lock), held until the process exits:
    two trainings into one --out would mix their files. The kernel drops it when the
    process dies, however it dies. Taking it again in the same process is a no-op.

    DIR/.lock is opened without following a symlink and only a regular file with no
    other hard link is truncated for the process id: a folder from someone else cannot
    make the lock overwrite another file."""

    NAME = '.lock'
    _held = {}  # real path of the folder -> open lock file

    @classmethod
    def acquire(cls, directory, what='--out', required=True):
        """required=False: a folder this process may not write (a colleague's models,
        read only) is used unlocked."""
        key = os.path.realpath(directory)
        if key in cls._held:
            return
        path = os.path.join(directory, cls.NAME)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
                         | os.O_CLOEXEC, 0o666)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise cls._foreign(path, what, 'a symbolic link')
            if not required:
                return
            raise write_error(path, e)
        held = os.fstat(fd)
        if not stat.S_ISREG(held.st_mode) or held.st_nlink != 1:
            os.close(fd)
            raise cls._foreign(path, what, 'not a regular file' if not
                               stat.S_ISREG(held.st_mode) else 'a file with another hard link')
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            owner = os.pread(fd, 32, 0).decode('ascii', 'replace').strip()
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise UsageError('%s %s is in use by another training (pid %s); wait for it '
                                 'to end or choose another folder'
                                 % (what, directory, owner or '?'))
            raise write_error(path, e)
        os.ftruncate(fd, 0)
        os.pwrite(fd, b'%d\n' % os.getpid(), 0)
        cls._held[key] = fd

    @staticmethod
    def _foreign(path, what, why):
        return UsageError('%s: %s, not the lock file of this program (was the %s folder '
                          'made elsewhere?); remove it' % (path, why, what))


def check_output(path, flag, inputs=(), follow_symlinks=True):
    """Checks, before any work, an output file given by `flag`: a UsageError if it names
    a folder (or ends with '/', which names one), if its folder does not exist or cannot
    be written, or if it is one of the command's `inputs`. '-' (standard output) passes.

    inputs: [(flag, path)] of the files the command reads. Compared by file identity
    (st_dev, st_ino), so a link or another spelling of an input is caught too; with
    follow_symlinks=False the output entry itself is compared (writing replaces a symlink
    there, not what it names).
    """
    if not path or path == '-':
        return
    if path.endswith(os.sep):
        raise UsageError('%s %s ends with %r, so it names a folder: give the name of the '
                         'file to write' % (flag, path, os.sep))
    if follow_symlinks and _is_stream(path):  # /dev/null, a pipe: written straight to
        return
    if os.path.isdir(path) and (follow_symlinks or not os.path.islink(path)):
        raise UsageError('%s %s is a directory, not an output file' % (flag, path))
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise UsageError('%s %s: directory %s does not exist' % (flag, path, directory))
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError('%s %s: directory %s is not writable' % (flag, path, directory))
    check_not_input(path, inputs, flag, follow_symlinks)


def check_not_input(output, inputs, flag='--output', follow_symlinks=True):
    """A UsageError if `output` is one of the `inputs` ([(flag, path)]) by file identity:
    writing it would replace data not yet read, or read in full, with the results. A
    stream (/dev/stdout, a pipe) replaces nothing and passes."""
    if follow_symlinks and _is_stream(output):
        return
    try:
        written = os.stat(output, follow_symlinks=follow_symlinks)
    except OSError:  # a new file cannot be an input
        return
    for what, path in inputs:
        if not path or path == '-':
            continue
        try:
            read = os.stat(path)
        except OSError:
            continue
        if (read.st_dev, read.st_ino) == (written.st_dev, written.st_ino):
            raise UsageError('%s %s is also an input (%s%s): choose another output file'
                             % (flag, output, what + ' ' if what else '', path))


# Reading: the most bytes each kind of file the program reads whole may hold. A file of a
# received folder is read into memory; these bound that memory by what real files need
# (multilingual-e5-small's tokenizer.json, 250,002 pieces, is 9 MB; XLM-R-large's 17 MB).
MB = 1 << 20
LIMITS = {
    'tokenizer': 32 * MB,     # tokenizer.json, sentencepiece.bpe.model
    'vocabulary': 16 * MB,    # vocab.txt
    'config': 1 * MB,         # bert_config.json, config.json, a safetensors index
    'journal': 1 * MB,        # .commit.json
    'labels': 16 * MB,        # labels.bin
    'log': 64 * MB,           # log.jsonl
}
def read_bounded(path, kind, what='file', follow_symlinks=True):
    """The bytes of `path`, a regular file of at most LIMITS[kind] bytes; anything else
    (a folder, a FIFO, a device such as /dev/zero, a larger file) is a UsageError naming
    `path` and `what` it should be. Opening never blocks. A pipe named by a descriptor
    alias (/dev/fd/N, /dev/stdin: bash's <(...)) is read too, up to the same bound.
    With follow_symlinks=False a symbolic link is refused too, and so is any pipe (a file
    the program names inside a folder)."""
    limit = LIMITS[kind]
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
    if not follow_symlinks:
        flags |= os.O_NOFOLLOW
    path = os.fspath(path)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if e.errno == errno.ELOOP and not follow_symlinks:
            raise UsageError('%s: a symbolic link, not the %s of this program; remove it'
                             % (path, what))
        raise UsageError('%s: cannot read the %s: %s' % (path, what, e.strerror or e))
    mode = os.fstat(fd).st_mode
    if stat.S_ISDIR(mode):
        os.close(fd)
        raise UsageError('%s: a folder, not a %s' % (path, what))
    with os.fdopen(fd, 'rb') as stream:
        alias = os.path.abspath(path).startswith(('/dev/', '/proc/'))
        if stat.S_ISFIFO(mode) and alias and follow_symlinks:
            os.set_blocking(fd, True)
            data = stream.read(limit + 1)
        elif not stat.S_ISREG(mode):
            raise UsageError('%s: not a regular file (a pipe, socket or device), so not a %s'
                             % (path, what))
        elif os.fstat(fd).st_size > limit:
            raise UsageError('%s: larger than %d MB, the most a %s may hold'
                             % (path, limit // MB, what))
        else:
            os.set_blocking(fd, True)
            try:
                data = stream.read(limit + 1)  # a file that grows is bounded too
            except OSError as e:
                raise UsageError('%s: cannot read the %s: %s'
                                 % (path, what, e.strerror or e))
    if len(data) > limit:
        raise UsageError('%s: larger than %d MB, the most a %s may hold'
                         % (path, limit // MB, what))
    return data


def parse_json(text, where, what='file'):
    """json.loads(text) (str or UTF-8 bytes), every failure a UsageError naming `where`:
    invalid UTF-8, invalid JSON, or JSON nested past Python's recursion limit (no file
    of this program nests more than a few levels)."""
    if isinstance(text, bytes):
        try:
            text = text.decode('utf-8')
        except UnicodeDecodeError as e:
            raise UsageError('%s: the %s is not valid UTF-8 (byte %d: %s)'
                             % (where, what, e.start, e.reason))
    try:
        return json.loads(text)
    except RecursionError:
        raise UsageError('%s: the %s nests its JSON too deeply to be one of this program\'s'
                         % (where, what))
    except ValueError as e:
        raise UsageError('%s: the %s is not valid JSON (%s)' % (where, what, e))


def read_json(path, kind, what='file', follow_symlinks=True):
    """`parse_json` of `read_bounded(path, kind, what)`."""
    return parse_json(read_bounded(path, kind, what, follow_symlinks), path, what)
