"""Headless Chromium for the tests that check pages in a real browser (the demo report, the slide viewer).

No driver: Chromium runs the page with a virtual-time budget (timers and loads finish as fast as they can, then the
page is frozen) and writes the resulting DOM (--dump-dom) or a screenshot. A page that must be interacted with gets a
probe script appended by the test, which acts through the page's own controls and writes what it saw into the DOM.
"""

import shutil
import subprocess
import tempfile

import pytest


def chromium_path():
    return shutil.which('chromium') or shutil.which('chromium-browser')


def chromium(*args, timeout=180, budget_ms=10000):
    """Run headless Chromium with `args` (e.g. '--dump-dom', URL) in a fresh profile; its stdout. Skips the test
    when Chromium is not installed."""
    exe = chromium_path()
    if exe is None:
        pytest.skip('chromium is not installed (.ci/run installs it with apt-get)')
    with tempfile.TemporaryDirectory(prefix='histosynth-chromium-') as profile:
        proc = subprocess.run([exe, '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
                               '--disable-component-update', '--no-first-run', f'--user-data-dir={profile}',
                               '--hide-scrollbars', '--force-device-scale-factor=1',
                               f'--virtual-time-budget={budget_ms}', *args],
                              capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout
