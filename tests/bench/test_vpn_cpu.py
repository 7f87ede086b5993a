"""bench/vpn_cpu.py reads a process's CPU time and syscalls from /proc (issue 18)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from accessfabric.bench.vpn_cpu import namespace_pids, path_processes, process_cpu, syscalls
from accessfabric.sim import Topology
from accessfabric.sim.availability import netns_unavailable_reason


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


@pytest.mark.netns
def test_path_processes_are_those_of_the_runs_own_namespaces() -> None:
    """Another run's ``vpn up`` on the machine is not counted (it was, by a scan of /proc)."""
    reason = netns_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    sleeper = [sys.executable, "-c", "import sys; print('up', flush=True); sys.stdin.read()"]
    outside = subprocess.Popen(
        [*sleeper, "vpn", "up"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        with Topology(prefix="afp") as topo:
            topo.add_host("exit")
            inside = topo.popen(
                "exit", [*sleeper, "vpn", "up", "--exit"], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )  # fmt: skip
            assert inside.stdout is not None and inside.stdout.readline() == b"up\n"
            assert outside.stdout is not None and outside.stdout.readline() == "up\n"
            found = path_processes(pid for ns in topo.namespaces for pid in namespace_pids(ns))
            assert found == {inside.pid: "exit node"}
            assert path_processes([outside.pid]) == {outside.pid: "client node"}
    finally:
        outside.kill()
        outside.wait()
