"""What the scripts trust (issue 13): hostile model, state and label files never run code
and are refused with one error line; mismatched files are refused before anything is
written; every flag is range-checked; outputs behave like ordinary files."""

import json
import os
import pickle
import shutil
import signal
import stat
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

import extruct_bert_classified
import extruct_bert_embed
import extruct_bert_metrics
import test_classifier
import train_classifier
import train_dml
from bertlib import checkpoints, data, fileio
from bertlib.errors import UsageError
from conftest import ROOT, WORDS, model_flags, write_random_bert, write_random_lines


class Boom(object):
    """An object whose unpickling runs a shell command: the payload of a hostile file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, ('touch %s' % self.marker,))


@pytest.fixture(scope='module')
def world(tmp_path_factory):
    """A tiny BERT, data, and trained folders: supcon after epoch 1 ('s1') and resumed to
    epoch 2 ('s2'), arcface ('arc') and a classifier ('cls'), one epoch each."""
    root = tmp_path_factory.mktemp('trust')
    bert = write_random_bert(root / 'bert', WORDS, hidden_size=16, num_hidden_layers=1,
                             intermediate_size=32)
    write_random_lines(root, (('train.txt', 24), ('eval.txt', 8)))
    (root / 'in.txt').write_text('pos\tgood film\nneg\tbad plot\n')
    world = {'root': root, 'bert': bert}
    train_dml.main(dml_args(world, root / 's1', '--loss', 'supcon'))
    shutil.copytree(root / 's1', root / 's2')
    train_dml.main(dml_args(world, root / 's2', '--loss', 'supcon', '--epoch', '2',
                            '--resume', str(root / 's2')))
    train_dml.main(dml_args(world, root / 'arc', '--loss', 'arcface'))
    train_classifier.main(common_args(world, root / 'cls'))
    return world


def common_args(world, out, *extra, bert=None, train=None):
    root = world['root']
    return (['--train', str(train or root / 'train.txt'), '--eval', str(root / 'eval.txt'),
             '--out', str(out), '--batchsize', '8', '--noplot', '--epoch', '1']
            + model_flags(bert or world['bert']) + list(extra))


def dml_args(world, out, *extra, **files):
    return common_args(world, out, '--dim', '8', '--samples_per_class', '4', *extra,
                       **files)


def copy_folder(world, name, tmp_path):
    target = tmp_path / name
    shutil.copytree(world['root'] / name, target)
    return target


def rewrite_npz(path, change):
    """Rewrites the npz `path` with change(dict of arrays) applied."""
    with np.load(path, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    change(arrays)
    with open(path, 'wb') as f:
        np.savez(f, **arrays)


def plant(path, marker):
    """Adds an object array whose unpickling would create `marker`."""
    def add(arrays):
        arrays['evil'] = np.array([Boom(marker)], dtype=object)
    rewrite_npz(path, add)


def extract_args(world, script_model, label):
    return (['--input', str(world['root'] / 'in.txt'), '--model', str(script_model),
             '--label', str(label)] + model_flags(world['bert']))


# --- hostile files: planted pickles in every npz the scripts read ---------------------

def run_with(world, tmp_path, which):
    """Runs the script that reads the planted file `which`; returns the marker path."""
    marker = tmp_path / 'pwned'
    bert = tmp_path / 'bert'
    shutil.copytree(world['bert'], bert)
    if which == 'init_checkpoint (train_dml.py)':
        plant(bert / 'arrays_bert_model.ckpt.npz', marker)
        train_dml.main(dml_args(world, tmp_path / 'out', bert=bert))
    elif which == 'init_checkpoint (extruct_bert_embed.py)':
        plant(bert / 'arrays_bert_model.ckpt.npz', marker)
        extruct_bert_embed.main(['--input', str(world['root'] / 'in.txt')]
                                + model_flags(bert))
    elif which in ('final.model (--resume)', 'final.state (--resume)'):
        folder = copy_folder(world, 's1', tmp_path)
        plant(folder / which.split()[0], marker)
        train_dml.main(dml_args(world, folder, '--loss', 'supcon', '--epoch', '2',
                                '--resume', str(folder)))
    elif which == 'final.state (train_classifier.py --resume)':
        folder = copy_folder(world, 'cls', tmp_path)
        plant(folder / 'final.state', marker)
        train_classifier.main(common_args(world, folder, '--epoch', '2',
                                          '--resume', str(folder)))
    elif which == 'early_stopped-map.model (extruct_bert_metrics.py)':
        folder = copy_folder(world, 'arc', tmp_path)
        plant(folder / 'early_stopped-map.model', marker)
        extruct_bert_metrics.main(extract_args(world, folder / 'early_stopped-map.model',
                                               folder / 'labels.bin'))
    elif which in ('final.model (extruct_bert_classified.py)',
                   'final.model (test_classifier.py)'):
        folder = copy_folder(world, 'cls', tmp_path)
        plant(folder / 'final.model', marker)
        script = extruct_bert_classified if 'extruct' in which else test_classifier
        script.main(extract_args(world, folder / 'final.model', folder / 'labels.bin'))
    else:
        raise AssertionError(which)
    return marker


@pytest.mark.parametrize('which', [
    'init_checkpoint (train_dml.py)', 'init_checkpoint (extruct_bert_embed.py)',
    'final.model (--resume)', 'final.state (--resume)',
    'final.state (train_classifier.py --resume)',
    'early_stopped-map.model (extruct_bert_metrics.py)',
    'final.model (extruct_bert_classified.py)', 'final.model (test_classifier.py)'])
def test_a_planted_pickle_is_refused_and_never_runs(world, tmp_path, which):
    with pytest.raises(UsageError, match="array 'evil' holds Python objects"):
        run_with(world, tmp_path, which)
    assert not (tmp_path / 'pwned').exists()


def test_a_pickle_in_place_of_the_step_count_or_the_metadata(world, tmp_path):
    folder = copy_folder(world, 's1', tmp_path)
    marker = tmp_path / 'pwned'

    def replace(key):
        def change(arrays):
            arrays[key] = np.array(Boom(marker), dtype=object)
        return change
    rewrite_npz(folder / 'final.state', replace('t'))
    with pytest.raises(UsageError, match="'t' holds Python objects"):
        checkpoints.state_step(str(folder / 'final.state'))
    rewrite_npz(folder / 'final.model', replace('meta/json'))
    with pytest.raises(UsageError, match="'meta/json' holds Python objects"):
        checkpoints.read_meta(str(folder / 'final.model'))
    assert not marker.exists()


def test_resume_with_a_planted_state_is_one_error_line_and_exit_2(world, tmp_path):
    """The issue's first defect: the command ran and training went on with exit 0."""
    folder = copy_folder(world, 's1', tmp_path)
    plant(folder / 'final.state', tmp_path / 'pwned')
    result = subprocess.run(
        [sys.executable, str(ROOT / 'train_dml.py')]
        + dml_args(world, folder, '--loss', 'supcon', '--epoch', '2', '--resume',
                   str(folder)), capture_output=True, text=True, cwd=str(ROOT))
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[-1].startswith('error: %s' % (folder / 'final.state'))
    assert 'Traceback' not in result.stderr
    assert not (tmp_path / 'pwned').exists()


