"""bench/debian_unseen.py's pieces that decide what is measured: the training file of
--sections, and the reuse of a validation run's models by a --test run (only when they
were trained by the same command)."""

import json

import debian_unseen  # bench/, on pytest.ini's pythonpath


def fake_data(tmp_path, monkeypatch):
    data = tmp_path / 'debian'
    data.mkdir()
    lines = ''.join('%s\t%s synopsis %d\n' % (label, label, i)
                    for label in ('utils', 'admin', 'x11', 'doc') for i in range(3))
    (data / 'train.txt').write_text(lines, encoding='utf-8')
    monkeypatch.setattr(debian_unseen, 'DATA', data)
    return data


def test_sections_keeps_the_first_sections_in_alphabetical_order(tmp_path, monkeypatch):
    data = fake_data(tmp_path, monkeypatch)
    assert debian_unseen.training_file(tmp_path, 0) == data / 'train.txt'
    path = debian_unseen.training_file(tmp_path, 2)
    labels = [line.split('\t')[0] for line in path.read_text().splitlines()]
    assert labels == ['admin'] * 3 + ['doc'] * 3


def test_a_model_is_reused_only_for_the_same_command(tmp_path, monkeypatch):
    data = fake_data(tmp_path, monkeypatch)
    calls = []

    def train_dml(train, evaluation, out, epoch, text_prefix, extra):
        calls.append((train, evaluation, epoch, extra))
        out.mkdir(parents=True, exist_ok=True)
        (out / 'final.model').write_bytes(b'model')
        return 1.0
    monkeypatch.setattr(debian_unseen.dc, 'train_dml', train_dml)
    out = tmp_path / 'seed-0'
    assert debian_unseen.train(0, out, 2, ['--distill', '1'], data / 'train.txt')[0] == 1.0
    # The evaluation file of training is the validation one, whatever is scored.
    assert calls[-1][1] == data / 'unseen-validation.txt'
    assert debian_unseen.train(0, out, 2, ['--distill', '1'], data / 'train.txt')[0] is None
    assert len(calls) == 1
    for changed in ((1, out, 2, ['--distill', '1'], data / 'train.txt'),
                    (0, out, 1, ['--distill', '1'], data / 'train.txt'),
                    (0, out, 2, ['--distill', '2'], data / 'train.txt'),
                    (0, out, 2, ['--distill', '2'], tmp_path / 'train-4.txt')):
        before = len(calls)
        debian_unseen.train(*changed)
        assert len(calls) == before + 1, changed
    assert json.loads((out / 'bench-command.json').read_text())['train'].endswith(
        'train-4.txt')
