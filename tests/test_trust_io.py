"""What the scripts trust, round 3 (issue 26, items 1-4): a folder received from someone
else cannot make a training write through a link planted in it, a pipe given as a file
name is read once, no output may be an input of its command, and a signal ends a run that
waits for input; plus the judgement calls `-o newdir/` and a safetensors index naming a
shard outside its folder."""

import hashlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

import cluster_features
import explore_features
import extruct_bert_embed
import extruct_bert_metrics
import plot_features
import test_classifier
import train_dml
from bertlib import convert, fileio
from bertlib.errors import UsageError
from conftest import ROOT, WORDS, model_flags, write_features, write_random_bert, \
    write_random_lines

NOTES = b'my notes, not to be lost\n'


@pytest.fixture(scope='module')
def world(tmp_path_factory):
    """A tiny BERT, labelled data, sentences (in.txt) and a DML model trained one epoch
    ('trained')."""
    root = tmp_path_factory.mktemp('trust_io')
    bert = write_random_bert(root / 'bert', WORDS, hidden_size=16, num_hidden_layers=1,
                             intermediate_size=32)
    write_random_lines(root, (('train.txt', 24), ('eval.txt', 8)))
    (root / 'in.txt').write_text('pos\tgood film\nneg\tbad plot\n' * 3)
    train_dml.main(train_args(root, bert, root / 'trained'))
    return {'root': root, 'bert': bert}


def train_args(root, bert, out, *extra):
    return (['--train', str(root / 'train.txt'), '--eval', str(root / 'eval.txt'),
             '--out', str(out), '--batchsize', '8', '--noplot', '--epoch', '1', '--dim', '8',
             '--samples_per_class', '4'] + model_flags(bert) + list(extra))


def received_folder(world, path):
    """A copy of the trained folder, as if received from someone else (no lock held)."""
    shutil.copytree(world['root'] / 'trained', path)
    (path / '.lock').unlink()
    return path


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- 1. a received folder cannot make a training write through a link --------------------

@pytest.mark.parametrize('name, where, link, message', [
    ('.lock', '--resume', os.symlink, 'a symbolic link, not the lock file of this program'),
    ('.lock', '--out', os.symlink, 'a symbolic link, not the lock file of this program'),
    ('.lock', '--out', os.link, 'a file with another hard link, not the lock file'),
    ('.commit.json', '--out', os.symlink, 'not a commit journal of this program'),
    ('labels.bin', '--out', os.symlink, None),
    ('final.model', '--out', os.symlink, None),
])
def test_a_link_planted_in_a_training_folder_is_never_written_through(world, tmp_path, name,
                                                                      where, link, message):
    """The issue's case: `ln -s ~/notes.txt hostile/.lock; train_dml.py ... --resume
    hostile --out new` wrote a process id into notes.txt; a linked labels.bin had the
    labels written over it. Now a lock or journal that is a link is refused, and a file
    the training writes replaces the link itself."""
    notes = tmp_path / 'notes.txt'
    notes.write_bytes(NOTES)
    hostile = received_folder(world, tmp_path / 'hostile')
    new = tmp_path / 'new'
    new.mkdir()
    folder = hostile if where == '--resume' else new
    link(notes, folder / name)
    args = train_args(world['root'], world['bert'], new, '--epoch', '2',
                      '--resume', str(hostile))
    if message:
        with pytest.raises(UsageError, match=message):
            train_dml.main(args)
    else:
        train_dml.main(args)
        assert not (folder / name).is_symlink() and (folder / name).stat().st_size > 0
    assert notes.read_bytes() == NOTES


def test_files_named_inside_an_output_folder_replace_a_planted_link(world, tmp_path):
    """explore_features.py --projector DIR writes three files of its own naming into DIR:
    a link there is replaced, its target untouched; -o, named by the user, still follows
    its link as a shell redirection does."""
    notes = tmp_path / 'notes.txt'
    notes.write_bytes(NOTES)
    features = tmp_path / 'f.tsv'
    labels = write_features(features, sizes=(6, 6), dims=4)
    texts = tmp_path / 'texts.txt'
    texts.write_text(''.join('%s\tsentence %d\n' % (label, i)
                             for i, label in enumerate(labels)))
    projector = tmp_path / 'projector'
    projector.mkdir()
    os.symlink(notes, projector / 'tensors.tsv')
    explore_features.main(['--input', str(features), '--text', str(texts),
                           '--projector', str(projector)])
    assert notes.read_bytes() == NOTES
    assert not (projector / 'tensors.tsv').is_symlink()
    assert len((projector / 'tensors.tsv').read_text().splitlines()) == 12
    mine = tmp_path / 'mine.txt'
    os.symlink(mine, tmp_path / 'chosen.txt')
    with fileio.atomic_write(str(tmp_path / 'chosen.txt')) as stream:
        stream.write('followed')
    assert mine.read_text() == 'followed'


