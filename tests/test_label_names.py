"""--label_names: the one mapping file of label display names, validated with its file and
line, shown by every picture and the explorer while the scores keep the labels."""

import json
import re

import pytest

import cluster_features
import evaluate_features
import explore_features
import plot_features
from bertlib import figures, labelnames
from bertlib.errors import UsageError

from conftest import write_features

LABELS = ['エンジン', '制動装置', '排ｶﾞｽ･騒音', '電動機(モーター)']  # conftest's JAPANESE
NAMES = {'エンジン': 'engine', '制動装置': 'brakes', '排ｶﾞｽ･騒音': 'exhaust and noise'}


def names_file(folder, text='\ufeffエンジン\tengine\r\n\n制動装置\tbrakes\n'
                            '排ｶﾞｽ･騒音\texhaust and noise\n'):
    path = folder / 'names.tsv'
    path.write_bytes(text.encode('utf-8') if isinstance(text, str) else text)
    return path


def test_file_is_read_with_its_byte_order_mark_crlf_and_blank_lines(tmp_path):
    assert labelnames.read(str(names_file(tmp_path))) == NAMES
    assert labelnames.read(None) == {}


@pytest.mark.parametrize('text, message', [
    ('0\tnegative\n1 positive\n', r"names.tsv:2: expected 'label<TAB>name', got '1 positive'"),
    ('0\tnegative\n1\t \n', r"names.tsv:2: expected 'label<TAB>name'"),
    ('0\tnegative\n1\tpositive\textra\n', r"names.tsv:2: expected 'label<TAB>name'"),
    ('0\tnegative\n1\tpositive\n0\tbad\n', r"names.tsv:3: label '0' is named again \(first "
                                           r"on line 1\)"),
    ('0\tsame\n1\tsame\n', r"names.tsv:2: name 'same' is already the name of label '0' "
                           r"\(line 1\)"),
    ('\n\n', r'names.tsv: no label names \(the file is empty\)'),
    (b'0\t\xffnegative\n', r'names.tsv: not UTF-8 text'),
])
def test_bad_files_are_one_error_naming_file_and_line(tmp_path, text, message):
    with pytest.raises(UsageError, match=message):
        labelnames.read(str(names_file(tmp_path, text)))


def test_a_name_that_is_another_shown_label_is_refused():
    with pytest.raises(UsageError, match="names.tsv: label 'a' is named 'b', which is also "
                                         'a label of the data'):
        labelnames.display({'a': 'b'}, ['a', 'b'], 'names.tsv')
    # Swapping two names is one-to-one, and labels the file leaves out stay as they are.
    assert labelnames.display({'a': 'b', 'b': 'a'}, ['a', 'b', 'c'], 'f') == {
        'a': 'b', 'b': 'a', 'c': 'c'}


def spy_scatter(monkeypatch):
    """Records the labels and title of each scatter panel drawn."""
    drawn = []
    real = figures.scatter
    monkeypatch.setattr(figures, 'scatter', lambda ax, xy, labels, title: (
        drawn.append((list(labels), title, ax)), real(ax, xy, labels, title)))
    return drawn


