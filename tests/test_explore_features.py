"""explore_features.py: the neighbours, the checks of its input, the escaping of the page,
the Projector export (served by a real TensorBoard) and the page in headless Chromium."""

import json
import re
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

import browser
from bertlib import explorer, metrics
from bertlib.errors import UsageError
from conftest import ROOT

SCRIPT = str(ROOT / 'explore_features.py')

# Sentences and labels a page must show as text: markup, quotes, a template marker,
# right-to-left and Japanese text, a very long line.
TRICKY = ['</script><script>window.pwned = 1</script>',
          '<img src=x onerror="window.pwned = 2"> & "quotes" \'single\'',
          'a sentence that reads {{PLOTLY}} and {{DATA}}',
          'שלום עולם, this mixes right-to-left text',
          '日本語の文です。エンジンが停止した。',
          'long ' * 400 + 'end',
          '<!-- not a comment --> \u2028 line separator']
LABELS = ['<b>bold</b>', 'plain', '日本']


def run(*args):
    return subprocess.run([sys.executable, SCRIPT] + [str(a) for a in args],
                          capture_output=True, text=True, cwd=str(ROOT), timeout=300)


def make_data(folder, per_label=40, dim=12, seed=0):
    """Three clustered labels of unique sentences (TRICKY among them), with an empty line
    in the text file: returns (features path, text path, labels, texts, vectors)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(LABELS), dim)) * 3
    labels, texts, vectors = [], [], []
    for i in range(per_label * len(LABELS)):
        k = i % len(LABELS)
        labels.append(LABELS[k])
        texts.append(TRICKY[i] if i < len(TRICKY) else 'sentence number %d of %s'
                     % (i, LABELS[k]))
        vectors.append(centres[k] + rng.normal(size=dim))
    vectors = np.array(vectors, dtype=np.float32)
    features, text = folder / 'features.txt', folder / 'text.txt'
    features.write_text(''.join('%s\t%s\n' % (lab, '\t'.join('%.6f' % v for v in row))
                                for lab, row in zip(labels, vectors)), encoding='utf-8')
    lines = ['%s\t%s' % pair for pair in zip(labels, texts)]
    lines.insert(5, '   ')  # skipped, as the extractors skip it
    text.write_text('\n'.join(lines) + '\n', encoding='utf-8')
    return features, text, labels, texts, vectors


def brute_force_neighbours(x, k):
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = unit.astype(np.float64) @ unit.T.astype(np.float64)
    np.fill_diagonal(sims, -np.inf)
    return np.array([sorted(range(len(x)), key=lambda j: (-sims[i, j], j))[:k]
                     for i in range(len(x))])


def test_neighbours_rank_as_the_retrieval_metrics_do():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 5))
    x[10] = x[3]                      # a duplicate: tied with 3, broken by index
    x[20] = 2 * x[3]                  # same direction: cosine ties as well
    labels = rng.integers(0, 3, size=60)
    indices, sims = metrics.nearest_neighbours(x, 7, batch_size=16, workers=2)
    assert indices.shape == sims.shape == (60, 7)
    np.testing.assert_array_equal(indices, brute_force_neighbours(x, 7))
    assert list(indices[3, :2]) == [10, 20] and list(indices[10, :2]) == [3, 20]
    assert (np.diff(sims, axis=1) <= 0).all()
    p1 = (labels[indices[:, 0]] == labels).mean()
    assert p1 == pytest.approx(metrics.retrieval_metrics(x, labels)['precision_at_1'])
    assert metrics.nearest_neighbours(x[:4], 10)[0].shape == (4, 3)  # k clipped to N - 1


def test_one_pass_gives_the_retrieval_figures_and_the_neighbours(monkeypatch):
    """retrieval_and_neighbours: the exact neighbour lists and retrieval_metrics' figures,
    from one similarity row per item (a singleton and duplicates included)."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(50, 4))
    x[7] = x[2]
    labels = list(rng.integers(0, 3, size=49)) + [9]
    expected = metrics.retrieval_metrics(x, labels, per_query=False)
    rows = []
    real = metrics._similarity_rows
    monkeypatch.setattr(metrics, '_similarity_rows',
                        lambda unit, column, block: rows.append(len(block)) or
                        real(unit, column, block))
    scores, indices, sims = metrics.retrieval_and_neighbours(x, labels, 6, batch_size=16)
    assert sum(rows) == 50            # each item's similarities computed once
    assert scores['count'] == expected['count'] == 49
    for key in ('precision_at_1', 'r_precision', 'map_at_r'):
        assert abs(scores[key] - expected[key]) <= 1e-12
    np.testing.assert_array_equal(indices, brute_force_neighbours(x, 6))
    assert (np.diff(sims, axis=1) <= 0).all()