# --- 2. a pipe given as a file name is read once -------------------------------------------

def pipe_of(path):
    """/dev/fd/N of a pipe holding `path`'s bytes, as bash's <(cat path) gives it."""
    read_end, write_end = os.pipe()
    data = path.read_bytes()
    assert len(data) < 60000  # fits the pipe's buffer: written at once
    os.write(write_end, data)
    os.close(write_end)
    return read_end, '/dev/fd/%d' % read_end


def test_a_pipe_given_as_a_file_name_is_read_once(world, tmp_path):
    """`--input /dev/stdin`, `--input <(cat in.txt)` and `--vocab_file <(...)` wrote 0 rows
    (or stopped on an empty vocabulary): the input was checked by reading it, then read
    again. A FIFO hung for ever. Now each gives the rows of the file itself."""
    root, bert = world['root'], world['bert']
    expected_path = tmp_path / 'from_a_file.tsv'
    extruct_bert_embed.main(['--input', str(root / 'in.txt'), '-o', str(expected_path)]
                            + model_flags(bert))
    expected = expected_path.read_text()
    assert len(expected.splitlines()) == 6
    text_fd, text = pipe_of(root / 'in.txt')
    vocab_fd, vocab = pipe_of(bert / 'vocab.txt')
    try:
        flags = model_flags(bert)
        flags[flags.index('--vocab_file') + 1] = vocab
        extruct_bert_embed.main(['--input', text, '-o', str(tmp_path / 'pipe.tsv')] + flags)
    finally:
        os.close(text_fd)
        os.close(vocab_fd)
    assert (tmp_path / 'pipe.tsv').read_text() == expected
    fifo = tmp_path / 'fifo'
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes((root / 'in.txt').read_bytes()))
    writer.start()
    extruct_bert_embed.main(['--input', str(fifo), '-o', str(tmp_path / 'fifo.tsv')]
                            + model_flags(bert))
    writer.join(timeout=30)
    assert (tmp_path / 'fifo.tsv').read_text() == expected
    # An npz is a zip, read from its end and several times: a pipe is refused by name.
    model_fd, model = pipe_of(bert / 'arrays_bert_model.ckpt.npz') \
        if (bert / 'arrays_bert_model.ckpt.npz').stat().st_size < 60000 else (None, None)
    if model is not None:
        try:
            flags = model_flags(bert)
            flags[flags.index('--init_checkpoint') + 1] = model
            with pytest.raises(UsageError, match='not a regular file \\(a pipe\\?\\)'):
                extruct_bert_embed.main(['--input', str(root / 'in.txt')] + flags)
        finally:
            os.close(model_fd)


@pytest.mark.parametrize('block', [1, 3, 7, 1 << 20])
def test_lines_are_split_the_same_whatever_the_block_size(tmp_path, monkeypatch, block):
    """data.read_lines reads with os.read in blocks and splits the lines itself: a line
    may span blocks, and the last line may lack its newline."""
    from bertlib import data
    monkeypatch.setattr(data, 'BLOCK_BYTES', block)
    text = 'a\tfirst line\r\n\nsecond, longer than a block\nx\n\n\nlast without newline'
    (tmp_path / 'in.txt').write_text(text)
    assert list(data.read_lines(str(tmp_path / 'in.txt'))) == text.encode().split(b'\n')
    assert data.check_input(str(tmp_path / 'in.txt')) == 4


# --- 3. no output may be an input of its command ------------------------------------------

