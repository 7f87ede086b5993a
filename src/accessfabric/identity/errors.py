"""The error raised when a node identity file cannot be used."""

from __future__ import annotations

import os


class IdentityError(Exception):
    """A key or certificate file is missing, unreadable, malformed or unsafe.

    ``str(error)`` is the user-facing message: ``"<path>: <reason>"``.  It never carries a
    traceback or message text from the crypto library.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")
