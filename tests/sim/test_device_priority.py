"""``sim fleet --device-nice N`` (issue 17): the simulated devices' workers, every thread
of them, at a lower CPU priority than the fabric's own processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from accessfabric.sim.cpu_placement import lower_priority

THREADED = (
    "import threading, time\n"
    "threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
    "print('up', flush=True)\n"
    "time.sleep(30)\n"
)


def test_every_thread_of_a_worker_gets_the_lower_priority() -> None:
    own = os.getpriority(os.PRIO_PROCESS, 0)  # a niced test run starts above 0
    lower = min(19, own + 5)
    worker = subprocess.Popen([sys.executable, "-c", THREADED], stdout=subprocess.PIPE)
    try:
        assert worker.stdout is not None and worker.stdout.readline() == b"up\n"
        assert lower_priority(worker.pid, lower) == 2, "the main thread and the other"
        tasks = [int(task) for task in os.listdir(f"/proc/{worker.pid}/task")]
        assert {os.getpriority(os.PRIO_PROCESS, task) for task in tasks} == {lower}
        assert os.getpriority(os.PRIO_PROCESS, 0) == own, "this process keeps its own"
    finally:
        worker.kill()
        worker.wait()


def test_sim_fleet_refuses_a_niceness_out_of_range_without_a_traceback(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "accessfabric", "sim", "fleet", "--devices", "1",
         "--device-nice", "20", "--work", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "--device-nice must be between" in done.stderr and "and 19" in done.stderr
