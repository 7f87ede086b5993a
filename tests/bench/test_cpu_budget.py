"""The relay bench's CPU budget really holds a process to its share of a CPU."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from accessfabric.bench import BenchSetupError, relay
from accessfabric.bench.cpu_budget import CpuBudget, unavailable_reason

needs_cgroups = pytest.mark.skipif(
    unavailable_reason() is not None, reason=f"cgroup CPU quota: {unavailable_reason()}"
)

SPIN = "import time\nend = time.monotonic() + 30\nwhile time.monotonic() < end: pass\n"


_cpu_seconds = relay._cpu_seconds


@needs_cgroups
def test_a_budget_holds_a_spinning_process_to_its_share() -> None:
    budget = CpuBudget("test-spin", 0.2)
    spinner = subprocess.Popen([sys.executable, "-c", SPIN])
    try:
        budget.add(spinner.pid)
        time.sleep(0.2)
        cpu_before, wall_before = _cpu_seconds(spinner.pid), time.monotonic()
        time.sleep(1.5)
        used = _cpu_seconds(spinner.pid) - cpu_before
        share = used / (time.monotonic() - wall_before)
        # Unlimited, the spinner would use a whole CPU (share ~1.0).
        assert share < 0.35, f"the budget of 0.2 CPU let the spinner use {share:.2f}"
        assert budget.throttled_seconds() > 0
    finally:
        spinner.kill()
        spinner.wait()
        budget.close()
    assert not budget.path.exists()


@needs_cgroups
def test_closing_a_budget_frees_the_processes_still_in_it() -> None:
    budget = CpuBudget("test-close", 0.1)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        budget.add(sleeper.pid)
        budget.close()
        assert not budget.path.exists()
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()


def test_node_cpu_fraction_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(relay.NODE_CPU_ENV, raising=False)
    assert relay.node_cpu_fraction() == relay.DEFAULT_NODE_CPU
    monkeypatch.setenv(relay.NODE_CPU_ENV, "0.3")
    assert relay.node_cpu_fraction() == 0.3
    for bad in ("lots", "0", "2.5"):
        monkeypatch.setenv(relay.NODE_CPU_ENV, bad)
        with pytest.raises(BenchSetupError, match=relay.NODE_CPU_ENV):
            relay.node_cpu_fraction()


@needs_cgroups
def test_a_budget_outside_the_machine_is_refused() -> None:
    with pytest.raises(ValueError, match="CPU budget"):
        CpuBudget("test-bad", float((os.cpu_count() or 1) + 1))


@needs_cgroups
def test_a_budgeted_bulk_moves_every_byte_and_reports_each_process(tmp_path: Path) -> None:
    lab = relay._Lab(tmp_path)
    budgets = {name: CpuBudget(f"test-{name}", 0.5) for name in ("src", "dst")}
    try:
        lab.start("dst", lab.spec("dst", [], [], []))
        budgets["dst"].add(lab.procs["dst"].pid)
        # _bulk raises unless the destination's SHA-256 equals the source's.
        rate, cpu = relay._bulk(lab, ["src", "dst"], 12 * relay.MiB, budgets)
    finally:
        lab.stop()
        for budget in budgets.values():
            budget.close()
    assert rate > 0
    assert set(cpu) == {"src", "dst"}
    assert all(seconds > 0 for seconds in cpu.values())
