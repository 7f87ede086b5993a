"""``accessfabric demo`` end to end (short): exit 0, every check verified, nothing left."""

from __future__ import annotations

import os
import subprocess
import sys


def _children(pid: int) -> list[str]:
    out = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(pid)], capture_output=True)
    return [line for line in out.stdout.decode().splitlines() if line.strip()]


def test_demo_short_run() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCESSFABRIC_")}
    done = subprocess.run(
        [sys.executable, "-m", "accessfabric", "demo", "--duration", "2", "--size-mib", "8"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert out.count("    enrolled ") == 5
    assert "route lease (primary)" in out
    assert "sha256 verified   yes, every copy" in out
    assert "relay-a KILLED" in out
    assert "sha256 verified end to end; resumed 1x" in out
    assert "p50" in out and "p99" in out
    work = out.split("in ", 1)[1].split()[0]
    assert not os.path.exists(work)  # the temp dir is gone
    leftover = subprocess.run(["pgrep", "-f", work], capture_output=True, text=True)
    assert leftover.stdout.strip() == ""  # no process of this run remains
