"""``python -m accessfabric.bench.quic_two_process`` (ADR 0062): qh3 between two
processes, measured for real (a small transfer), its key directory removed after."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_qh3_between_two_processes_is_measured_and_leaves_nothing(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "accessfabric.bench.quic_two_process", "--rounds", "1",
         "--mib", "4"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout.splitlines()[0])
    assert row["qh3"] > 0 and row["qh3_client_cpu_s_gib"] > 0
    assert list(tmp_path.iterdir()) == [], "the run's keys and certificates stay behind"
