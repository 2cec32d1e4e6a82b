"""The embedding explorer: one self-contained, offline HTML page of a features file, and
a TensorBoard Projector export of it.

The page (template: explorer.html beside this file) shows the 2-D map of
`projection.project_2d` with plotly.js, embedded, drawing WebGL scatters; hovering a
point shows its sentence, clicking it lists its k nearest neighbours in the full feature
space, found with the retrieval figures in one pass over the cosine similarities
(`metrics.retrieval_and_neighbours`), so the page ships k indices per point instead of
every vector; a page of two or three feature sets of the same sentences holds one map
and one set of neighbours per set. Every label and sentence goes into the page as JSON
inside a <script type="application/json"> block, with `<`, `>` and `&` written as \\u
escapes, and the page's script inserts them with textContent: text is never parsed as
markup.
"""

import json
import logging
import math
import os
import re

import numpy as np

from bertlib import data, figures, projection
from bertlib.errors import UsageError
from bertlib.fileio import atomic_write

logger = logging.getLogger(__name__)

TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'explorer.html')


def read_texts(text_path, features_path, labels):
    """The sentences of the N feature rows, read from the text file they were extracted
    from: its non-empty lines, as the extractors read them, in the same order.

    labels: the N labels of the features file. Raises UsageError naming both files when
    the numbers of lines or a label differ. Returns a list of N strings.
    """
    texts = []
    for example in data.iter_examples(text_path):
        row = len(texts)
        if row < len(labels) and example.label != labels[row]:
            raise UsageError(
                '%s:%d has label %r but row %d of %s has %r: the features were not '
                'extracted from this text file'
                % (text_path, example.line_number, example.label, row + 1, features_path,
                   labels[row]))
        texts.append(example.text)
    if len(texts) != len(labels):
        raise UsageError('%s has %d non-empty lines but %s has %d feature rows: the '
                         'features were not extracted from this text file'
                         % (text_path, len(texts), features_path, len(labels)))
    return texts


def summarise(labels, scores, neighbours):
    """Retrieval figures of the file for the page's summary panel.

    labels: N strings; scores, neighbours: the file's retrieval scores and (N, k)
    nearest neighbours, from `metrics.retrieval_and_neighbours`. Returns a dict of
    precision_at_1, map_at_r and queries (NaN becomes None) and per_label: {display
    name: (count, precision@1 or None)}, where precision@1 is over the label's items that
    have another item of their label.
    """
    labels = np.asarray(labels, dtype=object)
    hit = labels[neighbours[:, 0]] == labels
    per_label = {}
    for label in np.unique(labels.astype(str)):
        members = labels == label
        count = int(members.sum())
        p1 = float(hit[members].mean()) if count > 1 else None
        per_label[figures.display_name(label)] = (count, p1)
    return {'precision_at_1': _finite(scores['precision_at_1']),
            'map_at_r': _finite(scores['map_at_r']), 'queries': scores['count'],
            'per_label': per_label}


def page_data(labels, texts, sets, title):
    """The JSON-able content of the page.

    labels, texts: the N strings all feature sets share; sets: one dict per feature set,
    with name, method ('tsne' or 'pca'), xy (N, 2) map coordinates, neighbours and
    similarities (N, k), and summary (from `summarise`). Labels become codes into
    `names` (largest class first, coloured as plot_features.py colours them); arrays are
    flattened row-major.
    """
    names, colors = figures.label_palette(labels)
    code = {name: i for i, name in enumerate(names)}
    return {
        'title': title, 'count': len(labels), 'k': int(sets[0]['neighbours'].shape[1]),
        'names': names, 'colors': [_hex(c) for c in colors[:len(names)]],
        'label': [code[figures.display_name(label)] for label in labels],
        'label_count': [sets[0]['summary']['per_label'][name][0] for name in names],
        'text': list(texts),
        'sets': [_set_data(s, names) for s in sets],
    }


def _set_data(s, names):
    summary, per_label = s['summary'], s['summary']['per_label']
    return {'name': s['name'], 'method': projection.METHOD_NAMES[s['method']],
            'x': _rounded(s['xy'][:, 0]), 'y': _rounded(s['xy'][:, 1]),
            'neighbours': s['neighbours'].ravel().tolist(),
            'similarity': np.round(s['similarities'].ravel(), 3).tolist(),
            'precision_at_1': summary['precision_at_1'], 'map_at_r': summary['map_at_r'],
            'queries': summary['queries'],
            'precision_at_1_per_label': [per_label[name][1] for name in names]}