# --- damaged and mismatched files -----------------------------------------------------

def test_truncated_model_file(world, tmp_path):
    folder = copy_folder(world, 'arc', tmp_path)
    model = folder / 'final.model'
    model.write_bytes(model.read_bytes()[:model.stat().st_size // 2])
    with pytest.raises(UsageError, match='final.model: not an npz archive'):
        extruct_bert_metrics.main(extract_args(world, model, folder / 'labels.bin'))


def rewrite_member(path, member, damage):
    """Rewrites the npz `path` with array `member` replaced by a hostile one:
    damage(array) -> (the npy header dict to write, the bytes to write after it)."""
    with np.load(path) as archive:
        arrays = {k: archive[k] for k in archive.files}
    with zipfile.ZipFile(path, 'w') as z:
        for name, array in arrays.items():
            with z.open(name + '.npy', 'w') as f:
                if name == member:
                    header, data = damage(array)
                    np.lib.format.write_array_header_1_0(f, header)
                    f.write(data)
                else:
                    np.lib.format.write_array(f, array)


def test_damaged_array_data(world, tmp_path):
    """A zip whose member is cut short: the header is fine, the data is not."""
    folder = copy_folder(world, 'arc', tmp_path)
    model = folder / 'final.model'
    rewrite_member(model, 'output/W', lambda array: (
        np.lib.format.header_data_from_array_1_0(array), array.tobytes()[:10]))
    with pytest.raises(UsageError, match="final.model: damaged array 'output/W'"):
        extruct_bert_metrics.main(extract_args(world, model, folder / 'labels.bin'))


@pytest.mark.parametrize('meta, message', [
    ('{"kind": "dml", ', 'is not valid JSON'),
    ('["dml"]', 'is not a JSON object'),
    ('{"kind": "dml", "epoch": "one", "step": 3}', "'epoch' is 'one', not a count"),
    ('{"kind": 7}', "'kind' is 7, not a string"),
])
def test_bad_model_metadata(world, tmp_path, meta, message):
    folder = copy_folder(world, 's1', tmp_path)

    def change(arrays):
        arrays['meta/json'] = np.array(meta)
    rewrite_npz(folder / 'final.model', change)
    with pytest.raises(UsageError, match=message):
        train_dml.main(dml_args(world, folder, '--loss', 'supcon', '--epoch', '2',
                                '--resume', str(folder)))


def test_nan_weights_are_refused(world, tmp_path):
    bert = tmp_path / 'bert'
    shutil.copytree(world['bert'], bert)

    def poison(arrays):
        arrays['bert/pooler/W'][0, 0] = np.nan
    rewrite_npz(bert / 'arrays_bert_model.ckpt.npz', poison)
    with pytest.raises(UsageError, match="'bert/pooler/W' holds NaN or infinite"):
        extruct_bert_embed.main(['--input', str(world['root'] / 'in.txt')]
                                + model_flags(bert))


def test_declared_shapes_are_checked_before_any_data_is_read(world, tmp_path):
    """An array header declaring 512 MiB (the data is not even there): refused by its
    header, not after reading (item 8; issue 26: by the bytes its member holds, before
    the shape is compared)."""
    bert = tmp_path / 'bert'
    shutil.copytree(world['bert'], bert)
    path = bert / 'arrays_bert_model.ckpt.npz'
    rewrite_member(path, 'bert/pooler/W', lambda array: (
        {'descr': '<f4', 'fortran_order': False, 'shape': (1 << 27,)}, b'\0' * 64))
    with pytest.raises(UsageError, match=r"damaged array 'bert/pooler/W': its header "
                                         r"declares \(134217728,\) float32"):
        extruct_bert_embed.main(['--input', str(world['root'] / 'in.txt')]
                                + model_flags(bert))


def test_a_zip_that_is_not_an_npz(tmp_path):
    with zipfile.ZipFile(tmp_path / 'x.npz', 'w') as z:
        z.writestr('payload.pkl', pickle.dumps({'a': 1}))
    with pytest.raises(UsageError, match="member 'payload.pkl' is not an npy array"):
        checkpoints.read_meta(str(tmp_path / 'x.npz'))


@pytest.mark.parametrize('model, state, epochs, message', [
    ('s2', 's1', '3', r'final.model \(epoch 2, step \d+\) and final.state \(step \d+\) '
                      r'were not saved together'),
    ('s1', 'arc', '2', r'state of 3 arrays the model does not have '
                       r'\(loss/W/m, loss/W/t, loss/W/v\)'),
], ids=['different-epochs', 'arcface-state-for-supcon'])
def test_a_state_that_does_not_belong_to_the_model_is_refused(world, tmp_path, model, state,
                                                               epochs, message):
    folder = copy_folder(world, model, tmp_path)
    shutil.copy(world['root'] / state / 'final.state', folder / 'final.state')
    with pytest.raises(UsageError, match=message):
        train_dml.main(dml_args(world, folder, '--loss', 'supcon', '--epoch', epochs,
                                '--resume', str(folder)))


def test_a_classifier_state_is_refused_before_anything_is_written(world, tmp_path):
    folder = copy_folder(world, 's1', tmp_path)
    shutil.copy(world['root'] / 'cls' / 'final.state', folder / 'final.state')
    out = tmp_path / 'elsewhere'
    with pytest.raises(UsageError, match='optimizer state does not fit the model'):
        train_dml.main(dml_args(world, out, '--loss', 'supcon', '--epoch', '2',
                                '--resume', str(folder)))
    assert not (out / 'labels.bin').exists()


def test_a_damaged_log_is_named(world, tmp_path):
    folder = copy_folder(world, 's1', tmp_path)
    with open(folder / 'log.jsonl', 'a') as f:
        f.write('{"epoch": 2, "T/loss"\n')
    with pytest.raises(UsageError, match=r'log.jsonl:2: not a JSON record'):
        train_dml.main(dml_args(world, folder, '--loss', 'supcon', '--epoch', '2',
                                '--resume', str(folder)))


def test_a_hostile_commit_journal_renames_nothing(world, tmp_path):
    folder = copy_folder(world, 's1', tmp_path)
    (tmp_path / 'victim').write_text('keep me')
    (folder / '.commit.json').write_text(json.dumps({'../victim': '.final.model.abcd1234.tmp'}))
    with pytest.raises(UsageError, match='not a commit journal of this program'):
        train_dml.main(dml_args(world, folder, '--loss', 'supcon', '--epoch', '2',
                                '--resume', str(folder)))
    assert (tmp_path / 'victim').read_text() == 'keep me'


# --- flags and text files ---------------------------------------------------------------

@pytest.mark.parametrize('flag, value, message', [
    ('--temperature', '0', '--temperature must be a number above 0'),
    ('--temperature', '-1', '--temperature must be a number above 0'),
    ('--learnrate', '-1', '--learnrate must be a number above 0'),
    ('--learnrate', 'nan', '--learnrate must be a number above 0'),
    ('--weightdecay', '-0.1', '--weightdecay must be a number of at least 0'),
    ('--samples_per_class', '0', '--samples_per_class must be between 2 and'),
    ('--warmup', '5', '--warmup must be a number of at least 0 and below 1'),
    ('--start_epoch', '-3', '--start_epoch must be at least 1'),
    ('--triplets', '-1', '--triplets must be between 0 and'),
    ('--margin', '-0.1', '--margin must be a number of at least 0'),
    ('--scale', '0', '--scale must be a number above 0'),
    ('--seed', '-1', '--seed must be between 0 and'),
    ('--epoch', '0', '--epoch must be between 1 and 100000'),
    ('--dim', '0', '--dim must be between 1 and'),
])
def test_out_of_range_flags(world, tmp_path, flag, value, message):
    out = tmp_path / 'out'
    with pytest.raises(UsageError, match=message):
        train_dml.main(dml_args(world, out, flag, value))
    assert not out.exists()


def test_a_byte_order_mark_is_not_part_of_the_first_label(tmp_path):
    (tmp_path / 'bom.txt').write_bytes('\ufeffpos\tgood film\nneg\tbad film\n'.encode('utf-8'))
    labels = [e.label for e in data.iter_examples(str(tmp_path / 'bom.txt'))]
    assert labels == ['pos', 'neg']


def test_cr_only_line_endings_are_named(world, tmp_path):
    train = tmp_path / 'mac.txt'
    train.write_bytes(b'pos\tgood film\rneg\tbad film\rpos\tnice\r')
    with pytest.raises(UsageError, match=r'mac.txt:1: carriage return inside a line'):
        train_dml.main(dml_args(world, tmp_path / 'out', train=train))
    # The extractors' fast first pass reports it too.
    with pytest.raises(UsageError, match='carriage return'):
        data.check_input(str(train))


def test_an_output_that_is_an_input_is_refused(tmp_path):
    import evaluate_features
    path = tmp_path / 'x.tsv'
    rng = np.random.RandomState(0)
    path.write_text(''.join('%d\t%s\n' % (i % 2, '\t'.join('%.3f' % v for v in rng.randn(3)))
                            for i in range(20)))
    before = path.read_bytes()
    with pytest.raises(UsageError, match='is also an input'):
        evaluate_features.main([str(path), '-o', str(path)])
    os.symlink(path, tmp_path / 'alias.tsv')
    with pytest.raises(UsageError, match='is also an input'):
        evaluate_features.main([str(path), '-o', str(tmp_path / 'alias.tsv')])
    assert path.read_bytes() == before


def test_two_trainings_into_one_folder(world, tmp_path):
    out = tmp_path / 'out'
    out.mkdir()
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            fileio.DirectoryLock.acquire(str(out))
            os.write(ready_w, b'x')
            time.sleep(30)
        finally:
            os._exit(0)
    os.close(ready_w)
    try:
        assert os.read(ready_r, 1) == b'x'
        with pytest.raises(UsageError, match=r'--out .* is in use by another training '
                                             r'\(pid %d\)' % pid):
            train_dml.main(dml_args(world, out))
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert not (out / 'labels.bin').exists()


# --- outputs behave like ordinary files -------------------------------------------------

@pytest.mark.parametrize('umask, mode', [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_a_new_file_honours_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        with fileio.atomic_write(str(tmp_path / 'new.txt')) as f:
            f.write('x')
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / 'new.txt').stat().st_mode) == mode


def test_a_rewritten_file_keeps_its_mode(tmp_path):
    path = tmp_path / 'shared.txt'
    path.write_text('old')
    os.chmod(path, 0o604)
    with fileio.atomic_write(str(path)) as f:
        f.write('new')
    assert path.read_text() == 'new'
    assert stat.S_IMODE(path.stat().st_mode) == 0o604


def test_a_symlink_is_followed_to_its_file(tmp_path):
    (tmp_path / 'data').mkdir()
    target = tmp_path / 'data' / 'real.txt'
    target.write_text('old')
    link = tmp_path / 'link.txt'
    os.symlink(target, link)
    with fileio.atomic_write(str(link)) as f:
        f.write('new')
    assert link.is_symlink() and target.read_text() == 'new'
    dangling = tmp_path / 'dangling.txt'
    os.symlink(tmp_path / 'data' / 'later.txt', dangling)
    with fileio.atomic_write(str(dangling)) as f:
        f.write('made')
    assert dangling.is_symlink() and (tmp_path / 'data' / 'later.txt').read_text() == 'made'


def device(tmp_path, name, minor):
    """A private copy of /dev/null (minor 3) or /dev/full (7) in tmp_path, or a symlink
    to it where mknod is not allowed: a broken atomic_write run as root must not replace
    the machine's own device (the code this suite was written against did)."""
    path = tmp_path / name
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, minor))
    except OSError:
        os.symlink('/dev/' + name, path)
    return path


