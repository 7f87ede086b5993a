"""bench/carrier_cpu.py moves the bulk kinds of ``bench carrier`` and prints CPU per GiB."""

from __future__ import annotations

import re
import subprocess
import sys


def test_rates_cpu_and_stalls_are_printed_for_each_kind() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "accessfabric.bench.carrier_cpu", "--mib", "8",
         "--kinds", "raw_tls,fabric_tcp_unpaced"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    lines = done.stdout.splitlines()
    assert re.fullmatch(r"raw_tls: \d+ MB/s", lines[0]), lines
    assert re.fullmatch(r"fabric_tcp_unpaced: \d+ MB/s, sender credit stalls \d+", lines[1]), lines
    cpu = [line for line in lines if "CPU s/GiB" in line]
    assert len(cpu) == 2 and all(re.search(r"sender \d+\.\d+ receiver \d+\.\d+", x) for x in cpu)
