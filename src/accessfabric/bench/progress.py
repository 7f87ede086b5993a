"""Progress of a long ``bench`` run on stderr: elapsed time every few seconds, and what runs.

Suites may call :func:`note` with what they measure now; the ticker started by
``accessfabric bench`` prints ``bench SUITE: 12 s, <note>`` to stderr every
``interval`` seconds (stdout keeps only the report, so ``--json`` stays parseable).
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

_current = ""


def note(what: str) -> None:
    """Say what the suite measures now (shown on the next progress line)."""
    global _current
    _current = what


class ProgressTicker:
    def __init__(self, label: str, *, interval: float = 5.0, stream: TextIO | None = None) -> None:
        self.label = label
        self.interval = interval
        self.stream = stream or sys.stderr
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-progress", daemon=True)
        self.lines = 0

    def __enter__(self) -> ProgressTicker:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            elapsed = time.monotonic() - self._started
            doing = f", {_current}" if _current else ""
            print(f"{self.label}: {elapsed:.0f} s{doing}", file=self.stream, flush=True)
            self.lines += 1
