"""Progress bars that suit both a terminal and a log file.

A tqdm bar redraws itself up to ten times a second with carriage returns. In a terminal that is
what a user wants; in a recipe's log file (stderr redirected) it writes thousands of partial
lines that bury the warnings. When stderr is not a terminal the bar redraws at most once every
``KOSPEECH_LOG_INTERVAL`` seconds (default 30) and ends each redraw with a newline, so the log
reads as a short timeline.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from tqdm import tqdm

DEFAULT_LOG_INTERVAL = 30.0


class _LogBar(tqdm):
    """A bar for log files: a new postfix waits for the next timed redraw instead of forcing one."""

    def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **kwargs: Any) -> None:
        super().set_postfix(ordered_dict, refresh=False, **kwargs)

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        super().set_postfix_str(s, refresh=False)


class _LineStream:
    """Wraps a stream so that each tqdm redraw ('\\r' + text) becomes one line."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        text = text.replace("\r", "")
        if not text.strip():
            return len(text)
        return self._stream.write(text if text.endswith("\n") else text + "\n")

    def flush(self) -> None:
        self._stream.flush()


def log_interval() -> float:
    """Seconds between redraws when the output is not a terminal (``KOSPEECH_LOG_INTERVAL``)."""
    raw = os.environ.get("KOSPEECH_LOG_INTERVAL", "")
    try:
        return max(0.0, float(raw)) if raw else DEFAULT_LOG_INTERVAL
    except ValueError:
        return DEFAULT_LOG_INTERVAL


def progress_bar(**kwargs: Any) -> Any:
    """A ``tqdm`` bar: live in a terminal, one line per interval in a log file.

    Takes tqdm's keyword arguments (``total``, ``desc``, ``unit``, ``initial``, ``disable``...).
    """
    stream = kwargs.pop("file", None) or sys.stderr
    interactive = bool(getattr(stream, "isatty", lambda: False)())
    if interactive:
        kwargs.setdefault("dynamic_ncols", True)
        return tqdm(file=stream, **kwargs)
    interval = log_interval()
    kwargs.setdefault("ncols", 100)
    return _LogBar(file=_LineStream(stream), mininterval=interval, maxinterval=max(interval, 10.0), **kwargs)