def test_a_device_stays_a_device(tmp_path):
    null = device(tmp_path, 'null', 3)
    with fileio.atomic_write(str(null), 'wb') as f:
        f.write(b'x' * 1000)
    assert stat.S_ISCHR(os.stat(null).st_mode)
    assert sorted(os.listdir(tmp_path)) == ['null']


def test_a_pipe_is_written_straight_to(tmp_path):
    fifo = tmp_path / 'fifo'
    os.mkfifo(fifo)
    reader = subprocess.Popen(['cat', str(fifo)], stdout=subprocess.PIPE)
    with fileio.atomic_write(str(fifo)) as f:
        f.write('through the pipe\n')
    assert reader.communicate(timeout=10)[0] == b'through the pipe\n'
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert os.listdir(tmp_path) == ['fifo']


def test_a_full_disk_is_one_usage_error(tmp_path):
    full = device(tmp_path, 'full', 7)
    with pytest.raises(UsageError, match='full: cannot write: No space left'):
        with fileio.atomic_write(str(full)) as f:
            f.write('x' * 100000)


def test_a_read_only_folder_is_one_usage_error(tmp_path, monkeypatch):
    """As a user (root bypasses permissions, so the kernel's answer is simulated too)."""
    import errno
    real_open = os.open

    def read_only(path, flags, *args):
        if flags & os.O_CREAT:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
        return real_open(path, flags, *args)
    monkeypatch.setattr(os, 'open', read_only)
    with pytest.raises(UsageError, match='out.txt: cannot write: Read-only file system'):
        with fileio.atomic_write(str(tmp_path / 'out.txt')) as f:
            f.write('x')