def test_summary_per_label_precision_adds_up_to_the_file_figure(tmp_path):
    _, _, labels, _, vectors = make_data(tmp_path)
    labels[-1] = 'alone'              # a singleton: no precision@1 of its own
    scores, neighbours, _ = metrics.retrieval_and_neighbours(vectors, labels, 5)
    summary = explorer.summarise(labels, scores, neighbours)
    counts = {name: count for name, (count, _) in summary['per_label'].items()}
    assert counts == {'<b>bold</b>': 40, 'plain': 40, '日本': 39, 'alone': 1}
    assert summary['per_label']['alone'][1] is None
    queries = [(c, p) for c, p in summary['per_label'].values() if p is not None]
    assert sum(c * p for c, p in queries) / sum(c for c, _ in queries) == \
        pytest.approx(summary['precision_at_1'])
    assert summary['queries'] == len(labels) - 1


def test_texts_follow_the_extractors_line_order_and_mismatches_name_both_files(tmp_path):
    features, text, labels, texts, _ = make_data(tmp_path)
    assert explorer.read_texts(str(text), str(features), labels) == texts
    with pytest.raises(UsageError, match=r'text\.txt has 120 non-empty lines but .*'
                                         r'features\.txt has 119 feature rows'):
        explorer.read_texts(str(text), str(features), labels[:-1])
    swapped = labels[:3] + ['plain'] + labels[4:]
    with pytest.raises(UsageError, match=r"text\.txt:4 has label '<b>bold</b>' but row 4 "
                                         r"of .*features\.txt has 'plain'"):
        explorer.read_texts(str(text), str(features), swapped)


def test_bad_input_is_one_error_line_before_any_slow_work(tmp_path):
    features, text, _, _, _ = make_data(tmp_path)
    short = tmp_path / 'short.txt'
    short.write_text(''.join(text.read_text(encoding='utf-8').splitlines(True)[:50]),
                     encoding='utf-8')
    result = run('--input', features, '--text', short, '--output', tmp_path / 'p.html')
    assert result.returncode == 2
    assert result.stderr.startswith('error: ') and 'Traceback' not in result.stderr
    assert str(short) in result.stderr and str(features) in result.stderr
    assert not (tmp_path / 'p.html').exists()
    for args, message in (
            (['--output', tmp_path / 'missing' / 'p.html'], 'does not exist'),
            (['--output', tmp_path / 'p.png'], 'must be an .html file'),
            (['--projector', features], 'is not a directory'),
            (['--projector', features / 'sub' / 'dir'], 'is not a directory'),
            ([], 'nothing to write')):
        start = time.time()
        result = run('--input', features, '--text', text, *args)
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert time.time() - start < 30


@pytest.fixture(scope='module')
def page(tmp_path_factory):
    """A page (PCA map, 5 neighbours) and its Projector folder, built by the script."""
    folder = tmp_path_factory.mktemp('page')
    features, text, labels, texts, vectors = make_data(folder)
    html, projector = folder / 'page.html', folder / 'new' / 'projector'
    result = run('--input', features, '--text', text, '--output', html, '--method', 'pca',
                 '--neighbours', 5, '--projector', projector, '--title', '<i>title</i>')
    assert result.returncode == 0, result.stderr
    return {'html': html, 'projector': projector, 'labels': labels, 'texts': texts,
            'vectors': vectors, 'neighbours': metrics.nearest_neighbours(vectors, 5)[0]}


def page_json(html):
    """The data block of a page, as its script parses it."""
    match = re.search(r'<script type="application/json" id="explorer-data">(.*?)</script>',
                      html, re.S)
    return match.group(1)


def test_page_holds_every_text_as_data_never_as_markup(page):
    html = page['html'].read_text(encoding='utf-8')
    block = page_json(html)
    assert '<' not in block and '>' not in block and '&' not in block
    data = json.loads(block)
    assert data['text'] == page['texts'] and data['count'] == len(page['texts'])
    assert [data['names'][c] for c in data['label']] == page['labels']
    assert data['neighbours'] == page['neighbours'].ravel().tolist()
    # Three script elements: the data, plotly.js and the page's own code; no sentence
    # opened another, and the title is escaped.
    assert len(re.findall(r'<script\b', html)) == 3
    assert '<title>&lt;i&gt;title&lt;/i&gt;</title>' in html
    assert 'http://' not in block and 'src="http' not in html


