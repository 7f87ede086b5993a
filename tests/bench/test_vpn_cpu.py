"""bench/vpn_cpu.py reads a process's CPU time and syscalls from /proc (issue 18)."""

from __future__ import annotations

import subprocess
import sys

from accessfabric.bench.vpn_cpu import process_cpu, syscalls


def test_cpu_time_and_syscalls_of_a_busy_child_are_read() -> None:
    burn = (
        "import os, time\n"
        "end = time.process_time() + 0.3\n"
        "while time.process_time() < end: os.getpid()\n"
        "print('done', flush=True)\n"
        "input()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", burn], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "done\n"
        used = process_cpu(child.pid)
        assert used is not None and 0.25 <= used < 5.0, used
        calls = syscalls(child.pid)
        assert calls is not None and calls[0] > 0 and calls[1] > 0
    finally:
        child.kill()
        child.wait()
    assert process_cpu(child.pid) is None  # gone
