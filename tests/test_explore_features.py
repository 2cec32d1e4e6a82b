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

from bertlib import browser, explorer, metrics, progress
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
    """Three clustered labels of unique sentences (TRICKY among them), every 13th point in
    the cluster of another label, with an empty line in the text file: returns (features
    path, text path, labels, texts, vectors)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(LABELS), dim)) * 3
    labels, texts, vectors = [], [], []
    for i in range(per_label * len(LABELS)):
        k = i % len(LABELS)
        labels.append(LABELS[k])
        texts.append(TRICKY[i] if i < len(TRICKY) else 'sentence number %d of %s'
                     % (i, LABELS[k]))
        misplaced = i % 13 == 12
        vectors.append(centres[(k + misplaced) % len(LABELS)] + rng.normal(size=dim))
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
    assert len(data['sets']) == 1 and data['sets'][0]['name'] == 'features'
    assert data['sets'][0]['neighbours'] == page['neighbours'].ravel().tolist()
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
    xy = np.array(driver.execute_script(
        'return [explorer.data.sets[0].x, explorer.data.sets[0].y]')).T
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
    hidden = driver.execute_script('return explorer.data.label_count[0]')
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


def drawn_indices(driver):
    """The point indices the label traces hold, visible ones only."""
    return sorted(driver.execute_script(
        "var C = explorer.data.names.length, p = document.getElementById('plot');"
        "return [].concat(...p._fullData.slice(0, C).filter(t => t.visible === true)"
        ".map(t => Array.from(t.customdata || [])))"))


def test_misplaced_points_precision_at_k_and_the_worst_list(page, driver):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    browser.open_page(driver, page['html'])
    labels = np.array(page['labels'], dtype=object)
    nb = page['neighbours']
    precision = (labels[nb] == labels[:, None]).mean(axis=1)
    counts = {name: (labels == name).sum() for name in set(labels)}
    wrong = (labels[nb[:, 0]] != labels) & np.array([counts[lab] > 1 for lab in labels])
    assert 0 < wrong.sum() < len(labels) and precision.min() < 1  # the data has some
    shown = driver.execute_script('var S = explorer.data.sets[0];'
                                  'return [Array.from(S.precision), Array.from(S.wrong)]')
    np.testing.assert_allclose(shown[0], precision)
    assert shown[1] == wrong.astype(int).tolist()
    scores = metrics.retrieval_metrics(page['vectors'], page['labels'])
    assert driver.execute_script(
        "return [...document.querySelectorAll('#sets td')].map(e => e.textContent)") == [
        'features', '%.3f' % scores['precision_at_1'], '%.3f' % scores['map_at_r'],
        str(wrong.sum())]
    summary = driver.find_element(By.ID, 'misplaced').text
    assert summary.startswith('%d of %d points have a nearest neighbour with another label'
                              % (wrong.sum(), len(labels)))
    # One click from the summary: only the misplaced points on the map, the list in view.
    driver.find_element(By.ID, 'show-misplaced').click()
    time.sleep(0.3)
    assert drawn_indices(driver) == np.flatnonzero(wrong).tolist()
    # The worst points, lowest precision@k first, each with its wrong neighbours.
    worst = driver.execute_script(
        "return [...document.querySelectorAll('#worst-list > li')].map(li => "
        "[+li.dataset.index, [...li.querySelectorAll('li.sub .sentence')]"
        ".map(e => e.textContent)])")
    order = sorted((j for j in range(len(labels)) if precision[j] < 1),
                   key=lambda j: (precision[j], -int(wrong[j]), j))[:50]
    assert [j for j, _ in worst] == order
    for j, subs in worst:
        assert subs == [page['texts'][n] for n in nb[j] if labels[n] != labels[j]][:3]
    # Filter by precision@k, colour by the nearest neighbour's label.
    Select(driver.find_element(By.ID, 'filter')).select_by_value('precision')
    time.sleep(0.3)
    assert drawn_indices(driver) == np.flatnonzero(precision <= 0.5).tolist()
    Select(driver.find_element(By.ID, 'filter')).select_by_value('all')
    Select(driver.find_element(By.ID, 'colour-by')).select_by_value('wrong')
    time.sleep(0.3)
    colours = driver.execute_script(
        "var C = explorer.data.names.length, p = document.getElementById('plot'), out = {};"
        "p.data.slice(0, C).forEach(t => t.customdata.forEach("
        "(j, n) => out[j] = t.marker.color[n]));"
        "return out")
    assert len(set(colours[str(j)] for j in np.flatnonzero(wrong))) == 1
    assert {colours[str(j)] for j in np.flatnonzero(~wrong)}.isdisjoint(
        colours[str(j)] for j in np.flatnonzero(wrong))
    legend = driver.find_element(By.ID, 'legend').text
    assert 'nearest neighbour has another label' in legend
    assert console_errors(driver) == []


def test_a_page_with_nothing_misplaced_says_so(tmp_path, driver):
    features, text, labels, _, _ = make_data(tmp_path, per_label=6)
    # Every point on its label's centre, a little apart: all neighbours share the label.
    centres = {label: np.eye(12)[k] * 100 for k, label in enumerate(LABELS)}
    rows = [centres[label] + 0.01 * np.eye(12)[j % 12] for j, label in enumerate(labels)]
    features.write_text(''.join('%s\t%s\n' % (label, '\t'.join('%.4f' % v for v in row))
                                for label, row in zip(labels, rows)), encoding='utf-8')
    html = tmp_path / 'page.html'
    result = run('--input', features, '--text', text, '--output', html, '--method', 'pca',
                 '--neighbours', 3)
    assert result.returncode == 0, result.stderr
    from selenium.webdriver.common.by import By
    browser.open_page(driver, html)
    assert driver.find_element(By.ID, 'worst-list').text == \
        "None: every point's 3 nearest neighbours share its label."
    assert not driver.find_element(By.ID, 'show-misplaced').is_enabled()
    assert driver.find_element(By.ID, 'misplaced').text.startswith('0 of 18 points')


def drag(driver, start, end):
    """A real mouse drag between two page points."""
    from selenium.webdriver.common.action_chains import ActionChains
    actions = ActionChains(driver)
    pointer = actions.w3c_actions.pointer_action
    pointer.move_to_location(*start)
    pointer.pointer_down()
    for f in (0.3, 0.6, 1.0):
        pointer.move_to_location(int(start[0] + f * (end[0] - start[0])),
                                 int(start[1] + f * (end[1] - start[1])))
    pointer.pointer_up()
    actions.perform()


def test_box_selection_lists_the_sentences_and_downloads_them_as_tsv(page, driver, tmp_path):
    from selenium.webdriver.common.by import By
    browser.open_page(driver, page['html'])
    driver.execute_cdp_cmd('Browser.setDownloadBehavior',
                           {'behavior': 'allow', 'downloadPath': str(tmp_path)})
    browser.requests(driver)
    driver.find_element(By.CSS_SELECTOR, '.modebar-btn[data-title="Box Select"]').click()
    # A box over the left half of the map, in the plot's pixels.
    box = driver.execute_script(
        "var p = document.getElementById('plot'), L = p._fullLayout,"
        " r = p.getBoundingClientRect();"
        "return [r.left + L._size.l, r.top + L._size.t, L._size.w, L._size.h]")
    left, top, width, height = box
    drag(driver, (int(left + 2), int(top + 2)), (int(left + width / 2), int(top + height - 2)))
    time.sleep(0.5)
    picked = driver.execute_script('return explorer.picked()')
    at = np.array([[p['x'], p['y']] for p in driver.execute_script(
        'return explorer.data.text.map((t, j) => explorer.pixelOf(j))')])
    inside = np.flatnonzero((at[:, 0] > left + 2) & (at[:, 0] < left + width / 2))
    assert 0 < len(picked) < len(page['texts']) and picked == inside.tolist()
    listed = driver.execute_script(
        "return [...document.querySelectorAll('#selection-list .sentence')]"
        ".map(e => e.textContent)")
    assert listed == [page['texts'][j] for j in picked]
    driver.find_element(By.ID, 'download').click()
    deadline = time.time() + 10
    while not list(tmp_path.glob('*.tsv')) and time.time() < deadline:
        time.sleep(0.1)
    written = list(tmp_path.glob('*.tsv'))
    assert [f.name for f in written] == ['_i_title_i_-selection.tsv']
    rows = written[0].read_text(encoding='utf-8').split('\n')
    assert rows[0] == 'index\tlabel\tsentence\tneighbours' and rows[-1] == ''
    # A run of tabs and line breaks inside a sentence becomes one space.
    expected = ['%d\t%s\t%s\t%s' % (j, page['labels'][j],
                                    re.sub('[\t\r\n\u2028\u2029]+', ' ', page['texts'][j]),
                                    ' '.join(map(str, page['neighbours'][j]))) for j in picked]
    assert rows[1:-1] == expected
    asked, windows = browser.requests(driver)
    assert [u for u in asked if not local(u)] == [] and windows == []
    # Escape clears the selection.
    driver.find_element(By.TAG_NAME, 'body').send_keys('\ue00c')
    assert driver.execute_script('return explorer.picked()') == []
    assert console_errors(driver) == []


def hex_rgb(color):
    return np.array([int(color[i:i + 2], 16) for i in (1, 3, 5)])


def test_legend_marks_outside_the_palette_and_label_toggles(page, driver):
    from selenium.webdriver.common.by import By
    browser.open_page(driver, page['html'])
    data = driver.execute_script(
        "var D = explorer.data, S = D.sets[0]; return {names: D.names, colors: D.colors, "
        "label: D.label, k: D.k, count: D.count, x: S.x, y: S.y, similarity: S.similarity}")
    legend = driver.find_element(By.ID, 'legend').text.split('\n')
    assert legend[:len(LABELS)] == data['names'] and 'search match' in legend
    # The largest label's point nearest to the others' (so its rings lie on both).
    target = int(np.flatnonzero(np.array(data['label']) == 0)[0])
    driver.execute_script('explorer.select(arguments[0]); explorer.search("sentence")', target)
    time.sleep(0.3)
    marks = driver.execute_script(
        "var p = document.getElementById('plot');"
        "return [p.layout.shapes.map(s => s.line.color),"
        " p.data[explorer.data.names.length].marker.color]")
    palette = [hex_rgb(c) for c in data['colors']] + [hex_rgb(c) for c in (
        '#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2',
        '#7f7f7f', '#bcbd22', '#17becf')]
    for color in marks[0] + [marks[1]]:
        assert min(np.abs(hex_rgb(color) - p).max() for p in palette) > 60, color
    ranges = ("var L = document.getElementById('plot').layout;"
              "return [L.xaxis.range, L.yaxis.range]")
    before = driver.execute_script(ranges)
    driver.find_element(By.CSS_SELECTOR, '#labels input[data-label="0"]').click()
    time.sleep(0.3)
    assert driver.execute_script(ranges) == before
    hidden = {j for j, c in enumerate(data['label']) if c == 0}
    xy = {(data['x'][j], data['y'][j]) for j in hidden}
    shapes = driver.execute_script("return document.getElementById('plot').layout.shapes"
                                   ".map(s => [s.xanchor, s.yanchor])")
    visible_neighbours = [j for j in page['neighbours'][target] if j not in hidden]
    assert len(shapes) == len(visible_neighbours) and not xy & set(map(tuple, shapes))
    searched = driver.execute_script(
        "return document.getElementById('plot').data[explorer.data.names.length].customdata")
    assert searched and not hidden & set(searched)
    driver.find_element(By.ID, 'show-all').click()
    time.sleep(0.3)
    assert len(driver.execute_script("return document.getElementById('plot').layout.shapes")) \
        == len(page['neighbours'][0]) + 2
    # The similarity scale is explained with the file's own range.
    first = [data['similarity'][j * data['k']] for j in range(data['count'])]
    note = driver.find_element(By.ID, 'similarity-note').text
    assert 'from %.2f to %.2f' % (min(first), max(first)) in note and 'centred' in note
    assert console_errors(driver) == []


def test_hover_box_stays_inside_the_window(page, driver):
    browser.open_page(driver, page['html'])
    longest = max(range(len(page['texts'])), key=lambda j: len(page['texts'][j]))
    for at in ('[0, 0]', '[innerWidth - 1, innerHeight - 1]', '[innerWidth - 1, 0]',
               '[0, innerHeight - 1]'):
        box = driver.execute_script(
            "var at = %s; explorer.showTooltip(arguments[0], at[0], at[1]);"
            "var r = document.getElementById('tooltip').getBoundingClientRect();"
            "return [r.left, r.top, r.right, r.bottom, innerWidth, innerHeight]" % at, longest)
        assert box[0] >= 0 and box[1] >= 0 and box[2] <= box[4] and box[3] <= box[5], (at, box)


def test_keyboard_reaches_the_lists_enter_selects_escape_clears(page, driver):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    browser.open_page(driver, page['html'])
    driver.find_element(By.ID, 'search').send_keys('number 7 of')
    time.sleep(0.6)
    assert driver.execute_script('return explorer.search("number 7 of")') == [7]
    active = ("var e = document.activeElement, list = e.closest('ul, #neighbours');"
              "return [list.id, +e.dataset.index]")
    driver.switch_to.active_element.send_keys(Keys.TAB)
    assert driver.execute_script(active) == ['search-results', 7]
    driver.switch_to.active_element.send_keys(Keys.ENTER)
    assert driver.execute_script('return explorer.selected') == 7
    first = int(page['neighbours'][7][0])
    assert driver.execute_script(active) == ['neighbours', first]
    driver.switch_to.active_element.send_keys(Keys.TAB)
    second = int(page['neighbours'][7][1])
    assert driver.execute_script(active) == ['neighbours', second]
    driver.switch_to.active_element.send_keys(Keys.ENTER)
    assert driver.execute_script('return explorer.selected') == second
    driver.switch_to.active_element.send_keys(Keys.ESCAPE)
    assert driver.execute_script(
        "return [explorer.selected, document.getElementById('plot').layout.shapes.length,"
        " document.getElementById('search').value,"
        " document.querySelectorAll('#neighbours li, #search-results li').length]") \
        == [-1, 0, '', 0]
    assert console_errors(driver) == []


def test_without_webgl_the_page_draws_svg_and_offers_no_link(page):
    reason = browser.missing()
    if reason:
        pytest.skip(reason)
    from selenium.webdriver.common.by import By
    driver = browser.start(['--disable-webgl', '--disable-3d-apis'])
    try:
        browser.open_page(driver, page['html'])
        assert driver.execute_script(
            "return document.getElementById('plot')._fullData[0].type") == 'scatter'
        assert driver.execute_script('return explorer.drawnPoints()') == len(page['texts'])
        assert 'WebGL is off' in driver.find_element(By.ID, 'about').text
        assert not driver.find_elements(By.CSS_SELECTOR, '.no-webgl')
    finally:
        driver.quit()


def test_long_steps_log_that_they_are_still_running(caplog):
    caplog.set_level('INFO', logger='bertlib.progress')
    with progress.still_running('t-SNE of 9 points', every=0.05):
        time.sleep(0.32)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == 't-SNE of 9 points ...'
    assert 4 <= len(lines) <= 7 and all(re.fullmatch(r't-SNE of 9 points: \d+ s so far', m)
                                        for m in lines[1:])
    caplog.clear()
    with progress.still_running('quick', every=10):
        pass
    assert [r.getMessage() for r in caplog.records] == ['quick ...']


@pytest.fixture(scope='module')
def sets_page(tmp_path_factory):
    """One page of two feature sets of the same sentences (t-SNE maps, 4 neighbours)."""
    folder = tmp_path_factory.mktemp('sets')
    paths, vectors = [], []
    for seed, name in ((0, 'dml'), (3, 'pre-trained')):
        (folder / name).mkdir()
        features, text, labels, texts, x = make_data(folder / name, seed=seed)
        paths.append(features.rename(folder / (name + '.txt')))
        vectors.append(x)
    html = folder / 'page.html'
    result = run('--input', *paths, '--text', text, '--output', html, '--neighbours', 4)
    assert result.returncode == 0, result.stderr
    assert 'dml: t-SNE of 120 points ...' in result.stderr
    return {'html': html, 'paths': paths, 'text': text, 'labels': labels, 'texts': texts,
            'neighbours': [metrics.nearest_neighbours(x, 4)[0] for x in vectors]}


def test_several_feature_sets_side_by_side(sets_page, driver):
    from selenium.webdriver.common.by import By
    data = json.loads(page_json(sets_page['html'].read_text(encoding='utf-8')))
    assert [s['name'] for s in data['sets']] == ['dml', 'pre-trained']
    assert data['title'] == 'dml / pre-trained'
    for s, nb in zip(data['sets'], sets_page['neighbours']):
        assert s['neighbours'] == nb.ravel().tolist() and s['method'] == 't-SNE'
    assert data['sets'][0]['x'] != data['sets'][1]['x']
    browser.open_page(driver, sets_page['html'])
    target = 12                       # a misplaced point of the dml set
    driver.execute_script('explorer.select(arguments[0])', target)
    columns = driver.execute_script(
        "return [...document.querySelectorAll('#neighbours .column')].map(c => "
        "[c.querySelector('h3').textContent, [...c.querySelectorAll('.sentence')]"
        ".map(e => e.textContent)])")
    assert columns == [[name, [sets_page['texts'][j] for j in nb[target]]]
                       for name, nb in zip(['dml', 'pre-trained'], sets_page['neighbours'])]
    labels = np.array(sets_page['labels'], dtype=object)
    for set_index, nb in enumerate(sets_page['neighbours']):
        driver.find_elements(By.CSS_SELECTOR, '#sets input[type=radio]')[set_index].click()
        time.sleep(0.3)
        xs = driver.execute_script(
            "var p = document.getElementById('plot'), out = {};"
            "p.data.slice(0, explorer.data.names.length).forEach(t => "
            "t.customdata.forEach((j, n) => out[j] = t.x[n])); return out")
        assert [xs[str(j)] for j in range(len(labels))] == data['sets'][set_index]['x']
        rings = driver.execute_script(
            "return document.getElementById('plot').layout.shapes.map(s => s.xanchor)")
        assert sorted(rings) == sorted([data['sets'][set_index]['x'][j] for j in nb[target]]
                                       + [data['sets'][set_index]['x'][target]] * 2)
        wrong = (labels[nb[:, 0]] != labels).sum()
        assert driver.find_element(By.ID, 'misplaced').text.startswith(
            '%d of %d points of %s' % (wrong, len(labels), data['sets'][set_index]['name']))
    tsv = driver.execute_script('return explorer.selectionTsv()')
    assert tsv == 'index\tlabel\tsentence\tneighbours dml\tneighbours pre-trained\n'
    assert console_errors(driver) == []


def test_several_feature_sets_must_hold_the_same_sentences(sets_page, tmp_path):
    dml, other = sets_page['paths']
    short = tmp_path / 'short.txt'
    short.write_text(''.join(dml.read_text(encoding='utf-8').splitlines(True)[:-1]),
                     encoding='utf-8')
    twin = tmp_path / 'dml.txt'
    twin.write_text(other.read_text(encoding='utf-8'), encoding='utf-8')
    for args, message in (
            ([dml, short], '%s has 119 feature rows' % short),
            ([dml, twin], "same name 'dml'"),
            ([dml, other, '--projector', tmp_path / 'p'], '--projector takes one --input'),
            ([dml, other, dml, other], 'at most 3 feature sets')):
        result = run('--input', *args, '--text', sets_page['text'],
                     '--output', tmp_path / 'p.html')
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / 'p.html').exists()


def test_legend_of_many_labels_names_twelve_and_counts_the_rest(tmp_path, driver):
    from selenium.webdriver.common.by import By
    rng = np.random.default_rng(4)
    labels = ['label %02d' % (j % 15) for j in range(60)]
    vectors = rng.normal(size=(60, 6))
    scores, neighbours, sims = metrics.retrieval_and_neighbours(vectors, labels, 3)
    page_set = {'name': 'many', 'method': 'pca', 'xy': vectors[:, :2],
                'neighbours': neighbours, 'similarities': sims,
                'summary': explorer.summarise(labels, scores, neighbours)}
    data = explorer.page_data(labels, ['s %d' % j for j in range(60)], [page_set], 'many')
    explorer.write_page(str(tmp_path / 'many.html'), data)
    browser.open_page(driver, tmp_path / 'many.html')
    rows = driver.find_element(By.ID, 'legend').text.split('\n')
    assert rows[:12] == data['names'][:12]
    assert rows[12] == '+ 3 more labels: see the label table'
    assert console_errors(driver) == []