@pytest.fixture
def files(world, tmp_path):
    """Copies of every input a command can take, in tmp_path: b/ (BERT), m/ (the trained
    model), in.txt, f.png and f.html (features files named like outputs)."""
    shutil.copytree(world['bert'], tmp_path / 'b')
    received_folder(world, tmp_path / 'm')
    shutil.copy(world['root'] / 'in.txt', tmp_path / 'in.txt')
    write_features(tmp_path / 'f.png', sizes=(6, 6), dims=4)
    shutil.copy(tmp_path / 'f.png', tmp_path / 'f.html')
    os.symlink('m/final.model', tmp_path / 'alias.tsv')
    return tmp_path


def extract_flags(files):
    return (model_flags(files / 'b') + ['--model', str(files / 'm' / 'final.model'),
                                        '--label', str(files / 'm' / 'labels.bin'),
                                        '--input', str(files / 'in.txt')])


@pytest.mark.parametrize('script, flag, output', [
    (extruct_bert_metrics, '--model', 'm/final.model'),
    (extruct_bert_metrics, '--label', 'm/labels.bin'),
    (extruct_bert_metrics, '--vocab_file', 'b/vocab.txt'),
    (extruct_bert_metrics, '--bert_config_file', 'b/bert_config.json'),
    (extruct_bert_metrics, '--init_checkpoint', 'b/arrays_bert_model.ckpt.npz'),
    (extruct_bert_metrics, '--model', 'alias.tsv'),  # a symlink to the model
    (test_classifier, '--model', 'm/final.model'),
])
def test_an_extraction_never_writes_over_its_model(files, script, flag, output):
    """`extruct_bert_metrics.py --model M/final.model -o M/final.model` exited 0 and the
    model was gone; likewise for --label, --vocab_file and --init_checkpoint."""
    target = files / output
    before = digest(target)
    with pytest.raises(UsageError, match='--output %s is also an input \\(%s '
                                         % (target, flag)):
        script.main(extract_flags(files) + ['-o', str(target)])
    assert digest(target) == before


@pytest.mark.parametrize('case', ['plot', 'cluster', 'cluster scores', 'explore',
                                  'explore --text', 'explore --projector', 'train_dml'])
def test_an_analysis_or_a_training_never_writes_over_its_input(world, files, case):
    """plot_features.py, cluster_features.py and explore_features.py overwrote an --input
    whose name ended like a picture or a page; a training's <out>.png can be its --train."""
    picture, page = str(files / 'f.png'), str(files / 'f.html')
    run, target = {
        'plot': (lambda: plot_features.main(['--input', picture, '-o', picture]), 'f.png'),
        'cluster': (lambda: cluster_features.main(['--input', picture, '-o', picture]),
                    'f.png'),
        'cluster scores': (lambda: cluster_features.main(
            ['--input', str(files / 'f.tsv'), '-o', str(files / 'f.svg')]), 'f.tsv'),
        'explore': (lambda: explore_features.main(
            ['--input', page, '--text', str(files / 'in.txt'), '-o', page]), 'f.html'),
        'explore --text': (lambda: explore_features.main(
            ['--input', picture, '--text', page, '-o', page]), 'f.html'),
        'explore --projector': (lambda: explore_features.main(
            ['--input', str(files / 'p' / 'tensors.tsv'), '--text', str(files / 'in.txt'),
             '--projector', str(files / 'p')]), 'p/tensors.tsv'),
        'train_dml': (lambda: train_dml.main(  # <out>.png is drawn: no --noplot
            ['--train', str(files / 'run.png'), '--eval', str(world['root'] / 'eval.txt'),
             '--out', str(files / 'run'), '--epoch', '1'] + model_flags(world['bert'])),
                      'run.png'),
    }[case]
    if case == 'cluster scores':
        shutil.copy(files / 'f.png', files / 'f.tsv')
    elif case == 'explore --projector':
        (files / 'p').mkdir()
        shutil.copy(files / 'f.png', files / 'p' / 'tensors.tsv')
    elif case == 'train_dml':
        shutil.copy(world['root'] / 'train.txt', files / 'run.png')
    before = digest(files / target)
    with pytest.raises(UsageError, match='is also an input'):
        run()
    assert digest(files / target) == before


# --- 4. a signal ends a run that waits for input -------------------------------------------

