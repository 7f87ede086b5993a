"""Structured log lines: an event name plus ``key=value`` fields, as text or one JSON object.

Code logs with :func:`log_event`; :func:`configure_logging` picks the format::

    2026-11-27T10:00:00.123Z INFO listening carrier=tcp address=127.0.0.1:7443
    {"ts": "2026-11-27T10:00:00.123Z", "level": "INFO", "event": "listening", "carrier": "tcp", ...}
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import sys
from typing import Any, TextIO

_FIELDS = "fabric_fields"


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log ``event`` with structured ``fields``."""
    if logger.isEnabledFor(level):
        logger.log(level, event, extra={_FIELDS: fields})


def event_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields :func:`log_event` attached to ``record`` (empty for others)."""
    fields: dict[str, Any] = getattr(record, _FIELDS, None) or {}
    return fields


def _timestamp(record: logging.LogRecord) -> str:
    when = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record), record.levelname, record.getMessage()]
        for key, value in event_fields(record).items():
            text = str(value)
            if not text or any(c.isspace() or c in '"=' for c in text):
                text = json.dumps(text)
            parts.append(f"{key}={text}")
        if record.exc_info and record.levelno >= logging.ERROR:
            parts.append("\n" + self.formatException(record.exc_info))
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in event_fields(record).items():
            line[key] = value if isinstance(value, int | float | bool | None) else str(value)
        if record.exc_info and record.levelno >= logging.ERROR:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


def parse_log_level(text: str) -> int:
    """``--log-level``: debug, info, warning, error (any case)."""
    level = logging.getLevelName(text.upper())
    if not isinstance(level, int):
        raise argparse.ArgumentTypeError(f"unknown log level {text!r}")
    return level


def configure_logging(
    *, json_lines: bool, level: int = logging.INFO, stream: TextIO | None = None
) -> None:
    """Send ``accessfabric`` logs to ``stream`` (stderr) in the chosen format."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    root = logging.getLogger("accessfabric")
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
