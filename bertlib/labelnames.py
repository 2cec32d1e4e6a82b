"""Display names of labels: the optional `--label_names FILE` of every script that draws
labels (plot_features.py, cluster_features.py, evaluate_features.py --grid,
explore_features.py and train_classifier.py's confusion matrices), one `label<TAB>name` a
line, e.g. `0<TAB>negative`.

Only what is shown changes: legends, titles and the explorer's page and projector
metadata show the name; scores are computed on the labels as they are (a mapping is
one-to-one, so they come out the same). Labels the file does not name are shown as
they are.
"""

from bertlib import data
from bertlib.errors import UsageError

FLAG = '--label_names'


def add_argument(parser):
    parser.add_argument(FLAG, metavar='FILE', default=None,
                        help='names to show instead of the labels: a UTF-8 file of '
                             "'label<TAB>name' lines (e.g. '0<TAB>negative'); labels it "
                             'does not name are shown as they are (default: the labels)')


def read(path):
    """{label: name} of a label names file, or {} when `path` is None.

    Raises UsageError naming the file and line of a line that is not 'label<TAB>name', an
    empty name, a label named twice or a name given to two labels; and for an unreadable
    or empty file."""
    if path is None:
        return {}
    names = {}
    label_line, name_owner = {}, {}  # label -> its line; name -> (label, line)
    try:
        stream = open(path, encoding='utf-8', newline='')
    except OSError as e:
        raise UsageError('%s %s: cannot read: %s' % (FLAG, path, e.strerror or e))
    with stream:
        try:
            for number, line in enumerate(stream, 1):
                if number == 1:
                    line = line.lstrip(data.BOM)
                line = line.rstrip('\r\n')
                if not line.strip():
                    continue
                label, tab, name = line.partition('\t')
                if not tab or '\t' in name or not name.strip():
                    raise UsageError("%s:%d: expected 'label<TAB>name', got %r"
                                     % (path, number, line[:80]))
                if label in names:
                    raise UsageError('%s:%d: label %r is named again (first on line %d)'
                                     % (path, number, label, label_line[label]))
                if name in name_owner:
                    raise UsageError('%s:%d: name %r is already the name of label %r (line '
                                     '%d): two labels would look like one'
                                     % ((path, number, name) + name_owner[name]))
                names[label] = name
                label_line[label] = number
                name_owner[name] = (label, number)
        except UnicodeDecodeError as e:
            raise UsageError('%s: not UTF-8 text (%s)' % (path, e.reason))
    if not names:
        raise UsageError('%s: no label names (the file is empty)' % path)
    return names


def display(names, labels, path):
    """{label: what is shown for it} of each distinct label among `labels`: its name in
    `names` (from `read`), or the label itself. Raises UsageError, naming the file `path`,
    when a name is also a label of the data that is shown as it is, since the two would
    look like one."""
    present = set(labels)
    for label in present:
        name = names.get(label)
        if name is not None and name in present and name not in names:
            raise UsageError('%s: label %r is named %r, which is also a label of the data: '
                             'name that one too, or choose another name'
                             % (path, label, name))
    return {label: names.get(label, label) for label in present}