@pytest.mark.parametrize('source, sig, status, last', [
    ('pipe', signal.SIGINT, 130, 'interrupted'),
    ('pipe', signal.SIGTERM, 143, 'terminated'),
    ('fifo', signal.SIGINT, 130, 'interrupted'),
])
def test_a_signal_ends_an_extraction_that_waits_for_input(world, tmp_path, source, sig,
                                                          status, last):
    """Ctrl-C or SIGTERM while the extractor waited on a slow pipe was ignored until input
    came (39 s in the probe; a FIFO no one writes, for ever): the thread reading ahead
    was joined at exit. It ends the run now, and the temporary beside -o is removed."""
    out = tmp_path / 'out' / 'features.tsv'
    out.parent.mkdir()
    read_end = write_end = None
    if source == 'pipe':
        read_end, write_end = os.pipe()
        stdin, name = read_end, '-'
    else:
        os.mkfifo(tmp_path / 'fifo')
        stdin, name = subprocess.DEVNULL, str(tmp_path / 'fifo')
    process = subprocess.Popen(
        [sys.executable, str(ROOT / 'extruct_bert_embed.py'), '--input', name, '-o', str(out)]
        + model_flags(world['bert']), stdin=stdin, stderr=subprocess.PIPE, text=True,
        cwd=str(ROOT))
    lines = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in process.stderr],
                              daemon=True)
    reader.start()
    err = ''
    try:
        while ' vocabulary ' not in err:  # the model is loaded: the reading starts
            err += lines.get(timeout=60)
        time.sleep(1.0)
        started = time.time()
        process.send_signal(sig)
        process.wait(timeout=60)
        seconds = time.time() - started
    finally:
        if process.poll() is None:
            process.kill()
        for fd in (read_end, write_end):
            if fd is not None:
                os.close(fd)
    reader.join(timeout=30)  # stderr ends with the process
    while not lines.empty():
        err += lines.get()
    assert process.returncode == status, err
    assert err.splitlines()[-1] == last and 'Traceback' not in err
    # Well under a second of our own; the interpreter's exit with Chainer, SciPy and
    # matplotlib loaded takes about as long again on a busy machine.
    assert seconds < 10
    assert os.listdir(out.parent) == []


def test_the_next_write_removes_the_temporary_a_kill_left(tmp_path):
    """A SIGKILLed extraction left a hidden temporary beside -o that nothing removed. The
    next write of that path removes it, but never one that a live process is writing."""
    target = tmp_path / 'out.tsv'
    pid = os.fork()
    if pid == 0:
        try:
            with fileio.atomic_write(str(target)) as stream:
                stream.write('half a file')
                stream.flush()
                os.kill(os.getpid(), signal.SIGKILL)
        finally:
            os._exit(1)
    os.waitpid(pid, 0)
    killed = [name for name in os.listdir(tmp_path) if name.endswith('.tmp')]
    assert len(killed) == 1 and not target.exists()
    with fileio.atomic_write(str(target)) as outer:
        live = [name for name in os.listdir(tmp_path) if name.endswith('.tmp')]
        assert len(live) == 1 and live != killed  # the killed one is gone
        with fileio.atomic_write(str(target)) as inner:  # another writer of the same path
            inner.write('inner')
        assert live[0] in os.listdir(tmp_path)  # outer's, being written, is left alone
        outer.write('outer')
    assert target.read_text() == 'outer'
    assert os.listdir(tmp_path) == ['out.tsv']


# --- judgement calls -----------------------------------------------------------------------

def test_an_output_ending_with_a_slash_is_refused(world, tmp_path):
    """`-o newdir/` wrote a file named newdir: a trailing '/' names a folder, and no
    script writes a folder for -o, so it is refused before any work."""
    with pytest.raises(UsageError, match="--output .*newdir/ ends with '/', so it names a "
                                         "folder"):
        extruct_bert_embed.main(['--input', str(world['root'] / 'in.txt'),
                                 '-o', str(tmp_path / 'newdir') + '/']
                                + model_flags(world['bert']))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('shard', ['../outside.safetensors', '/etc/passwd', 'sub/x.safetensors',
                                   '..'])
def test_a_safetensors_index_names_its_shards_beside_it(tmp_path, shard):
    """A downloaded model's index could name any file of the user's to be opened."""
    folder = tmp_path / 'model'
    folder.mkdir()
    (folder / 'model.safetensors.index.json').write_text(json.dumps(
        {'weight_map': {'embeddings.word_embeddings.weight': shard}}))
    with pytest.raises(UsageError, match='is not a file name of this folder'):
        convert.convert(str(folder), str(tmp_path / 'out'))
    assert not (tmp_path / 'out').exists()
