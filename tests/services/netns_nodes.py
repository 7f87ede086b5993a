"""Fabric nodes as real ``accessfabric`` processes inside a :class:`Topology`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from accessfabric.sim import Topology, netns_unavailable_reason, tun_unavailable_reason

COMMAND = [sys.executable, "-m", "accessfabric"]


def require_netns_and_tun() -> None:
    reason = netns_unavailable_reason() or tun_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)


def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("ACCESSFABRIC_")}
    out["PYTHONUNBUFFERED"] = "1"
    return out


def keygen(path: Path) -> str:
    done = subprocess.run(
        [*COMMAND, "keygen", "--out", str(path)], capture_output=True, text=True, env=env()
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def write_config(path: Path, key: Path, listen: str | None = None, peer: str = "") -> Path:
    text = f'key_path = "{key}"\n'
    if listen:
        text += f'[[listen]]\ncarrier = "tcp"\naddress = "{listen}"\n'
    text += peer
    path.write_text(text)
    return path


def peer_table(node_id: str, url: str, services: list[str]) -> str:
    names = ", ".join(f'"{s}"' for s in services)
    return (
        f'[[peers]]\nnode_id = "{node_id}"\nendpoints = ["{url}"]\n'
        f'connect = "always"\nservices = [{names}]\n'
    )


def start(topo: Topology, host: str, args: list[str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    return topo.popen(host, [*COMMAND, *args], stdout=handle, stderr=handle, env=env())


def wait_until(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def wait_port(topo: Topology, host: str, address: str, port: int, timeout: float = 15) -> None:
    def ready() -> bool:
        out = topo.run(host, ["ss", "-Hltn", f"sport = :{port}"], check=False).stdout
        return address in out or "*" in out or "0.0.0.0" in out

    wait_until(ready, timeout, f"{host} listening on {address}:{port}")