def test_stdout_on_a_full_disk_is_one_error_line(tmp_path):
    rng = np.random.RandomState(0)
    path = tmp_path / 'f.tsv'
    path.write_text(''.join('%d\t%s\n' % (i % 2, '\t'.join('%.3f' % v for v in rng.randn(3)))
                            for i in range(20)))
    full = device(tmp_path, 'full', 7)
    for extra, message in (([], 'error: standard output: No space left on device'),
                           (['-o', str(full)], 'error: %s: cannot write' % full)):
        with open(full, 'w') as full_disk:
            result = subprocess.run([sys.executable, str(ROOT / 'evaluate_features.py'),
                                     str(path)] + extra, stdout=full_disk, stderr=subprocess.PIPE,
                                    text=True, cwd=str(ROOT))
        assert result.returncode == 2, result.stderr
        assert result.stderr.splitlines()[-1].startswith(message), result.stderr
        assert 'Traceback' not in result.stderr and 'Exception' not in result.stderr


def test_a_commit_is_all_or_none(tmp_path):
    for name in ('a', 'b'):
        (tmp_path / name).write_text('old')
    commit = fileio.Commit(str(tmp_path))
    for name in ('a', 'b'):
        with commit.open(name, 'w') as f:
            f.write('new')
    # Killed before the journal: the old files stand, the temporaries are leftovers.
    assert (tmp_path / 'a').read_text() == 'old'
    assert len(fileio.remove_leftovers(str(tmp_path))) == 2
    assert sorted(os.listdir(tmp_path)) == ['a', 'b']
    # Killed after the journal and the first rename: the next run finishes the commit.
    commit = fileio.Commit(str(tmp_path))
    for name in ('a', 'b'):
        with commit.open(name, 'w') as f:
            f.write('new')
    (tmp_path / '.commit.json').write_text(json.dumps(commit.pending))
    os.replace(tmp_path / commit.pending['a'], tmp_path / 'a')
    assert fileio.recover(str(tmp_path)) == ['b']
    assert [(tmp_path / n).read_text() for n in ('a', 'b')] == ['new', 'new']
    assert sorted(os.listdir(tmp_path)) == ['a', 'b']


def test_sigterm_cleans_up_like_ctrl_c(world, tmp_path):
    out = tmp_path / 'out'
    process = subprocess.Popen(
        [sys.executable, str(ROOT / 'train_dml.py')] + dml_args(world, out, '--epoch', '100000'), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=str(ROOT))
    for line in process.stdout:
        if line.startswith('saving final model at epoch 2'):
            break
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    assert err.splitlines()[-1] == 'terminated' and 'Traceback' not in err
    assert [n for n in os.listdir(out) if n.endswith('.tmp') or n == '.commit.json'] == []
    meta = checkpoints.read_meta(str(out / 'final.model'))
    assert meta['step'] == checkpoints.state_step(str(out / 'final.state'))