def legend_texts(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_plot_features_shows_the_names_and_draws_the_same_sample(tmp_path, monkeypatch):
    source = tmp_path / 'f.tsv'
    labels = write_features(source)
    names = names_file(tmp_path)
    drawn = spy_scatter(monkeypatch)
    for flags in ([], ['--label_names', str(names)]):
        plot_features.main(['--input', str(source), '--output', str(tmp_path / 'p.png'),
                            '--method', 'pca', '--samples', '40'] + flags)
    (plain, _, _), (named, title, ax) = drawn
    assert named == [NAMES.get(label, label) for label in plain]
    assert legend_texts(ax) == ['engine', 'brakes', 'exhaust and noise', LABELS[3]]
    assert ax.get_legend().get_title().get_text() == 'label'
    assert title.endswith('precision@1 1.000   MAP@R 1.000 of the sample')
    assert len(set(labels)) == 4


def test_cluster_features_shows_the_names_and_keeps_the_scores(tmp_path):
    source = tmp_path / 'f.tsv'
    write_features(source, sizes=(40, 30, 20, 10))
    tables = []
    for flags in ([], ['--label_names', str(names_file(tmp_path))]):
        cluster_features.main(['--input', str(source), '--output', str(tmp_path / 'c.png'),
                               '--algorithms', 'MiniBatchKMeans,Ward'] + flags)
        tables.append([line.split('\t')[:-2] for line in
                       (tmp_path / 'c.tsv').read_text(encoding='utf-8').splitlines()])
    assert tables[0] == tables[1]  # the seconds and status columns left out


def test_cluster_grid_legend_lists_the_names(monkeypatch, tmp_path):
    source = tmp_path / 'f.tsv'
    write_features(source, sizes=(40, 30, 20, 10))
    caught = []
    monkeypatch.setattr(figures, 'save_figure', lambda figure, path, dpi: caught.append(figure))
    cluster_features.main(['--input', str(source), '--output', str(tmp_path / 'c.png'),
                           '--algorithms', 'MiniBatchKMeans', '--label_names',
                           str(names_file(tmp_path))])
    texts = [t.get_text() for t in caught[0].legends[0].get_texts()]  # right of the panels
    assert texts[:5] == [figures.LEGEND_HEADINGS[0], 'engine', 'brakes', 'exhaust and noise',
                         LABELS[3]]


def test_comparison_has_a_title_the_names_and_map_at_r(tmp_path, monkeypatch):
    source = tmp_path / 'f.tsv'
    write_features(source, sizes=(40, 30, 20, 10))
    caught = []
    monkeypatch.setattr(figures, 'save_figure', lambda figure, path, dpi: caught.append(figure))
    drawn = spy_scatter(monkeypatch)
    evaluate_features.main([str(source), str(source), '--names', 'DML', 'Pre-trained',
                            '--grid', str(tmp_path / 'g.png'), '--grid_samples', '50',
                            '--output', str(tmp_path / 't.md'),
                            '--label_names', str(names_file(tmp_path))])
    assert caught[0].get_suptitle().startswith(
        't-SNE of each feature set: a stratified sample of 50 of the 100 points each, '
        'coloured by label\nprecision@1 and MAP@R:')
    assert [title for _, title, _ in drawn] == [
        'DML\nprecision@1 1.000   MAP@R 1.000', 'Pre-trained\nprecision@1 1.000   MAP@R 1.000']
    assert legend_texts(drawn[0][2])[:3] == ['engine', 'brakes', 'exhaust and noise']


def test_explorer_page_and_projector_show_the_names(tmp_path):
    source, text = tmp_path / 'f.tsv', tmp_path / 'text.txt'
    labels = write_features(source, sizes=(12, 9, 6, 3))
    text.write_text(''.join('%s\tsentence %d\n' % (label, i) for i, label in enumerate(labels)),
                    encoding='utf-8')
    page, projector = tmp_path / 'page.html', tmp_path / 'projector'
    explore_features.main(['--input', str(source), '--text', str(text), '--output', str(page),
                           '--projector', str(projector), '--method', 'pca',
                           '--label_names', str(names_file(tmp_path))])
    data = json.loads(re.search(r'<script type="application/json" id="explorer-data">(.*?)'
                                r'</script>', page.read_text(encoding='utf-8'), re.S).group(1))
    assert data['names'] == ['engine', 'brakes', 'exhaust and noise', LABELS[3]]
    metadata = (projector / 'metadata.tsv').read_text(encoding='utf-8').splitlines()
    assert metadata[1].split('\t')[0] == 'engine'


def test_bad_names_stop_every_script_before_the_slow_work(tmp_path):
    source = tmp_path / 'f.tsv'
    write_features(source)
    bad = names_file(tmp_path, 'エンジン\n')
    message = r"names.tsv:1: expected 'label<TAB>name'"
    for main, argv in ((plot_features.main, ['--input', str(source)]),
                       (cluster_features.main, ['--input', str(source), '--output',
                                                str(tmp_path / 'c.png')]),
                       (evaluate_features.main, [str(source), '--output',
                                                 str(tmp_path / 't.md')])):
        with pytest.raises(UsageError, match=message):
            main(argv + ['--label_names', str(bad)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ['f.tsv', 'names.tsv']
