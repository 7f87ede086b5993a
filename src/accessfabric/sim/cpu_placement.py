"""``sim fleet --control-cpu N``: the control plane on a CPU of its own.

A fleet run puts the control plane, the entries, the service host and a thousand
simulated devices (a few worker processes) on one machine.  In the fleet's start the
workers' device start-ups use ~3.5x the control plane's CPU, and on two cores the
control plane's loop waited in the run queue three times as long as it ran (ADR 0056):
that wait, not the control plane's work, made the route lease tail.  A deployment gives
the control plane a host of its own; this gives it a CPU of its own: every thread of the
control process runs on CPU N alone, and this process — so every other child it starts
afterwards — on the other CPUs.
"""

from __future__ import annotations

import os


def control_cpu_problem(cpu: int) -> str | None:
    """Why ``--control-cpu cpu`` cannot be honoured here, or None."""
    allowed = os.sched_getaffinity(0)
    if cpu not in allowed:
        return f"--control-cpu {cpu}: this process may run on CPUs {sorted(allowed)} only"
    if len(allowed) < 2:
        return "--control-cpu needs two CPUs or more (the fleet needs one besides)"
    return None


def keep_off(cpu: int) -> set[int]:
    """Move this process (and so the children it starts from now on) off ``cpu``; the
    CPUs it was allowed before, to give back with :func:`restore`."""
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, allowed - {cpu})
    return allowed


def restore(allowed: set[int]) -> None:
    os.sched_setaffinity(0, allowed)


def pin_process(pid: int, cpu: int) -> int:
    """Every thread of process ``pid`` onto ``cpu`` alone (threads it starts later inherit
    it from theirs); how many threads were moved."""
    moved = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(task), {cpu})
        except ProcessLookupError:  # the thread ended meanwhile
            continue
        moved += 1
    return moved


def lower_priority(pid: int, nice: int) -> int:
    """Every thread of process ``pid`` to niceness ``nice`` (threads it starts later
    inherit it from theirs); how many threads were changed."""
    changed = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            os.setpriority(os.PRIO_PROCESS, int(task), nice)
        except ProcessLookupError:  # the thread ended meanwhile
            continue
        changed += 1
    return changed
