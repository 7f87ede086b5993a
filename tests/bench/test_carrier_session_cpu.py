"""bench/carrier_session_cpu.py moves bytes through a session pair and prints CPU per GiB."""

from __future__ import annotations

import re
import subprocess
import sys

from accessfabric.bench.carrier_session_cpu import transfer


def test_every_byte_arrives_and_both_sides_are_timed() -> None:
    sender, receiver = transfer(4 << 20)
    assert sender > 0 and receiver > 0


def test_the_figure_is_printed() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "accessfabric.bench.carrier_session_cpu", "--mib", "4",
         "--rounds", "1"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert re.fullmatch(r"session CPU s/GiB sender \d+\.\d+ receiver \d+\.\d+\n", done.stdout), (
        done.stdout
    )
