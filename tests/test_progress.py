"""Progress bars: live in a terminal, a few whole lines in a log file."""

from __future__ import annotations

import io

from kospeech.progress import log_interval, progress_bar


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_file_gets_whole_lines_not_carriage_returns(monkeypatch):
    monkeypatch.setenv("KOSPEECH_LOG_INTERVAL", "3600")
    out = io.StringIO()
    with progress_bar(total=5000, desc="epoch 1", unit="batch", file=out) as bar:
        for i in range(5000):
            bar.update(1)
            bar.set_postfix(loss=f"{1.0 / (i + 1):.3f}")  # the trainer's postfix must not force redraws
    text = out.getvalue()
    assert "\r" not in text
    lines = [line for line in text.splitlines() if line.strip()]
    # the first draw and the closing one; not one per update
    assert 1 <= len(lines) <= 3, lines
    assert "5000/5000" in lines[-1]


def test_terminal_keeps_the_live_bar():
    out = _Tty()
    with progress_bar(total=3, desc="x", file=out) as bar:
        bar.update(3)
    assert "\r" in out.getvalue()


def test_interval_from_environment(monkeypatch):
    monkeypatch.setenv("KOSPEECH_LOG_INTERVAL", "5")
    assert log_interval() == 5.0
    monkeypatch.setenv("KOSPEECH_LOG_INTERVAL", "soon")
    assert log_interval() == 30.0
