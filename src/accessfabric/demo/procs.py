"""Child processes of the demo: started in their own session, all stopped at the end."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

COMMAND = [sys.executable, "-m", "accessfabric"]


class DemoFailed(Exception):
    """A step of the demo could not be done; the message says which and why."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("ACCESSFABRIC_")}
    out["PYTHONUNBUFFERED"] = "1"
    if path := out.get("PYTHONPATH"):  # absolute: some children run in another directory
        out["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) for p in path.split(os.pathsep))
    return out


class Processes:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.children: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str], cwd: Path | None = None) -> subprocess.Popen[bytes]:
        log = (self.work / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=env(), start_new_session=True, cwd=cwd
        )
        self.children[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.work / f"{name}.log").read_text(errors="replace")

    def tail(self, name: str, lines: int = 25) -> str:
        """The end of a child's log, indented, for an error message."""
        text = self.log(name).splitlines()[-lines:]
        return "\n".join(f"    {name}| {line}" for line in text)

    def stop(self, name: str, timeout: float = 5.0) -> None:
        self._stop([name], timeout)

    def stop_all(self, timeout: float = 5.0) -> None:
        """SIGTERM to every child at once; SIGKILL to whatever is left after ``timeout``."""
        self._stop(list(self.children), timeout)

    def _stop(self, names: list[str], timeout: float) -> None:
        procs = [p for p in (self.children.pop(n, None) for n in names) if p is not None]
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
