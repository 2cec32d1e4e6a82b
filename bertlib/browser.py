"""Headless Chromium driven by Selenium, for the tests (and the benchmark) of the pages
explore_features.py writes. Debian's `chromium` and `chromium-driver` packages
(`make browser` installs them) and the selenium package (requirements-test.txt)."""

import os
import shutil

CHROMIUM = ('chromium', 'chromium-browser', 'google-chrome')
DRIVER = ('chromedriver', 'chromium-driver')
# Headless Chromium has no GPU: WebGL runs on SwiftShader, which recent versions start
# only when asked to.
FLAGS = ('--headless=new', '--no-sandbox', '--disable-dev-shm-usage',
         '--use-angle=swiftshader', '--enable-unsafe-swiftshader', '--window-size=1400,900',
         '--force-device-scale-factor=1')


def missing():
    """Why the browser tests cannot run here, or None when they can."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return 'selenium is not installed (pip install -r requirements-test.txt)'
    if not _which(CHROMIUM) or not _which(DRIVER):
        return ('headless Chromium is not installed: run `make browser` (as root on '
                'Debian: apt-get install chromium chromium-driver)')
    return None


def start(extra_flags=()):
    """A headless Chromium WebDriver that keeps the page's console log and its DevTools
    events (every request and new window: see `requests`), with `extra_flags`."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    for flag in FLAGS + tuple(extra_flags):
        options.add_argument(flag)
    options.binary_location = _which(CHROMIUM)
    options.set_capability('goog:loggingPrefs', {'browser': 'ALL', 'performance': 'ALL'})
    return webdriver.Chrome(options=options, service=Service(_which(DRIVER)))


def requests(driver):
    """The URLs the browser requested, or opened a window on, since the last call:
    (request URLs, window URLs), from the DevTools events of the performance log."""
    import json
    asked, windows = [], []
    for entry in driver.get_log('performance'):
        message = json.loads(entry['message'])['message']
        if message['method'] == 'Network.requestWillBeSent':
            asked.append(message['params']['request']['url'])
        elif message['method'] in ('Page.windowOpen', 'Target.targetCreated'):
            params = message['params']
            windows.append(params.get('url') or params.get('targetInfo', {}).get('url'))
    return asked, windows


def open_page(driver, path, timeout=60.0):
    """Loads the page and waits until its plot is drawn; returns explorer.paintedAt, the
    milliseconds from navigation start to the drawn plot."""
    import time
    driver.get('file://' + os.path.abspath(path))
    deadline = time.time() + timeout
    while time.time() < deadline:
        if driver.execute_script('return !!(window.explorer && window.explorer.ready)'):
            return driver.execute_script('return window.explorer.paintedAt')
        time.sleep(0.05)
    raise AssertionError('%s: the plot was not drawn within %g s' % (path, timeout))


def _which(names):
    for name in names:
        found = shutil.which(name) or shutil.which(name, path='/usr/lib/chromium')
        if found:
            return found
    return None
