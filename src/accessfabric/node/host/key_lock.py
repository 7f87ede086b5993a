"""One process per node key: an exclusive ``flock`` on ``<key file>.lock`` held while the node runs.

Two processes with one key would both answer as the same node id, and the
second would take over the first one's admin socket.  The lock file keeps the
holder's pid so the refusal can name it; the kernel drops the lock when the
process exits, however it exits, so a stale file never blocks a restart.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path


class KeyInUseError(Exception):
    """Another live process runs a node with this key."""

    def __init__(self, key_path: Path, node_id: str, pid: int | None, lock_path: Path) -> None:
        holder = f"pid {pid}" if pid is not None else "another process"
        super().__init__(
            f"node key {key_path} ({node_id}) is in use by {holder} (lock {lock_path}); "
            "stop that node first, or give this one its own key"
        )
        self.pid = pid


class KeyLock:
    """Holds the lock of one key file until :meth:`release` (or the process ends)."""

    def __init__(self, key_path: Path, node_id: str) -> None:
        self.path = Path(f"{key_path}.lock")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise KeyInUseError(key_path, node_id, pid, self.path) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip())
    except (OSError, ValueError):
        return None
