#!/usr/bin/env python
"""Page size, build time and time to first paint of explore_features.py's page.

For each size N it generates N seeded 384-dimensional features (the demo model's width)
in 10 overlapping Gaussian classes with English-like sentences of 8 to 30 words (about
rt-polarity's lengths), runs explore_features.py as a whole process (reading, neighbours,
metrics, the map, writing), and prints the page size and the build time. Where headless
Chromium is installed (`make browser`) it then opens the page and prints the time from
navigation start until plotly.js has drawn the map (explorer.paintedAt), the median of
--loads fresh loads, then the time a click's neighbour list, a search for 'the' and
colouring every point by its precision@k take until the next paint.

    python bench/explorer_speed.py [--sizes 5000 50000] [--method tsne] [--keep DIR]
"""

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]

WORDS = ('the film movie story plot actors cast director script scene moments audience '
         'characters drama comedy thriller funny dull brilliant tedious charming clever '
         'predictable moving heartfelt flat sharp messy warm cold long short slow fast '
         'performance humour dialogue ending twist music visual style pace heart mind '
         'is was are feels seems never always rarely often too very quite rather a an '
         'and but or yet so of in on with without about into through , .').split()


def generate(folder, n, dims=384, classes=10, seed=0):
    """Writes features.txt and text.txt with n rows; returns their paths."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=n)
    centres = rng.normal(size=(classes, dims))
    vectors = centres[labels] + 1.5 * rng.normal(size=(n, dims))
    lengths = rng.integers(8, 31, size=n)
    features, text = folder / ('features-%d.txt' % n), folder / ('text-%d.txt' % n)
    with open(features, 'w') as f, open(text, 'w') as t:
        for i in range(n):
            label = 'class-%d' % labels[i]
            words = ' '.join(rng.choice(WORDS, size=lengths[i]))
            f.write(label + '\t' + '\t'.join('%.6f' % v for v in vectors[i]) + '\n')
            t.write('%s\t%d: %s\n' % (label, i, words))
    return features, text


def build(features, text, page, method):
    """Runs explore_features.py; returns its wall time in seconds."""
    start = time.time()
    result = subprocess.run(
        [sys.executable, str(ROOT / 'explore_features.py'), '--input', str(features),
         '--text', str(text), '--output', str(page), '--method', method],
        capture_output=True, text=True, cwd=str(ROOT))
    if result.returncode:
        sys.exit(result.stderr)
    return time.time() - start


# Milliseconds of a click's work (neighbour list and rings redrawn), of a search for a
# common word (list and rings of every match) and of colouring by precision@k (every
# label trace rebuilt with a colour per point), each until the browser has painted again.
INTERACTION = """
const done = arguments[arguments.length - 1];
const frame = () => new Promise(r => requestAnimationFrame(() => setTimeout(r, 0)));
let t = performance.now();
explorer.select(Math.floor(explorer.data.count / 2));
await frame();
const click = performance.now() - t;
t = performance.now();
const found = explorer.search('the').length;
await frame();
const search = performance.now() - t;
const colour = document.getElementById('colour-by');
t = performance.now();
colour.value = 'precision';
colour.dispatchEvent(new Event('change'));
await frame();
done([click, search, performance.now() - t, found]);
"""


def browser_times(page, loads):
    """Median milliseconds to the drawn map over `loads` fresh browser sessions, and a
    click's and a search's milliseconds on the last; None without a browser."""
    from bertlib import browser
    if browser.missing():
        print('no browser: %s' % browser.missing(), file=sys.stderr)
        return None
    times = []
    for _ in range(loads):
        driver = browser.start()
        try:
            times.append(browser.open_page(driver, page, timeout=600))
            assert driver.execute_script('return explorer.drawnPoints()') == \
                driver.execute_script('return explorer.data.count')
            driver.set_script_timeout(120)
            click, search, colouring, found = driver.execute_async_script(
                '(async () => {%s})()' % INTERACTION)
        finally:
            driver.quit()
    return float(np.median(times)), click, search, colouring, found


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--sizes', type=int, nargs='+', default=[5000, 50000])
    parser.add_argument('--method', choices=('tsne', 'pca'), default='tsne')
    parser.add_argument('--loads', type=int, default=3)
    parser.add_argument('--keep', default=None, help='keep the files in this folder')
    args = parser.parse_args()
    folder = pathlib.Path(args.keep or tempfile.mkdtemp(prefix='explorer-speed-'))
    folder.mkdir(parents=True, exist_ok=True)
    print('| points | map | page size | build time | first paint | click | search | colour by P@k |')
    print('|---|---|---|---|---|---|---|---|')
    for n in args.sizes:
        features, text = generate(folder, n)
        page = folder / ('page-%d.html' % n)
        seconds = build(features, text, page, args.method)
        times = browser_times(page, args.loads)
        shown = ['-'] * 4 if times is None else [
            '%.1f s' % (times[0] / 1000.0), '%.0f ms' % times[1],
            '%.0f ms (%d matches)' % (times[2], times[4]), '%.0f ms' % times[3]]
        print('| %d | %s | %.1f MB | %.1f s | %s |'
              % (n, args.method, os.path.getsize(page) / 1e6, seconds, ' | '.join(shown)),
              flush=True)


if __name__ == '__main__':
    main()
