"""Atomic writes of secret files that are never readable by anyone but the owner (mode 0600)."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

PRIVATE_FILE_MODE = 0o600


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_private_file(
    path: str | os.PathLike[str], data: bytes, *, overwrite: bool, durable: bool = True
) -> None:
    """Write ``data`` to ``path`` with mode 0600, atomically.

    The bytes go to a temporary file in the same directory, created with
    ``os.open(..., O_CREAT | O_EXCL, 0o600)`` so it is never group- or world-readable, and
    are fsynced before the file takes its final name.  Without ``overwrite`` the final step
    is a hard link, which fails with :class:`FileExistsError` if ``path`` exists (no
    check-then-act race); with ``overwrite`` it is ``os.replace``.  Readers see either the
    old file or the complete new one.  ``durable=False`` skips both fsyncs (a load tool's
    throw-away files: ``sim fleet`` provisions a thousand devices' TLS files).
    """
    target = Path(path)
    directory = target.parent
    temporary = directory / f".{target.name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    try:
        try:
            os.fchmod(fd, PRIVATE_FILE_MODE)  # umask can only remove bits; be explicit anyway
            _write_all(fd, data, durable=durable)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(temporary, target)
        else:
            try:
                os.link(temporary, target)
            except FileExistsError:
                raise
            except OSError:
                # The file system has no hard links: fall back to an exclusive create.
                _write_exclusive(target, data, durable=durable)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    if durable:
        _fsync_directory(directory)


def _write_exclusive(target: Path, data: bytes, *, durable: bool) -> None:
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    try:
        _write_all(fd, data, durable=durable)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes, *, durable: bool) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
    if durable:
        os.fsync(fd)
