"""Reading labelled text files: one example a line, `label<TAB>text` or bare `text`.

Files are read as bytes and decoded line by line so that bad UTF-8 is reported with its
line number. Empty lines are skipped, a leading byte-order mark is dropped, and a
carriage return inside a line (CR-only line endings) is an error naming the line.
Everything streams: nothing holds a whole file.

A pipe given as a file name (`/dev/stdin`, `<(...)`, a FIFO) is read once: `check_input`
reads ahead only regular files, and leaves a pipe to be read as it streams.
"""

import collections
import logging
import os
import stat
import sys
import unicodedata

import numpy as np

from bertlib.errors import UsageError

logger = logging.getLogger(__name__)

# A UTF-8 byte-order mark (Windows editors write one) is not part of the first label.
BOM = '\ufeff'

Example = collections.namedtuple('Example', ['line_number', 'label', 'text'])


def _stdin():
    """Standard input as bytes; a UsageError when the shell closed it (`<&-`)."""
    if sys.stdin is None:
        raise UsageError("-: standard input is closed (<&-): give the input as a file or "
                         "pipe it in")
    return sys.stdin.buffer


# Inputs are read with os.read in blocks of this size and split into lines here, not
# through Python's buffered files: a thread blocked on a slow pipe then holds none of
# their locks, which would abort the interpreter's exit at Ctrl-C (bertlib.features reads
# ahead in a daemon thread).
BLOCK_BYTES = 1 << 20
# The longest line read: a text far past any --max_seq_length (BERT reads 512 pieces,
# some 3 kB), so a longer line is a file of something else, refused by its number before
# the tokenizer spends memory on it (a 48 MB line peaked at 1.9 GB).
MAX_LINE_BYTES = 1 << 20


def read_lines(path):
    """Yields the lines of the file `path` ('-': standard input) as bytes, without their
    b'\\n' (a CR before it is kept), read once from start to end. UsageError when it
    cannot be opened or read, or when a line is longer than MAX_LINE_BYTES."""
    if path == '-':
        _stdin()  # refuses a closed standard input
    try:
        fd = 0 if path == '-' else os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise UsageError('%s: cannot open input: %s' % (path, e.strerror))
    try:
        pending = []  # pieces of a line that is longer than a block
        pending_bytes, number = 0, 0  # their length; the lines yielded
        while True:
            try:
                block = os.read(fd, BLOCK_BYTES)
            except OSError as e:
                raise UsageError('%s: cannot read input: %s' % (path, e.strerror))
            if not block:
                break
            lines = block.split(b'\n')
            if len(lines) > 1:
                pending.append(lines[0])
                lines[0] = b''.join(pending)
                pending, pending_bytes = [], 0
                for line in lines[:-1]:
                    number += 1
                    if len(line) > MAX_LINE_BYTES:
                        raise _long_line(path, number)
                    yield line
            pending.append(lines[-1])
            pending_bytes += len(lines[-1])
            if pending_bytes > MAX_LINE_BYTES:
                raise _long_line(path, number + 1)
        last = b''.join(pending)
        if last:
            yield last
    finally:
        if path != '-':
            os.close(fd)


def _long_line(path, number):
    return UsageError('%s:%d: a line longer than %d MB; a text is at most that (BERT reads '
                      'its first --max_seq_length pieces)' % (path, number,
                                                              MAX_LINE_BYTES >> 20))


def iter_examples(path, require_label=False):
    """Yields `Example(line_number, label, text)` for every non-empty line of `path`.

    A line without a TAB is bare text with label ''. With `require_label`, such a line,
    or one with an empty label or empty text, is a `UsageError` naming file and line.
    `path` '-' reads standard input.
    """
    for line_number, raw in enumerate(read_lines(path), start=1):
        try:
            line = raw.decode('utf-8')
        except UnicodeDecodeError as e:
            raise UsageError('%s:%d: invalid UTF-8 (byte %d)'
                             % (path, line_number, e.start + 1))
        if line_number == 1:
            line = line.lstrip(BOM)
        line = line.rstrip('\r')
        if '\r' in line:
            raise _carriage_return(path, line_number)
        if not line.strip():
            continue
        if '\t' in line:
            label, text = line.split('\t', 1)
        else:
            label, text = '', line
        if require_label and (not label.strip() or not text.strip()):
            raise UsageError('%s:%d: expected "label<TAB>text", got %r'
                             % (path, line_number, _clip(line)))
        yield Example(line_number, label, text)


def check_input(path):
    """One fast pass over a regular file before any output is written: it must be readable
    and valid UTF-8 throughout. Returns the number of non-empty lines, or None for '-' or
    a pipe (/dev/stdin, `<(...)`, a FIFO), which is not read here: it can be read only
    once, and its lines are checked as they stream.
    """
    if path == '-':
        _stdin()
        return None
    try:
        mode = os.stat(path).st_mode  # of what a link (/dev/stdin) names; opens nothing
    except OSError as e:
        raise UsageError('%s: cannot open input: %s' % (path, e.strerror))
    if stat.S_ISDIR(mode):
        raise UsageError('%s: is a directory, not an input file' % path)
    if not stat.S_ISREG(mode):
        if not os.access(path, os.R_OK):
            raise UsageError('%s: cannot open input: permission denied' % path)
        return None
    count = 0
    for line_number, raw in enumerate(read_lines(path), start=1):
        if b'\r' in raw.rstrip(b'\r'):
            raise _carriage_return(path, line_number)
        if raw.isascii():
            count += bool(raw.strip())
            continue
        try:
            line = raw.decode('utf-8')
        except UnicodeDecodeError as e:
            raise UsageError('%s:%d: invalid UTF-8 (byte %d)'
                             % (path, line_number, e.start + 1))
        count += bool(line.strip())
    return count


def check_label_forms(first_lines, path, known=()):
    """UsageError when two labels of `path`, or one of it and one of `known` (a training
    run's labels), differ only by Unicode normalisation.

    'café' with a composed é (U+00E9) and with e + U+0301 look the same everywhere they
    are printed, yet are two strings, so they would silently be two classes. Nothing is
    normalised here: a label is written back as it was read, so the file is refused and
    the user normalises it (NFC), once, for every script alike.

    first_lines: {label: the line of `path` it first appears on}.
    """
    forms = {unicodedata.normalize('NFC', label): (label, None) for label in known}
    for label, line_number in first_lines.items():
        other, other_line = forms.setdefault(unicodedata.normalize('NFC', label),
                                             (label, line_number))
        if other != label:
            where = 'line %d' % other_line if other_line is not None else 'the training file'
            raise UsageError('%s:%d: label %r and %r (%s) differ only by Unicode '
                             'normalisation (composed and decomposed accents): they print '
                             'alike but would be two classes; normalise the file to NFC, '
                             'e.g. uconv -x any-nfc' % (path, line_number, label, other,
                                                        where))


def _carriage_return(path, line_number):
    return UsageError('%s:%d: carriage return inside a line (a file with old Mac CR-only '
                      "line endings?): convert it to LF line endings, e.g. tr '\\r' '\\n'"
                      % (path, line_number))


def _clip(text, width=60):
    return text if len(text) <= width else text[:width] + '...'


class Split(object):
    """A labelled set, tokenised once: `ids` (lists of token ids), `labels` (int array)."""

    def __init__(self, ids, labels):
        self.ids = ids
        self.labels = np.asarray(labels, dtype=np.int32)

    def __len__(self):
        return len(self.ids)

    def subset(self, indices):
        return Split([self.ids[i] for i in indices], self.labels[indices])


def load_split(path, tokenizer, max_seq_length, label_to_id=None, closed=False):
    """Reads and tokenises a labelled file. New labels get the next id (first-seen order)
    unless `closed`, where an unknown label is an error."""
    label_to_id = dict(label_to_id or {})
    known = list(label_to_id)
    ids, labels, unknown, truncated, first_lines = [], [], {}, 0, {}
    for example in iter_examples(path, require_label=True):
        label = example.label
        first_lines.setdefault(label, example.line_number)
        if label not in label_to_id:
            if closed:
                unknown.setdefault(label, example.line_number)
                continue
            label_to_id[label] = len(label_to_id)
        token_ids, cut = tokenizer.encode(example.text, max_seq_length)
        truncated += cut
        ids.append(token_ids)
        labels.append(label_to_id[label])
    check_label_forms(first_lines, path, known)
    if unknown:
        shown = ', '.join('%r (line %d)' % item for item in list(unknown.items())[:5])
        raise UsageError('%s: labels never seen in training: %s' % (path, shown))
    if not ids:
        raise UsageError('%s: no examples' % path)
    if truncated:
        logger.info('%s: %d sentences longer than --max_seq_length %d were truncated',
                    path, truncated, max_seq_length)
    return Split(ids, labels), label_to_id