def test_projector_files_hold_the_vectors_labels_and_sentences(page):
    folder = page['projector']
    tensors = np.loadtxt(folder / 'tensors.tsv', delimiter='\t')
    np.testing.assert_allclose(tensors, page['vectors'], atol=1e-5)
    rows = (folder / 'metadata.tsv').read_text(encoding='utf-8').split('\n')[:-1]
    assert rows[0] == 'label\tsentence' and len(rows) == 1 + len(page['labels'])
    assert rows[1] == '<b>bold</b>\t' + TRICKY[0]
    assert all(row.count('\t') == 1 for row in rows)
    assert (folder / 'projector_config.pbtxt').read_text() == (
        'embeddings {\n  tensor_name: "<i>title</i>"\n  tensor_path: "tensors.tsv"\n'
        '  metadata_path: "metadata.tsv"\n}\n')


def test_tensorboard_serves_the_projector_export(page):
    pytest.importorskip('tensorboard', reason='tensorboard is not installed '
                                              '(pip install -r requirements-test.txt)')
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, '-m', 'tensorboard.main', '--logdir', str(page['projector']),
         '--host', '127.0.0.1', '--port', str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = 'http://127.0.0.1:%d/data/plugin/projector/' % port

    def get(path):
        with urllib.request.urlopen(base + path, timeout=10) as response:
            return response.read()
    try:
        deadline = time.time() + 120
        while True:
            try:
                runs = json.loads(get('runs'))
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.5)
        assert runs == ['.']
        info = json.loads(get('info?run=.'))
        name = info['embeddings'][0]['tensorName']
        assert name == '<i>title</i>'
        quoted = urllib.request.quote(name)
        tensor = np.frombuffer(get('tensor?run=.&name=' + quoted), dtype=np.float32)
        np.testing.assert_allclose(tensor.reshape(page['vectors'].shape), page['vectors'],
                                   atol=1e-5)
        metadata = get('metadata?run=.&name=' + quoted).decode('utf-8').split('\n')
        assert metadata[0] == 'label\tsentence' and metadata[5] == 'plain\t' + TRICKY[4]
    finally:
        server.terminate()
        server.wait(30)


@pytest.fixture(scope='module')
def driver():
    reason = browser.missing()
    if reason:
        pytest.skip(reason)
    driver = browser.start()
    yield driver
    driver.quit()


def console_errors(driver):
    return [entry for entry in driver.get_log('browser') if entry['level'] == 'SEVERE']


def test_page_draws_every_point_in_chromium_without_console_errors(page, driver):
    browser.open_page(driver, page['html'])
    assert console_errors(driver) == []
    n = len(page['texts'])
    assert driver.execute_script('return explorer.drawnPoints()') == n
    assert driver.execute_script('return window.pwned') is None
    # Labels show as text, in the label table, worst precision@1 first.
    names = driver.execute_script(
        "return [...document.querySelectorAll('#labels td.name')].map(e => e.textContent)")
    assert sorted(name.strip() for name in names) == sorted(LABELS)
    # WebGL really drew: every label's colour is on the screenshot of the map.
    from PIL import Image
    import io
    shot = np.asarray(Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert('RGB'))
    width = driver.execute_script(
        "return document.getElementById('plot').getBoundingClientRect().width")
    shot = shot[:, :int(width)].reshape(-1, 3).astype(int)
    for color in driver.execute_script('return explorer.data.colors'):
        rgb = np.array([int(color[i:i + 2], 16) for i in (1, 3, 5)])
        assert (np.abs(shot - rgb).max(axis=1) < 40).sum() > 20, color


