"""Where a process tree's time goes: on a CPU, or runnable and waiting for one.

``python -m accessfabric.bench.runqueue [--match TEXT] -- COMMAND ...`` runs COMMAND
and samples ``/proc/<pid>/schedstat`` (per task: nanoseconds on a CPU, nanoseconds
runnable on a run queue, time slices) of every process in its tree every 0.2 s.  At
the end it prints, per process whose command line contains ``--match`` (all when
empty), CPU seconds, run-queue wait seconds, slices and the mean wait per slice: on a
saturated machine that mean is what every hop adds to a frame that arrives while its
process is not on a CPU, whatever the event loop does first (issue 18, item 5).
Linux only (``CONFIG_SCHED_INFO``); tasks are the processes' main threads.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class Sample:
    name: str
    first: tuple[int, int, int]
    last: tuple[int, int, int]


def schedstat(pid: int) -> tuple[int, int, int] | None:
    """:func:`parse_schedstat` of ``pid``'s main thread; None once it is gone."""
    try:
        with open(f"/proc/{pid}/schedstat", encoding="ascii") as handle:
            return parse_schedstat([handle.read()])
    except (OSError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class SchedShare:
    """One process's scheduling over a run, from ``/proc/<pid>/task/*/schedstat``."""

    ran: float
    """Share of the run on a CPU."""
    waited: float
    """Share of the run runnable but waiting for a CPU (the kernel's ``run_delay``)."""
    wait_per_run_us: float
    """Mean wait before each time it got a CPU, microseconds."""

    def describe(self) -> str:
        return (
            f"ran {self.ran:.0%} of the run and waited {self.waited:.0%} for a CPU "
            f"({self.wait_per_run_us:,.0f} us before each of its runs on average)"
        )


def parse_schedstat(texts: Sequence[str]) -> tuple[int, int, int]:
    """(ns on a CPU, ns runnable waiting for one, times it got one) summed over the
    ``schedstat`` texts of a process's threads (``/proc/<pid>/task/*/schedstat``)."""
    ran = waited = runs = 0
    for text in texts:
        fields = text.split()
        ran += int(fields[0])
        waited += int(fields[1])
        runs += int(fields[2])
    return ran, waited, runs


def process_schedstat(pid: int) -> tuple[int, int, int] | None:
    """:func:`parse_schedstat` of a running process; None once it is gone."""
    texts = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat", encoding="ascii") as handle:
                texts.append(handle.read())
    except OSError:
        return None
    return parse_schedstat(texts)


def sched_share(
    before: tuple[int, int, int], after: tuple[int, int, int], seconds: float
) -> SchedShare:
    ran, waited, runs = (b - a for a, b in zip(before, after, strict=True))
    return SchedShare(
        ran=ran / 1e9 / seconds,
        waited=waited / 1e9 / seconds,
        wait_per_run_us=waited / 1e3 / max(1, runs),
    )


def children(root: int) -> set[int]:
    """``root`` and its descendants (by the parent pid in /proc/<pid>/stat)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        parents[int(entry)] = int(fields[1])
    tree = {root}
    grew = True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return tree


def command_line(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m accessfabric.bench.runqueue")
    parser.add_argument("--match", default="", help="only processes whose command has this")
    parser.add_argument("--interval", type=float, default=0.2)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("a command to run is needed after --")
    samples: dict[int, Sample] = {}
    started = time.monotonic()
    proc = subprocess.Popen(command)
    while proc.poll() is None:
        for pid in children(proc.pid):
            stat = schedstat(pid)
            if stat is None:
                continue
            if pid in samples:
                samples[pid].last = stat
            else:
                samples[pid] = Sample(command_line(pid), stat, stat)
        time.sleep(args.interval)
    wall = time.monotonic() - started
    print(
        f"runqueue: {wall:.1f} s wall; per process: CPU s, run-queue wait s, slices, "
        "mean wait per slice",
        file=sys.stderr,
    )
    for pid, sample in sorted(samples.items()):
        if args.match not in sample.name:
            continue
        cpu = (sample.last[0] - sample.first[0]) / 1e9
        wait = (sample.last[1] - sample.first[1]) / 1e9
        slices = sample.last[2] - sample.first[2]
        if slices == 0:
            continue
        print(
            f"  {pid:>7} cpu {cpu:6.2f} s  wait {wait:6.2f} s  slices {slices:7d}  "
            f"wait/slice {wait / slices * 1e3:6.2f} ms  {sample.name[:90]}",
            file=sys.stderr,
        )
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
