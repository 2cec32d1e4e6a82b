"""Files that are either complete or absent: write to a temporary file, then rename."""

import contextlib
import os
import tempfile


@contextlib.contextmanager
def atomic_write(path, mode='w', encoding='utf-8'):
    """Opens a temporary file beside `path`; on success renames it to `path`.

    If the block raises (or the process dies), `path` keeps its old content, or stays
    absent, and the temporary file is removed.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp',
                               dir=directory)
    try:
        binary = 'b' in mode
        with os.fdopen(fd, mode, **({} if binary else {'encoding': encoding,
                                                        'newline': '\n'})) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
