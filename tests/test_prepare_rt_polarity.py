"""datasets/prepare_rt_polarity.py on a tarball laid out as the public one."""

import importlib.util
import io
import tarfile

import pytest

from bertlib.errors import UsageError
from conftest import ROOT

spec = importlib.util.spec_from_file_location(
    'prepare_rt_polarity', ROOT / 'datasets' / 'prepare_rt_polarity.py')
prepare = importlib.util.module_from_spec(spec)
spec.loader.exec_module(prepare)


def make_tarball(path, per_class=25):
    """rt-polaritydata.tar.gz in miniature: Latin-1 lines with a trailing space."""
    with tarfile.open(path, 'w:gz') as tar:
        for name, word in (('rt-polarity.neg', 'bad'), ('rt-polarity.pos', 'caf\xe9')):
            text = ''.join('%s %d . \n' % (word, i) for i in range(per_class))
            data = text.encode('latin-1')
            info = tarfile.TarInfo('rt-polaritydata/' + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_fold_is_the_test_set_and_files_are_utf8(tmp_path):
    tarball = make_tarball(tmp_path / 'rt.tar.gz')
    prepare.main(['--tarball', str(tarball), '--out', str(tmp_path / 'rt'), '--fold', '4'])
    train = (tmp_path / 'rt' / '04-train.txt').read_text(encoding='utf-8').splitlines()
    test = (tmp_path / 'rt' / '04-test.txt').read_text(encoding='utf-8').splitlines()
    # 25 lines a class: blocks of 2, block 4 is lines 8 and 9 of each file.
    assert test == ['0\tbad 8 .', '0\tbad 9 .', '1\tcaf\xe9 8 .', '1\tcaf\xe9 9 .']
    assert len(train) == 46 and train[0] == '0\tbad 0 .' and train[-1] == '1\tcaf\xe9 24 .'
    assert not set(train) & set(test)


def test_not_a_tarball_is_a_clear_error(tmp_path):
    bad = tmp_path / 'bad.tar.gz'
    bad.write_bytes(b'not a tarball')
    with pytest.raises(UsageError, match='bad.tar.gz: not the rt-polarity tarball'):
        prepare.main(['--tarball', str(bad), '--out', str(tmp_path / 'rt')])
    assert not (tmp_path / 'rt' / '04-train.txt').exists()
