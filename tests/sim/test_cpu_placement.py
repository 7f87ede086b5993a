"""``sim fleet --control-cpu N`` (issue 17, ADR 0056 amendment): the control process, every
thread of it, on CPU N alone; the fleet's other processes, started after, off it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from accessfabric.sim.cpu_placement import control_cpu_problem, keep_off, pin_process, restore

ALLOWED = sorted(os.sched_getaffinity(0))
pytestmark = pytest.mark.skipif(len(ALLOWED) < 2, reason="placement needs two CPUs")

THREADED = (
    "import threading, time\n"
    "threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
    "print('up', flush=True)\n"
    "time.sleep(30)\n"
)


def _cpus_of_every_thread(pid: int) -> set[frozenset[int]]:
    return {frozenset(os.sched_getaffinity(int(task))) for task in os.listdir(f"/proc/{pid}/task")}


def test_the_control_cpu_is_the_control_process_s_alone() -> None:
    cpu = ALLOWED[-1]
    allowed = keep_off(cpu)
    try:
        assert cpu not in os.sched_getaffinity(0)
        control = subprocess.Popen([sys.executable, "-c", THREADED], stdout=subprocess.PIPE)
        other = subprocess.Popen([sys.executable, "-c", THREADED], stdout=subprocess.PIPE)
        try:
            for proc in (control, other):
                assert proc.stdout is not None and proc.stdout.readline() == b"up\n"
            assert pin_process(control.pid, cpu) == 2, "the main thread and the other"
            assert _cpus_of_every_thread(control.pid) == {frozenset({cpu})}
            assert cpu not in set().union(*_cpus_of_every_thread(other.pid)), "started after"
        finally:
            for proc in (control, other):
                proc.kill()
                proc.wait()
    finally:
        restore(allowed)
    assert os.sched_getaffinity(0) == allowed


def test_a_cpu_this_process_may_not_use_is_refused_in_words() -> None:
    assert control_cpu_problem(ALLOWED[0]) is None
    problem = control_cpu_problem(max(ALLOWED) + 1000)
    assert problem is not None and "may run on CPUs" in problem


def test_sim_fleet_refuses_a_bad_control_cpu_without_a_traceback(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "accessfabric", "sim", "fleet", "--devices", "1",
         "--control-cpu", "4096", "--work", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "--control-cpu 4096" in done.stderr + done.stdout