def render(page):
    """The page dict -> the complete HTML text, plotly.js embedded."""
    from plotly.offline import get_plotlyjs
    with open(TEMPLATE, encoding='utf-8') as stream:
        template = stream.read()
    # A literal '</script' inside a script element would end it early.
    plotly_js = get_plotlyjs().replace('</script', '<\\/script')
    parts = {'TITLE': _html_escape(page['title']), 'DATA': script_json(page),
             'PLOTLY': plotly_js}
    # One pass over the template: a sentence that reads '{{PLOTLY}}' stays text.
    return re.sub(r'\{\{(TITLE|DATA|PLOTLY)\}\}', lambda m: parts[m.group(1)], template)


def script_json(value):
    """JSON that is safe inside <script type="application/json">: no '<', '>' or '&'
    (so no '</script>' or '<!--'), and U+2028/U+2029 escaped as well."""
    text = json.dumps(value, ensure_ascii=False, separators=(',', ':'), allow_nan=False)
    for char, escape in (('<', '\\u003c'), ('>', '\\u003e'), ('&', '\\u0026'),
                         ('\u2028', '\\u2028'), ('\u2029', '\\u2029')):
        text = text.replace(char, escape)
    return text


def write_page(path, page):
    """Writes the page to `path`, complete or not at all. Returns its size in bytes."""
    html = render(page)
    with atomic_write(path) as stream:
        stream.write(html)
    return len(html.encode('utf-8'))


# What write_projector writes into its folder.
PROJECTOR_FILES = ('tensors.tsv', 'metadata.tsv', 'projector_config.pbtxt')


def write_projector(directory, name, labels, features, texts):
    """A TensorBoard Projector folder: tensors.tsv (one vector a row), metadata.tsv (a
    header, then label and sentence, tabs and line breaks made spaces) and
    projector_config.pbtxt naming both, so that `tensorboard --logdir DIR` shows them.

    features: (N, D). Each file is written complete or not at all.
    """
    os.makedirs(directory, exist_ok=True)
    tensors, metadata, config = (os.path.join(directory, name) for name in PROJECTOR_FILES)
    # Files named here inside a folder: a symlink planted there is replaced, not followed.
    with atomic_write(tensors, follow_symlinks=False) as stream:
        for row in features:
            stream.write('\t'.join(['%.6g' % v for v in row.tolist()]) + '\n')
    with atomic_write(metadata, follow_symlinks=False) as stream:
        stream.write('label\tsentence\n')
        for label, text in zip(labels, texts):
            stream.write('%s\t%s\n' % (_tsv_cell(figures.display_name(label)),
                                       _tsv_cell(text)))
    with atomic_write(config, follow_symlinks=False) as stream:
        stream.write('embeddings {\n  tensor_name: %s\n  tensor_path: "tensors.tsv"\n'
                     '  metadata_path: "metadata.tsv"\n}\n' % _pbtxt_string(name))


def check_projector_dir(directory):
    """UsageError unless `directory` is, or can be made (with its parents), a writable
    folder."""
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise UsageError('--projector %s exists and is not a directory' % directory)
    existing = os.path.abspath(directory)
    while not os.path.isdir(existing):
        if os.path.exists(existing):
            raise UsageError('--projector %s: %s is not a directory' % (directory, existing))
        existing = os.path.dirname(existing)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError('--projector %s: %s is not writable' % (directory, existing))


def _tsv_cell(text):
    return ' '.join(text.replace('\t', ' ').splitlines())


def _pbtxt_string(text):
    """A protobuf text-format string literal."""
    return '"%s"' % text.replace('\\', '\\\\').replace('"', '\\"').replace('\n', '\\n')


def _html_escape(text):
    return (text.replace('&', '&amp;').replace('<', '&lt;').replace('>', '&gt;')
            .replace('"', '&quot;'))


def _hex(rgba):
    return '#%02x%02x%02x' % tuple(int(round(255 * c)) for c in rgba[:3])


def _rounded(values):
    """Coordinates to 4 significant digits of their range: a third of the JSON size."""
    scale = float(np.max(np.abs(values))) if len(values) else 0.0
    decimals = max(0, 4 - int(math.ceil(math.log10(scale)))) if scale > 0 else 0
    return np.round(values, decimals).tolist()


def _finite(value):
    return None if value is None or math.isnan(value) else float(value)
