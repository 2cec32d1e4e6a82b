"""tools/gpu_check.sh from start to end on the CPU: `prepare`, then `dry-run` in the
stand-in for the GPU machine's Python, reports every step passed. The dry run had
drifted (issue 24: its stand-in lacked scikit-learn, which the GPU machine has), so a
red dry run no longer said anything about a GPU run; this keeps it green.

Slow: `make test-slow`. It rewrites build/gpu-check/ as `make gpu-check-prepare` does
and builds build/gpu-check-standin/ once (about a minute from pip's cache). The dry run
itself took about 2 minutes of CPU time, 5 to 7 minutes of wall time on the 2-core
development machine shared with other jobs (load 7 to 8)."""

import os
import re
import subprocess
import sys

import pytest

from bertlib.testing import ROOT

SCRIPT = ROOT / 'tools' / 'gpu_check.sh'
STANDIN_PYTHON = ROOT / 'build' / 'gpu-check-standin' / 'bin' / 'python'


def gpu_check(command, out, timeout):
    # PY: the Python that builds the Chainer wheel (`prepare`); the dry run ignores it.
    env = dict(os.environ, PY=sys.executable, OUT=str(out))
    env.pop('PYTHONPATH', None)
    return subprocess.run(['bash', str(SCRIPT), command], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=str(ROOT))


@pytest.mark.slow
def test_prepare_then_dry_run_passes_every_step(tmp_path, demo_model):
    prepare = gpu_check('prepare', tmp_path, timeout=600)
    assert prepare.returncode == 0, prepare.stdout + prepare.stderr
    assert re.search(r'= \d+ MiB \(limit 64 MiB\)', prepare.stdout), prepare.stdout

    dry_run = gpu_check('dry-run', tmp_path, timeout=2400)
    report = (tmp_path / 'gpu_check.md').read_text()
    assert dry_run.returncode == 0, report + dry_run.stderr[-4000:]
    assert re.search(r"^total: \d+s of \d+s; every step passed$", report, re.M), report
    assert 'FAILED' not in report and 'SKIPPED' not in report, report
    # It ran in the stand-in, with the GPU machine's Python and NumPy line, and Chainer
    # came from the carried wheel.
    assert re.search(r'^Python 3\.12\.', report, re.M), report
    assert re.search(r'^numpy 2\.', report, re.M), report
    assert re.search(r'^chainer 7\.8\.1$', report, re.M), report
    assert re.search(r'^sklearn \d', report, re.M), report

    # The stand-in holds nothing that the GPU machine lacks: a module that is only in
    # requirements*.txt must come from the carried wheels there too, or not be needed.
    for name in ('chainer', 'matplotlib_fontja', 'plotly'):
        probe = subprocess.run([str(STANDIN_PYTHON), '-c', 'import ' + name],
                               capture_output=True, text=True, env={'PATH': os.environ['PATH']})
        assert probe.returncode != 0 and 'ModuleNotFoundError' in probe.stderr, name
