"""Real ``accessfabric`` processes for node tests: start nodes, run smoke, read their logs."""

from __future__ import annotations

import json
import os
import queue
import resource
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

COMMAND = [sys.executable, "-m", "accessfabric"]
START_TIMEOUT = 15.0


def command_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCESSFABRIC_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_cli(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *args], capture_output=True, text=True, timeout=timeout, env=command_env()
    )


def keygen(path: Path) -> str:
    result = run_cli("keygen", "--out", str(path))
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@dataclass
class NodeProcess:
    """One ``accessfabric node run --log-json`` process; its log lines are collected."""

    process: subprocess.Popen[str]
    node_id: str
    directory: Path
    lines: list[dict[str, Any]] = field(default_factory=list)
    _queue: queue.Queue[dict[str, Any] | None] = field(default_factory=queue.Queue)
    port: int = 0
    ws_port: int = 0

    def _read(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            try:
                line = json.loads(raw)
            except ValueError:
                line = {"event": "raw", "text": raw.rstrip()}
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, event: str, timeout: float = START_TIMEOUT, **fields: Any) -> dict[str, Any]:
        """The first log line (seen or coming) with this event name and field values."""
        for line in self.lines:
            if _matches(line, event, fields):
                return line
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {event!r} {fields} in node log: {self.lines}")
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"node exited before {event!r}: {self.lines}")
            self.lines.append(line)
            if _matches(line, event, fields):
                return line

    def drain_log(self) -> list[dict[str, Any]]:
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                return self.lines
            if line is not None:
                self.lines.append(line)

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def terminate(self, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


def _matches(line: dict[str, Any], event: str, fields: dict[str, Any]) -> bool:
    return line.get("event") == event and all(line.get(k) == v for k, v in fields.items())


def start_node(
    directory: Path,
    name: str,
    extra_toml: str = "",
    *,
    websocket: bool = False,
    nofile: int | None = None,
) -> NodeProcess:
    """Write ``<name>.key`` and ``<name>.toml`` (TCP listener on a free port) and start it.

    With ``websocket`` the node also listens for wss on a free port, path ``/fabric``;
    ``nofile`` sets the process's ``RLIMIT_NOFILE`` (soft and hard).
    """
    directory.mkdir(parents=True, exist_ok=True)
    node_id = keygen(directory / f"{name}.key")
    config = directory / f"{name}.toml"
    config.write_text(
        f'key_path = "{name}.key"\n'
        f"{extra_toml}\n"
        '[[listen]]\ncarrier = "tcp"\naddress = "127.0.0.1:0"\n'
        + ('[[listen]]\ncarrier = "websocket"\naddress = "127.0.0.1:0"\n' if websocket else "")
    )
    process = subprocess.Popen(
        [*COMMAND, "node", "run", "--config", str(config), "--log-json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=command_env(),
        preexec_fn=None if nofile is None else lambda: _limit_files(nofile),
    )
    node = NodeProcess(process=process, node_id=node_id, directory=directory)
    threading.Thread(target=node._read, daemon=True).start()
    try:
        listening = node.wait_for("listening", carrier="tcp")
        if websocket:
            ws = node.wait_for("listening", carrier="websocket")
            node.ws_port = int(ws["address"].rsplit(":", 1)[1])
        node.wait_for("node ready")
    except BaseException:
        node.kill()
        raise
    node.port = int(listening["address"].rsplit(":", 1)[1])
    return node


def _limit_files(count: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (count, count))


def smoke(url: str, peer_id: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_cli("smoke", "--peer", url, "--peer-id", peer_id, "--timeout", "5", *extra)


def wait_node_ready(
    process: subprocess.Popen[bytes] | subprocess.Popen[str], timeout: float = 20.0
) -> None:
    """Wait for ``"node ready"`` in a node process's stderr log (read on a thread);
    fail with the log's tail when it does not come."""
    assert process.stderr is not None
    found = threading.Event()
    seen: list[str] = []

    def read() -> None:
        assert process.stderr is not None
        for raw in process.stderr:
            line = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
            seen.append(line)
            if '"node ready"' in line:
                found.set()

    threading.Thread(target=read, daemon=True).start()
    if not found.wait(timeout):
        pytest.fail(f"server node did not start: {''.join(seen)[-2000:]}")
