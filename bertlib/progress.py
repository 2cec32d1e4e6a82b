"""A progress line on stderr for the long loops (extraction, training epochs).

Its own module so that the feature pipeline and the training loop can report progress
without importing the command-line layer (`bertlib.flags`, `bertlib.process`) that sits
above them.
"""

import contextlib
import logging
import sys
import threading
import time

logger = logging.getLogger(__name__)


class Progress(object):
    """A progress line on stderr: redrawn in place on a terminal, a log line every
    `log_every` seconds otherwise (so a redirected log stays readable)."""

    def __init__(self, total=None, unit='lines', what='extracting', log_every=30.0):
        self.total = total
        self.unit = unit
        self.what = what
        self.done = 0
        self.start = time.time()
        self.last = 0.0
        self.tty = sys.stderr.isatty()
        self.log_every = log_every

    def __call__(self, n=1):
        self.done += n
        now = time.time()
        if now - self.last < (0.5 if self.tty else self.log_every):
            return
        self.last = now
        self._show(now)

    def _show(self, now, end='\r'):
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        text = '%s: %d' % (self.what, self.done)
        if self.total:
            text += '/%d %s (%3.0f%%)' % (self.total, self.unit, 100.0 * self.done / self.total)
            if rate > 0:
                text += ' eta %s' % _clock((self.total - self.done) / rate)
        else:
            text += ' ' + self.unit
        text += ', %.1f %s/s' % (rate, self.unit)
        if self.tty:
            sys.stderr.write(text + '   ' + end)
            sys.stderr.flush()
        else:
            logger.info(text, stacklevel=3)  # name the caller, not _show

    def close(self):
        if self.tty and self.done:
            self._show(time.time(), end='\n')


def _clock(seconds):
    seconds = int(seconds)
    return '%d:%02d:%02d' % (seconds // 3600, seconds // 60 % 60, seconds % 60)


@contextlib.contextmanager
def still_running(what, every=15.0):
    """Logs '<what>: N s so far' every `every` seconds while the block runs.

    Why: the long steps (t-SNE: 69 s for 10,000 points on 2 cores; the neighbours of
    50,000 points) give no sign of life of their own, and scikit-learn's progress goes to
    stdout in its own format.
    """
    start = time.time()
    logger.info('%s ...', what)
    finished = threading.Event()

    def beat():
        while not finished.wait(every):
            logger.info('%s: %.0f s so far', what, time.time() - start)
    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        finished.set()
        thread.join()
