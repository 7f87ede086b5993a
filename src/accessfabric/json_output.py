"""``--json`` output of the commands: one JSON document on stdout, timestamps in RFC 3339 UTC."""

from __future__ import annotations

import datetime
import json
from typing import Any


def rfc3339(epoch: float | None = None) -> str:
    """``2026-12-07T01:48:27.123Z`` (UTC, milliseconds) for ``epoch`` (default: now)."""
    when = (
        datetime.datetime.now(datetime.UTC)
        if epoch is None
        else datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    )
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def print_json(document: dict[str, Any]) -> None:
    """Print ``document`` with a ``time`` field (when it was printed) added."""
    print(json.dumps({**document, "time": rfc3339()}, indent=2))


def print_answer(as_json: bool, document: dict[str, Any], text: str) -> None:
    """A command's answer: ``document`` as :func:`print_json` prints it under ``--json``,
    else ``text`` (one line, or a table)."""
    if as_json:
        print_json(document)
    else:
        print(text)
