"""Progress off a terminal is a few plain lines, not thousands of bar redraws."""

from __future__ import annotations

import io
import sys

from seglab import progress


def test_bars_update_rarely_and_plainly_when_not_on_a_terminal(monkeypatch):
    log = io.StringIO()  # like `> run.log` or a CI log: not a TTY
    monkeypatch.setattr(sys, "stderr", log)
    assert not progress.on_terminal()
    bar = progress.bar(total=100_000, desc="cutout", unit="img")
    bar.fp = log
    for _ in range(100_000):
        bar.update(1)
    bar.close()
    lines = [line for line in log.getvalue().replace("\r", "\n").splitlines() if line.strip()]
    assert bar.mininterval == progress.LOG_SECONDS and len(lines) <= 3, len(lines)
    assert all(ord(c) < 128 for c in log.getvalue())  # no block characters in a log file
    assert progress.lightning_refresh_rate(400) == 80


def test_bars_stay_live_on_a_terminal(monkeypatch):
    monkeypatch.setattr(progress, "on_terminal", lambda: True)
    assert progress.bar(total=10).mininterval < 1 and progress.lightning_refresh_rate(400) == 1
