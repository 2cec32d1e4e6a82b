"""Reading the features TSV that the extraction scripts write: `label<TAB>f1<TAB>f2...`.

Any tool's file in that format is accepted. A leading byte-order mark is dropped, as in
text files (`bertlib.data`). Bad input is reported with its file and line: rows whose
number of columns differs from the first row's, a single feature column, non-numeric
values, NaN or infinity (also a value that becomes infinite in the dtype read, 1e300 in
float32), labels that differ only by Unicode normalisation, and an empty file.
"""

import numpy as np

from bertlib import data
from bertlib.errors import UsageError


def read_features(path, dtype=np.float32):
    """Reads a features file.

    Returns (labels, features): a list of N label strings (possibly empty strings) and an
    (N, D) array of `dtype`, D >= 2. Raises UsageError naming the file and line of a bad
    row.
    """
    labels, rows, width, first_line = [], [], None, None
    first_lines = {}  # label -> the line it first appears on
    try:
        stream = open(path, encoding='utf-8', newline='')
    except OSError as e:
        raise UsageError('%s: cannot read: %s' % (path, e.strerror or e))
    with stream:
        try:
            for number, line in enumerate(stream, 1):
                if number == 1:
                    line = line.lstrip(data.BOM)
                line = line.rstrip('\r\n')
                if not line.strip():
                    continue
                label, tab, values = line.partition('\t')
                if not tab:
                    raise UsageError('%s, line %d: no features (expected '
                                     "'label<TAB>f1<TAB>f2...')" % (path, number))
                row = _parse_row(values, path, number, dtype)
                if width is None:
                    width, first_line = row.size, number
                    if width < 2:
                        # Cosine similarity of one number is only its sign, and no 2-D
                        # map can be made of it: not features, e.g. a 'label<TAB>score'.
                        raise UsageError('%s, line %d: one feature column; features have '
                                         'at least 2' % (path, number))
                elif row.size != width:
                    raise UsageError('%s, line %d: %d feature columns, but line %d has %d'
                                     % (path, number, row.size, first_line, width))
                labels.append(label)
                first_lines.setdefault(label, number)
                rows.append(row)
        except UnicodeDecodeError as e:
            raise UsageError('%s: not UTF-8 text (%s)' % (path, e.reason))
    if not rows:
        raise UsageError('%s: no features (the file is empty)' % path)
    data.check_label_forms(first_lines, path)
    return labels, np.stack(rows)


def _parse_row(values, path, number, dtype):
    """'f1<TAB>f2...' -> (D,) `dtype`, finite in it; UsageError names the first bad
    value (1e300 is finite as read, infinite in float32)."""
    fields = values.split('\t')
    try:
        row = np.array(fields, dtype=np.float64)
    except ValueError:
        for column, field in enumerate(fields, 2):
            try:
                float(field)
            except ValueError:
                raise UsageError('%s, line %d, column %d: %r is not a number'
                                 % (path, number, column, field[:40]))
        raise
    if not np.isfinite(row).all():
        column = int(np.flatnonzero(~np.isfinite(row))[0]) + 2
        raise UsageError('%s, line %d, column %d: %s is not a finite number'
                         % (path, number, column, fields[column - 2]))
    with np.errstate(over='ignore'):
        converted = row.astype(dtype)
    if not np.isfinite(converted).all():
        column = int(np.flatnonzero(~np.isfinite(converted))[0]) + 2
        raise UsageError('%s, line %d, column %d: %s is too large for %s (up to %g)'
                         % (path, number, column, fields[column - 2][:40],
                            np.dtype(dtype).name, np.finfo(dtype).max))
    return converted