def test_click_lists_the_python_nearest_neighbours(page, driver):
    from selenium.webdriver.common.action_chains import ActionChains
    browser.open_page(driver, page['html'])
    # The point farthest from every other on the map, so the click hits it alone.
    xy = np.array(driver.execute_script('return [explorer.data.x, explorer.data.y]')).T
    gaps = np.linalg.norm(xy[:, None] - xy[None], axis=2)
    np.fill_diagonal(gaps, np.inf)
    target = int(np.argmax(gaps.min(axis=1)))
    at = driver.execute_script('return explorer.pixelOf(arguments[0])', target)
    actions = ActionChains(driver)
    actions.w3c_actions.pointer_action.move_to_location(int(at['x']), int(at['y']))
    actions.perform()
    time.sleep(0.5)
    tooltip = driver.execute_script("return document.getElementById('tooltip').textContent")
    assert tooltip == page['labels'][target] + page['texts'][target]
    actions = ActionChains(driver)
    actions.w3c_actions.pointer_action.click()
    actions.perform()
    time.sleep(0.5)
    assert driver.execute_script('return explorer.selected') == target
    listed = driver.execute_script(
        "return [...document.querySelectorAll('#neighbours .sentence')]"
        ".map(e => e.textContent)")
    assert listed == [page['texts'][j] for j in page['neighbours'][target]]
    # The map rings the neighbours and the point.
    rings = driver.execute_script(
        "return document.getElementById('plot').layout.shapes.map(s => [s.xanchor, s.yanchor])")
    assert sorted(map(tuple, rings)) == sorted(
        [tuple(xy[j]) for j in page['neighbours'][target]] + [tuple(xy[target])] * 2)
    marks = driver.execute_script(
        "return [...document.querySelectorAll('#neighbours .hit, #neighbours .miss')]"
        ".map(e => e.className)")
    labels = np.array(page['labels'])
    assert marks == ['hit' if labels[j] == labels[target] else 'miss'
                     for j in page['neighbours'][target]]
    assert console_errors(driver) == []


def test_search_box_and_label_toggles(page, driver):
    from selenium.webdriver.common.by import By
    browser.open_page(driver, page['html'])
    driver.find_element(By.ID, 'search').send_keys('OF PLAIN')
    time.sleep(0.6)
    expected = [t for t in page['texts'] if 'of plain' in t.lower()]
    shown = driver.execute_script(
        "return [...document.querySelectorAll('#search-results .sentence')]"
        ".map(e => e.textContent)")
    assert shown == expected and len(expected) == 38
    # Selecting a markup sentence from the search list shows it as text.
    driver.execute_script('explorer.search(arguments[0])', 'window.pwned = 1')
    driver.find_element(By.CSS_SELECTOR, '#search-results li').click()
    assert driver.find_element(By.CSS_SELECTOR, '#selected .sentence').text == TRICKY[0]
    assert driver.execute_script('return window.pwned') is None
    box = driver.find_element(By.CSS_SELECTOR, '#labels input[data-label="0"]')
    hidden = driver.execute_script('return explorer.data.summary.count[0]')
    box.click()
    assert driver.execute_script('return explorer.drawnPoints()') == len(page['texts']) - hidden
    driver.find_element(By.ID, 'show-all').click()
    assert driver.execute_script('return explorer.drawnPoints()') == len(page['texts'])
    assert console_errors(driver) == []


def local(url):
    """True for the page itself and what it makes in memory (no network, no other site)."""
    return url.split(':', 1)[0] in ('file', 'data', 'blob', 'about')


def test_no_control_on_the_page_leaves_the_machine(page, driver):
    """Every toolbar button clicked: no request and no window to any other origin (the
    plotly 'Share chart...' button opened cloud.plotly.com in a new window)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    browser.open_page(driver, page['html'])
    browser.requests(driver)
    handles = driver.window_handles
    buttons = driver.find_elements(By.CSS_SELECTOR, '.modebar-btn')
    titles = [b.get_attribute('data-title') for b in buttons]
    assert len(buttons) >= 8 and 'Box Select' in titles and 'Lasso Select' in titles, titles
    assert not [t for t in titles if 'share' in t.lower() or 'cloud' in t.lower()], titles
    assert not driver.find_elements(By.CSS_SELECTOR, 'a[href^="http"], .modebar-btn--logo')
    controls = 'button, a, [role=button], input'

    def visible_controls():
        return [e for e in driver.find_elements(By.CSS_SELECTOR, '#plot ' + controls)
                if e.is_displayed() and 'modebar-btn' not in (e.get_attribute('class') or '')]
    before = visible_controls()
    for title, button in zip(titles, buttons):
        ActionChains(driver).move_to_element(button).click().perform()
        time.sleep(0.3)
        # What a button opens is clicked too, its last control (a dialog's confirm
        # button, as plotly's upload dialog has) first.
        for _ in range(5):
            extra = [e for e in visible_controls() if e not in before]
            if not extra:
                break
            ActionChains(driver).move_to_element(extra[-1]).click().perform()
            time.sleep(0.3)
        assert driver.window_handles == handles, title
        asked, windows = browser.requests(driver)
        assert [u for u in asked if not local(u)] == [] and windows == [], title
    # The upload has nowhere to go even if something called it.
    assert driver.execute_script(
        "var c = document.getElementById('plot')._context;"
        "return [c.showSendToCloud, c.plotlyServerURL, c.displaylogo]") == [False, '', False]
    assert [e for e in console_errors(driver) if 'favicon' not in e['message']] == []
