"""Saving and loading what training writes to `--out`: models, optimizer state, labels.

Every save is atomic (a temporary file beside the target, then a rename), so killing the
process at any moment leaves the previous complete file in place, never a torn one.

Every npz a user passes (pre-trained weights, final.model, early_stopped-*.model,
final.state) is read by `NpzReader`: headers first, shapes and types checked against the
model before any data is read, object arrays (pickles) refused.

`labels.bin` keeps the original BERT-DML's name and format, a pickled dict label -> id, but is read
with an unpickler that only builds dicts, strings and integers: a crafted file cannot run
code.
"""

import io
import json
import math
import mmap
import os
import pickle
import struct
import zipfile

import chainer
import numpy as np

from bertlib import fileio, optimization
from bertlib.errors import UsageError
from bertlib.fileio import atomic_write

META_KEY = 'meta/json'


def save_labels(path, label_to_id):
    """Writes {label: id} as the original BERT-DML's pickled dict, to DIR/labels.bin of a
    training's --out: a symlink there is replaced, never followed."""
    with atomic_write(path, 'wb', follow_symlinks=False) as stream:
        pickle.dump(dict(label_to_id), stream, protocol=2)


class _LabelUnpickler(pickle.Unpickler):
    """Builds only plain data: anything naming a class or function is refused."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError('refusing to load %s.%s' % (module, name))


def load_labels(path):
    """Reads labels.bin: {label (str): id (int)}, ids 0..K-1."""
    data = fileio.read_bounded(path, 'labels', 'labels file')
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
    with atomic_write(path, 'wb') as stream:
        write_model(stream, model, meta, prefix)


def write_model(stream, model, meta=None, prefix=''):
    """What `save_model` writes, into an open binary stream (e.g. a `fileio.Commit`)."""
    arrays = {}
    for name, param in model.namedparams():
        arrays[prefix + name.lstrip('/')] = chainer.backend.CpuDevice().send(param.array)
    if meta is not None:
        arrays[META_KEY] = np.array(json.dumps(meta, sort_keys=True))
    savez(stream, arrays)


def savez(stream, arrays, compress=False):
    """np.savez(stream, **arrays) (np.savez_compressed with `compress`), except when a
    write fails (a full disk): np.savez leaves its ZipFile open, and its __del__, run
    later, writes to the closed file ("Exception ignored ... seek of closed file"). Here
    the unfinished archive is abandoned at once; the caller removes the file."""
    archive = zipfile.ZipFile(stream, mode='w', allowZip64=True,
                              compression=zipfile.ZIP_DEFLATED if compress
                              else zipfile.ZIP_STORED)
    try:
        for name, array in arrays.items():
            with archive.open(name + '.npy', 'w', force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
    except BaseException:
        archive.fp = None  # closing would write the directory: nothing more is written
        raise
    archive.close()


def read_meta(path):
    """The meta dict saved with a model, or {} for a model saved without one. Bad JSON,
    or a known field of the wrong type, is a UsageError."""
    with NpzReader(path) as archive:
        if META_KEY not in archive.files:
            return {}
        if archive.dtype(META_KEY).kind != 'U' or archive.shape(META_KEY) != ():
            raise UsageError('%s: %s is not a JSON string' % (path, META_KEY))
        text = str(archive.read(META_KEY, max_bytes=1 << 20))
    try:
        meta = json.loads(text)
    except RecursionError:
        raise UsageError('%s: %s nests its JSON too deeply to be this program\'s'
                         % (path, META_KEY))
    except ValueError as e:
        raise UsageError('%s: %s is not valid JSON (%s)' % (path, META_KEY, e))
    if not isinstance(meta, dict):
        raise UsageError('%s: %s is not a JSON object' % (path, META_KEY))
    for key, kind in _META_TYPES.items():
        value = meta.get(key)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)
                                  or (kind is int and value < 0)):
            raise UsageError('%s: model metadata %r is %r, not a %s'
                             % (path, key, value, 'count' if kind is int else 'string'))
    return meta


_META_TYPES = {'kind': str, 'pooling': str, 'loss': str, 'early_stopped_on': str,
               'text_prefix': str, 'epoch': int, 'step': int, 'classes': int, 'dim': int}


def array_shape(path, name):
    """Shape of one array of an npz file, or None if it has no such array (only the
    header is read)."""
    with NpzReader(path) as archive:
        return archive.shape(name) if name in archive.files else None


def check_fits(path, shapes, prefix='', ignore_prefixes=(), what='the model'):
    """UsageError unless the npz at `path` holds exactly the arrays `shapes` ({name: shape},
    names without `prefix`) among its arrays under `prefix`, in those shapes, none empty.
    Only the headers are read. `ignore_prefixes` and `what` (named in the message) as in
    `load_model`."""
    with NpzReader(path) as archive:
        _check_fits(archive, path, shapes, prefix, ignore_prefixes, what)


def _check_fits(archive, path, shapes, prefix, ignore_prefixes, what):
    expected = {prefix + name.lstrip('/'): tuple(shape) for name, shape in shapes.items()}
    ignored = tuple(prefix + p for p in ignore_prefixes)
    stored = {n for n in archive.files if n.startswith(prefix) and n != META_KEY
              and not (ignored and n.startswith(ignored))}
    missing = sorted(set(expected) - stored)
    unexpected = sorted(stored - set(expected))
    mismatched = ['%s: checkpoint %s, model %s' % (name, archive.shape(name), expected[name])
                  for name in sorted(set(expected) & stored)
                  if archive.shape(name) != expected[name]]
    problems = []
    if missing:
        problems.append('missing %d arrays (%s)' % (len(missing), _few(missing)))
    if unexpected:
        problems.append('unexpected %d arrays (%s)' % (len(unexpected), _few(unexpected)))
    if mismatched:
        problems.append('%d arrays of another shape (%s)'
                        % (len(mismatched), _few(mismatched)))
    if problems:
        raise UsageError('%s does not fit %s: %s' % (path, what, '; '.join(problems)))
    # A layer sized from the file itself (a head's output/W) matches whatever it holds: a
    # (0, 16) head would give features of no columns.
    empty = sorted(name for name in expected if 0 in expected[name])
    if empty:
        raise UsageError('%s: array %s has shape %s: an empty layer, not a trained model'
                         % (path, empty[0], expected[empty[0]]))


def load_model(path, model, prefix='', ignore_prefixes=(), read_only=False):
    """Puts the arrays of an npz file into `model`, strictly.

    Only arrays whose names start with `prefix` are considered (the prefix is dropped to
    match `model`'s parameter names); of those, ones under `ignore_prefixes` (e.g. a loss
    head that extraction does not need) and the meta entry are skipped. A missing,
    unexpected, mis-shaped or empty array is a UsageError that names it; shapes are checked
    from the headers before any data is read. So is an array holding NaN or infinity once
    converted to the parameter's dtype (1e300 in a float64 file is infinite in float32).

    read_only=True (extraction, which never updates a weight): each parameter's array is
    replaced by the one read, not copied into, so the model's placeholder zeros
    (`BertModel(random_init=False)`) are never written and take no memory; and an array
    that the file stores uncompressed, aligned and in the parameter's dtype is
    memory-mapped read-only instead of read (`NpzReader.map`), so the 250,000-row word
    table of a multilingual model is held once, by the page cache, and only its rows in
    use are resident. Otherwise the values are copied into the parameters' own arrays,
    which an optimizer may already hold.
    """
    with NpzReader(path) as archive:
        _check_fits(archive, path, {name: param.shape for name, param in model.namedparams()},
                    prefix, ignore_prefixes, 'the model')
        params = {prefix + name.lstrip('/'): param for name, param in model.namedparams()}
        for name in sorted(params):
            param = params[name]
            array = None
            if read_only and param.xp is np:
                array = archive.map(name, param.dtype)
            if array is None:
                array = archive.read(name, numeric=True, dtype=param.dtype)
            if read_only:
                param.array = param.xp.asarray(array)
            else:
                param.array[...] = param.xp.asarray(array)


def load_model_labels(model_path, labels_path, kind):
    """labels.bin of a fine-tuned model, checked against the model file: it must be a
    `kind` model ('dml' or 'classifier') trained on as many classes as the file holds."""
    for path, what in ((model_path, 'model'), (labels_path, 'labels')):
        if not os.path.exists(path):
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


def write_state(stream, optimizer):
    """The optimizer state as npz into an open binary stream (for a `fileio.Commit`), as
    chainer.serializers.save_npz writes it (compressed), through `savez`."""
    serializer = chainer.serializers.DictionarySerializer()
    serializer.save(optimizer)
    savez(stream, serializer.target, compress=True)


# The arrays Adam keeps per parameter besides its step count 't'.
_STATE_ARRAYS = ('m', 'v')


def state_step(path):
    """The optimizer step count saved in a final.state (header-checked, no pickle)."""
    with NpzReader(path) as archive:
        if 't' not in archive.files or archive.shape('t') != ():
            raise UsageError('%s: not an optimizer state (no step count t)' % path)
        return int(archive.read('t', numeric=True))


def load_state(path, optimizer):
    """Restores `optimizer` (whose target is the model) from a final.state, strictly: it
    must hold the step counts and Adam moments of exactly the model's parameters, in their
    shapes, checked from the headers before any data is read. A frozen parameter
    (`optimization.is_frozen`) has a step count and no moments."""
    with NpzReader(path) as archive:
        expected = {'t': (), 'epoch': ()}
        dtypes = {}  # of the floating-point arrays, checked finite in it
        for name, param in optimizer.target.namedparams():
            name = name.lstrip('/')
            expected[name + '/t'] = ()
            if optimization.is_frozen(param):  # no moments
                continue
            for key in _STATE_ARRAYS:
                expected[name + '/' + key] = tuple(param.shape)
                dtypes[name + '/' + key] = param.dtype
        # State kept beside Adam's (optimization.keep_state: --ema, --memory_size).
        extra = getattr(optimizer, 'extra_state', dict)()
        expected.update((name, tuple(array.shape)) for name, array in extra.items())
        dtypes.update((name, array.dtype) for name, array in extra.items()
                      if array.dtype.kind == 'f')
        missing = sorted(set(expected) - set(archive.files))
        unexpected = sorted(set(archive.files) - set(expected))
        mismatched = ['%s: state %s, model %s' % (n, archive.shape(n), expected[n])
                      for n in sorted(set(expected) & set(archive.files))
                      if archive.shape(n) != expected[n]]
        problems = []
        if missing:
            problems.append('no state for %d arrays (%s)' % (len(missing), _few(missing)))
        if unexpected:
            problems.append('state of %d arrays the model does not have (%s)'
                            % (len(unexpected), _few(unexpected)))
        if mismatched:
            problems.append('%d arrays of another shape (%s)'
                            % (len(mismatched), _few(mismatched)))
        if problems:
            raise UsageError('%s: optimizer state does not fit the model: %s'
                             % (path, '; '.join(problems)))
        try:
            arrays = _NumericArrays(archive, dtypes)
            chainer.serializers.NpzDeserializer(arrays).load(optimizer)
        except (KeyError, TypeError, ValueError) as e:
            raise UsageError('%s: cannot restore the optimizer state: %s' % (path, e))


class _NumericArrays(object):
    """The mapping Chainer's NpzDeserializer reads from, backed by an `NpzReader`;
    `dtypes`: {name: dtype} the deserializer will copy an array into."""

    def __init__(self, archive, dtypes):
        self.archive = archive
        self.dtypes = dtypes

    def __contains__(self, name):
        return name in self.archive.files

    def __getitem__(self, name):
        return self.archive.read(name, numeric=True, dtype=self.dtypes.get(name))


class NpzReader(object):
    """An npz archive read as data only: never unpickled.

    Opening reads every member's npy header; an archive that is not a zip of npy files,
    or holds an object array (the way a pickle hides in an npz), is a UsageError. `read`
    reads one array's data, after checking what its header declares.

    Chainer's serializers.load_npz is not used: it opens archives with allow_pickle=True.
    """

    def __init__(self, path):
        self.path = path
        self.headers = {}  # name -> (shape, dtype)
        self.offsets = {}  # name -> where its data starts in the file, if stored uncompressed
        self.file_map = None  # the whole file, memory-mapped read-only by `map`
        if os.path.exists(path) and not os.path.isfile(path) and not os.path.isdir(path):
            # A zip is read from its end, and a model several times: a pipe cannot be.
            raise UsageError('%s: not a regular file (a pipe?): an npz archive is read from '
                             'a file; save it to one first' % path)
        try:
            self.zip = zipfile.ZipFile(path)
        except FileNotFoundError:
            raise UsageError('%s: file not found' % path)
        except IsADirectoryError:
            raise UsageError('%s: is a directory, not an npz file' % path)
        except OSError as e:
            raise UsageError('%s: cannot read: %s' % (path, e.strerror or e))
        except (zipfile.BadZipFile, ValueError, EOFError) as e:
            raise UsageError('%s: not an npz archive (%s): truncated or another format'
                             % (path, e))
        try:
            for info in self.zip.infolist():
                member = info.filename
                if not member.endswith('.npy'):
                    raise UsageError('%s: not an npz archive: member %r is not an npy '
                                     'array' % (path, member))
                name = member[:-4]
                if info.flag_bits & 0x1:  # zipfile would ask for a password
                    raise UsageError('%s: array %r is encrypted: numpy never writes an '
                                     'encrypted npz' % (path, name))
                with self.zip.open(info) as stream:
                    shape, dtype, fortran = _read_header(stream)
                    header = stream.tell()
                if dtype.hasobject:
                    raise UsageError('%s: array %r holds Python objects (dtype %s): refused, '
                                     'since reading it could run code; model and state '
                                     'files hold numbers only' % (path, name, dtype))
                # The shapes are compared with a model's before any data is read: they
                # must be those of the data the member holds.
                declared = math.prod(shape) * dtype.itemsize
                if declared != info.file_size - header:
                    raise UsageError('%s: damaged array %r: its header declares %s %s (%d '
                                     'bytes) but it holds %d bytes'
                                     % (path, name, shape, dtype, declared,
                                        info.file_size - header))
                self.headers[name] = (shape, dtype)
                if info.compress_type == zipfile.ZIP_STORED and not fortran:
                    self.offsets[name] = _data_offset(self.zip.fp, info) + header
        except UsageError:
            self.zip.close()
            raise
        except (zipfile.BadZipFile, ValueError, EOFError, OSError, SyntaxError,
                TypeError, NotImplementedError, RuntimeError) as e:
            self.zip.close()
            raise UsageError('%s: damaged npz archive (%s)' % (path, e))

    @property
    def files(self):
        return list(self.headers)

    def shape(self, name):
        return self.headers[name][0]

    def dtype(self, name):
        return self.headers[name][1]

    def read(self, name, numeric=False, max_bytes=None, dtype=None):
        """The array `name`. numeric: it must be of numbers (bool, int, float), and
        floating point ones finite. max_bytes: refuse a larger declared size unread.
        dtype: the array converted to it, and checked finite after the conversion (a
        float64 1e300 is infinite in float32)."""
        shape, stored = self.headers[name]
        if numeric and stored.kind not in 'biuf':
            raise UsageError('%s: array %r is of type %s, not numbers'
                             % (self.path, name, stored))
        size = math.prod(shape) * stored.itemsize
        if max_bytes is not None and size > max_bytes:
            raise UsageError('%s: array %r declares %d bytes, more than the %d expected'
                             % (self.path, name, size, max_bytes))
        try:
            with self.zip.open(name + '.npy') as stream:
                array = np.lib.format.read_array(stream, allow_pickle=False)
        except (zipfile.BadZipFile, ValueError, EOFError, OSError) as e:
            raise UsageError('%s: damaged array %r (%s)' % (self.path, name, e))
        if numeric and array.dtype.kind == 'f' and not np.isfinite(array).all():
            raise UsageError('%s: array %r holds NaN or infinite values' % (self.path, name))
        if dtype is not None and array.dtype != dtype:
            with np.errstate(over='ignore', invalid='ignore'):
                converted = array.astype(dtype)
            if numeric and converted.dtype.kind == 'f' and not np.isfinite(converted).all():
                raise UsageError('%s: array %r holds values too large for %s (up to %g; '
                                 'it is stored as %s)' % (self.path, name, converted.dtype,
                                                          np.finfo(converted.dtype).max,
                                                          array.dtype))
            array = converted
        return array

    def map(self, name, dtype):
        """The array `name`, read-only and memory-mapped from the file, or None where it
        cannot be: stored compressed or in Fortran order, of another dtype than `dtype`,
        or not aligned for it (NumPy's BLAS calls need aligned data). Its values are
        checked finite as `read`'s are, streamed through a small buffer so that the check
        leaves none of the file resident in this process."""
        shape, stored = self.headers[name]
        offset = self.offsets.get(name)
        if (offset is None or stored != np.dtype(dtype) or stored.kind != 'f'
                or offset % stored.alignment or 0 in shape):
            return None
        count = math.prod(shape)
        fd = self.zip.fp.fileno()
        if offset + count * stored.itemsize > os.fstat(fd).st_size:
            raise UsageError('%s: damaged array %r: the file ends inside its data'
                             % (self.path, name))
        chunk = np.empty(1 << 20, dtype=stored)  # 4 MiB of float32
        done = 0
        while done < count:
            part = chunk[:min(chunk.size, count - done)]
            got = os.preadv(fd, [memoryview(part).cast('B')], offset + done * stored.itemsize)
            if got != part.nbytes:
                raise UsageError('%s: damaged array %r: the file ends inside its data'
                                 % (self.path, name))
            if not np.isfinite(part).all():
                raise UsageError('%s: array %r holds NaN or infinite values'
                                 % (self.path, name))
            done += part.size
        if self.file_map is None:
            self.file_map = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        return np.frombuffer(self.file_map, dtype=stored, count=count,
                             offset=offset).reshape(shape)

    def close(self):
        # The arrays `map` gave keep the mapping open after the file is closed.
        self.zip.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _read_header(stream):
    """(shape, dtype, fortran_order) from an npy header, without reading the data."""
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
    else:  # 3.0 (utf-8 field names) has no public reader
        shape, fortran, dtype = np.lib.format._read_array_header(stream, version)
    return tuple(shape), dtype, fortran


def _data_offset(fp, info):
    """Where the bytes of zip member `info` start in the file `fp`: after its local
    header, whose name and extra field may differ in length from the central
    directory's."""
    fp.seek(info.header_offset)
    local = fp.read(30)  # the fixed part; the two lengths are its last four bytes
    if len(local) != 30 or local[:4] != b'PK\x03\x04':
        raise zipfile.BadZipFile('bad local header of %r' % info.filename)
    name_length, extra_length = struct.unpack('<HH', local[26:30])
    return info.header_offset + 30 + name_length + extra_length


def _few(items, limit=4):
    return ', '.join(items[:limit]) + (', ...' if len(items) > limit else '')
