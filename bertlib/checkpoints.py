"""Saving and loading what training writes to `--out`: models, optimizer state, labels.

Every save is atomic (a temporary file beside the target, then a rename), so killing the
process at any moment leaves the previous complete file in place, never a torn one.

`labels.bin` keeps the seed's name and format, a pickled dict label -> id, but is read
with an unpickler that only builds dicts, strings and integers: a crafted file cannot run
code.
"""

import io
import json
import os
import pickle

import chainer
import numpy as np

from bertlib.errors import UsageError
from bertlib.fileio import atomic_write

META_KEY = 'meta/json'


def save_labels(path, label_to_id):
    """Writes {label: id} as the seed's pickled dict."""
    with atomic_write(path, 'wb') as stream:
        pickle.dump(dict(label_to_id), stream, protocol=2)


class _LabelUnpickler(pickle.Unpickler):
    """Builds only plain data: anything naming a class or function is refused."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError('refusing to load %s.%s' % (module, name))


def load_labels(path):
    """Reads labels.bin: {label (str): id (int)}, ids 0..K-1."""
    try:
        with open(path, 'rb') as stream:
            data = stream.read()
    except OSError as e:
        raise UsageError('%s: cannot read labels: %s' % (path, e.strerror))
    try:
        labels = _LabelUnpickler(io.BytesIO(data)).load()
    except Exception as e:
        raise UsageError('%s: not a labels.bin file (%s)' % (path, e))
    if not isinstance(labels, dict) or not all(
            isinstance(k, str) and isinstance(v, int) for k, v in labels.items()):
        raise UsageError('%s: not a labels.bin file (expected a dict of label -> id)' % path)
    if sorted(labels.values()) != list(range(len(labels))):
        raise UsageError('%s: label ids are not 0..%d' % (path, len(labels) - 1))
    return labels


def save_model(path, model, meta=None, prefix=''):
    """Saves `model`'s parameters as npz (atomic), names prefixed with `prefix`, with
    `meta` (a JSON-able dict) under 'meta/json' so that extraction knows how the model
    was built."""
    arrays = {}
    for name, param in model.namedparams():
        arrays[prefix + name.lstrip('/')] = chainer.backend.CpuDevice().send(param.array)
    if meta is not None:
        arrays[META_KEY] = np.array(json.dumps(meta, sort_keys=True))
    with atomic_write(path, 'wb') as stream:
        np.savez(stream, **arrays)


def read_meta(path):
    """The meta dict saved with a model, or {} for a model saved without one."""
    archive = _open_npz(path)
    with archive:
        if META_KEY not in archive.files:
            return {}
        return json.loads(str(archive[META_KEY]))


def array_shape(path, name):
    """Shape of one array of an npz file, or None if it has no such array."""
    archive = _open_npz(path)
    with archive:
        return archive[name].shape if name in archive.files else None


def load_model(path, model, prefix='', ignore_prefixes=()):
    """Copies the arrays of an npz file into `model`, strictly.

    Only arrays whose names start with `prefix` are considered (the prefix is dropped to
    match `model`'s parameter names); of those, ones under `ignore_prefixes` (e.g. a loss
    head that extraction does not need) and the meta entry are skipped. A missing,
    unexpected or mis-shaped array is a UsageError that names it.
    """
    archive = _open_npz(path)
    with archive:
        params = {prefix + name.lstrip('/'): param for name, param in model.namedparams()}
        ignored = tuple(prefix + p for p in ignore_prefixes)
        stored = {n for n in archive.files if n.startswith(prefix) and n != META_KEY
                  and not (ignored and n.startswith(ignored))}
        missing = sorted(set(params) - stored)
        unexpected = sorted(stored - set(params))
        mismatched = []
        for name in sorted(set(params) & stored):
            array = archive[name]
            param = params[name]
            if array.shape != param.shape:
                mismatched.append('%s: checkpoint %s, model %s'
                                  % (name, tuple(array.shape), tuple(param.shape)))
                continue
            param.array[...] = param.xp.asarray(array, dtype=param.dtype)
    problems = []
    if missing:
        problems.append('missing %d arrays (%s)' % (len(missing), _few(missing)))
    if unexpected:
        problems.append('unexpected %d arrays (%s)' % (len(unexpected), _few(unexpected)))
    if mismatched:
        problems.append('%d arrays of another shape (%s)'
                        % (len(mismatched), _few(mismatched)))
    if problems:
        raise UsageError('%s does not fit the model: %s' % (path, '; '.join(problems)))


def load_model_labels(model_path, labels_path, kind):
    """labels.bin of a fine-tuned model, checked against the model file: it must be a
    `kind` model ('dml' or 'classifier') trained on as many classes as the file holds."""
    for path, what in ((model_path, 'model'), (labels_path, 'labels')):
        if not os.path.isfile(path):
            raise UsageError('%s: %s file not found' % (path, what))
    labels = load_labels(labels_path)
    meta = read_meta(model_path)
    if meta.get('kind', kind) != kind:
        raise UsageError('%s is a %s model, not a %s one' % (model_path, meta['kind'], kind))
    classes = meta.get('classes')
    if kind == 'classifier':
        shape = array_shape(model_path, 'output/W')
        classes = shape[0] if shape is not None else classes
    if classes is not None and classes != len(labels):
        raise UsageError('%s has %d labels but %s was trained on %d classes: the label '
                         'file does not belong to the model'
                         % (labels_path, len(labels), model_path, classes))
    return labels


def save_state(path, optimizer):
    """Optimizer state (Adam moments and step counts), atomically."""
    with atomic_write(path, 'wb') as stream:
        chainer.serializers.save_npz(stream, optimizer)


def load_state(path, optimizer):
    try:
        chainer.serializers.load_npz(path, optimizer)
    except (OSError, KeyError, ValueError) as e:
        raise UsageError('%s: cannot restore the optimizer state: %s' % (path, e))


def _open_npz(path):
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UsageError('%s: cannot read checkpoint: %s' % (path, e))


def _few(items, limit=4):
    return ', '.join(items[:limit]) + (', ...' if len(items) > limit else '')
