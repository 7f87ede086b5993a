"""CPU seconds per GiB of every process on the VPN path during iperf3 (issue 18).

``python -m accessfabric.bench.vpn_cpu [--seconds S] [--reverse] [--udp] [--server-fifo]
[--profile DIR] [--strace DIR] [-- VPN-UP FLAGS...]`` (root, namespaces, Debian
``iperf3``) builds ``bench vpn``'s topology (:func:`accessfabric.bench.vpn.vpn_tunnel`),
runs iperf3 TCP (``--udp``: 1400 B UDP packets; ``--reverse``: server to client) through
the tunnel, and reads each process's CPU time (utime + stime of ``/proc/<pid>/stat``,
threads included) and syscalls (``/proc/<pid>/io``) before and after.  It prints CPU
s/GiB and the share of a core per process, how busy the whole machine was, the TUN
packets per GiB each node read and wrote (its ``status``: are super-packets 64 KiB end
to end?), the most two cores could carry with that work per byte, however it were split
into processes or workers (ADR 0039), and the share of the run the iperf3 server waited
for a CPU (``--server-fifo`` runs it ``SCHED_FIFO``, a diagnostic: it then does not
wait, ADR 0069).  ``--profile``/``--strace`` write py-spy profiles and ``strace -c -f``
counts of the node processes (ADR 0046).  Flags after ``--`` go to both ``vpn up``
commands (``--queues 2``, ``--no-offload``).  Softirq time and the iperf3 client are
not counted, so the bound is optimistic.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_TICK = os.sysconf("SC_CLK_TCK")
GIB = 1 << 30


def process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system, all threads) of ``pid``; None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            stat = handle.read()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def syscalls(pid: int) -> tuple[int, int] | None:
    """Read and write syscalls of ``pid`` so far (``syscr``, ``syscw``)."""
    try:
        with open(f"/proc/{pid}/io", encoding="ascii") as handle:
            table = dict(line.split(": ") for line in handle.read().splitlines())
    except OSError:
        return None
    return int(table["syscr"]), int(table["syscw"])


def namespace_pids(namespace: str) -> list[int]:
    """The processes running in network namespace ``namespace`` (``ip netns pids``)."""
    done = subprocess.run(
        ["ip", "netns", "pids", namespace], capture_output=True, text=True, check=True
    )
    return [int(pid) for pid in done.stdout.split()]


def path_processes(pids: Iterable[int]) -> dict[int, str]:
    """Of ``pids``, the VPN path's processes by pid: node processes and iperf3 servers."""
    found: dict[int, str] = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                command = handle.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "vpn up" in command:
            found[pid] = "exit node" if "--exit" in command else "client node"
        elif command.startswith("iperf3 -s"):
            found[pid] = "iperf3 server"
    return found


def _packets(before: dict[str, Any], after: dict[str, Any]) -> tuple[int, int, int, int]:
    """Packets read from the TUN, of them super-packets, packets written to it, packets
    dropped (outbox full, no stream)."""
    return (
        after["packets_out"] - before["packets_out"],
        after["gso_out"] - before["gso_out"],
        after["packets_in"] - before["packets_in"],
        after["dropped"] - before["dropped"],
    )


def _machine_busy() -> tuple[int, int]:
    with open("/proc/stat", encoding="ascii") as handle:
        fields = [int(x) for x in handle.readline().split()[1:9]]
    busy = sum(fields[0:3]) + sum(fields[5:8])
    return busy, sum(fields)


def _observers(
    processes: dict[int, str], seconds: float, profile: Path | None, strace: Path | None
) -> list[subprocess.Popen[bytes]]:
    """py-spy (``--nonblocking``: Python frames only, raw collapsed stacks) and
    ``strace -c -f`` on the node processes for ``seconds``; files named after each."""
    started: list[subprocess.Popen[bytes]] = []
    quiet = subprocess.DEVNULL
    for pid, name in processes.items():
        if "node" not in name:
            continue
        stem = name.replace(" ", "-")
        if profile is not None:
            started.append(subprocess.Popen(
                [str(Path(sys.executable).with_name("py-spy")), "record", "--nonblocking",
                 "-r", "250", "-d", str(max(1, int(seconds))), "-f", "raw",
                 "-o", str(profile / f"{stem}.txt"), "-p", str(pid)], stdout=quiet, stderr=quiet,
            ))  # fmt: skip
        if strace is not None:
            started.append(subprocess.Popen(
                ["timeout", "-s", "INT", str(seconds), "strace", "-c", "-f", "-o",
                 str(strace / f"{stem}.strace"), "-p", str(pid)], stdout=quiet, stderr=quiet,
            ))  # fmt: skip
    return started


def measure(
    seconds: float,
    flags: list[str],
    profile: Path | None = None,
    strace: Path | None = None,
    reverse: bool = False,
    udp: bool = False,
    server_fifo: bool = False,
) -> list[str]:
    """Report lines for one topology (``flags`` go to both ``vpn up`` commands);
    ``profile``/``strace``: directories for py-spy profiles and syscall counts of the
    node processes (they slow them: CPU figures from such a run are not comparable);
    ``server_fifo``: the iperf3 server runs ``SCHED_FIFO`` (``chrt -f 10``), a diagnostic:
    it gets a CPU as soon as a datagram wakes it (ADR 0069)."""
    from accessfabric.bench.runqueue import process_schedstat, sched_share
    from accessfabric.bench.vpn import PACKET, UDP_PAYLOAD, udp_arrived, vpn_tunnel

    quiet = subprocess.DEVNULL
    lines: list[str] = []
    with vpn_tunnel(flags, prefix="afc") as tunnel:
        server = tunnel.server
        fifo = ["chrt", "-f", "10"] if server_fifo else []
        receiver = tunnel.topo.popen("server", [*fifo, "iperf3", "-s"], stdout=quiet, stderr=quiet)
        time.sleep(0.5)
        netns = tunnel.client_run
        counted = {host: tunnel.status(host) for host in ("client", "exit")}  # the whole flow
        flow = subprocess.Popen(
            [*netns, "iperf3", "-c", server, "-t", str(seconds), "-J",
             *(["-R"] if reverse else []),
             *(["-u", "-b", "5G", "-l", str(UDP_PAYLOAD)] if udp else [])],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            time.sleep(0.3)
            processes = path_processes(  # this run's namespaces: not another run's nodes
                pid for ns in tunnel.topo.namespaces for pid in namespace_pids(ns)
            )
            before = {pid: (process_cpu(pid), syscalls(pid)) for pid in processes}
            sched0 = process_schedstat(receiver.pid)  # chrt and `ip netns exec` exec
            machine0 = _machine_busy()
            started = time.monotonic()
            observers = _observers(processes, seconds - 1, profile, strace)
            out, _ = flow.communicate(timeout=seconds + 30)
            for observer in observers:
                observer.wait(timeout=30)
            wall = time.monotonic() - started
        finally:  # the client runs in the namespace but outside the topology's processes
            if flow.poll() is None:
                flow.kill()
                flow.wait()
        machine1 = _machine_busy()
        sched1 = process_schedstat(receiver.pid)
        after = {pid: (process_cpu(pid), syscalls(pid)) for pid in processes}
        packets = {host: _packets(counted[host], tunnel.status(host)) for host in counted}
        end = json.loads(out)["end"]
        if udp:  # what the server received, as 1400 B IP packets
            count, elapsed = udp_arrived(end)
            arrived = count * PACKET
            received = {"bytes": arrived, "bits_per_second": arrived * 8 / elapsed}
        else:
            received = end["sum_received"]
        gib = received["bytes"] / GIB
        busy = (machine1[0] - machine0[0]) / max(1, machine1[1] - machine0[1])
        lines.append(
            f"vpn up {' '.join(flags) or '(defaults)'}: iperf3 {'UDP 1400 B' if udp else 'TCP'}"
            f"{' -R' if reverse else ''} "
            f"{received['bits_per_second'] / 1e6:,.0f} Mbit/s, {gib:.2f} GiB in {wall:.1f} s; "
            f"whole machine {busy:.0%} busy, load {os.getloadavg()[0]:.1f}"
        )
        if sched0 is not None and sched1 is not None:
            share = sched_share(sched0, sched1, wall)
            lines.append(
                f"  iperf3 server{' (SCHED_FIFO)' if server_fifo else ''}: {share.describe()}"
            )
        total = 0.0
        for pid, name in sorted(processes.items(), key=lambda item: item[1]):
            (cpu0, io0), (cpu1, io1) = before[pid], after[pid]
            if cpu0 is None or cpu1 is None or gib <= 0:
                continue
            used = cpu1 - cpu0
            total += used
            calls = ""
            if io0 is not None and io1 is not None:
                calls = (
                    f", syscalls {(io1[0] - io0[0]) / wall:,.0f} read "
                    f"{(io1[1] - io0[1]) / wall:,.0f} write per s"
                )
            lines.append(
                f"  {name:14s} {used / gib:5.2f} CPU s/GiB, {used / wall:4.0%} of a core{calls}"
            )
        for host, (out_, gso, in_, dropped) in packets.items():
            lines.append(
                f"  {host} TUN: {out_ / gib:,.0f} packets read per GiB ({gso / max(1, out_):.0%} "
                f"super-packets), {in_ / gib:,.0f} written per GiB, {dropped:,} dropped"
            )
        if total > 0:
            bound = 2 / (total / gib) * GIB * 8 / 1e9
            lines.append(
                f"  counted {total / gib:.2f} CPU s/GiB: two cores carry at most {bound:.2f} "
                "Gbit/s of this work, however it is split"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m accessfabric.bench.vpn_cpu")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--profile", type=Path, metavar="DIR", help="py-spy profiles here")
    parser.add_argument("--strace", type=Path, metavar="DIR", help="strace -c counts here")
    parser.add_argument(
        "--reverse", action="store_true", help="iperf3 -R: the server sends to the client"
    )
    parser.add_argument("--udp", action="store_true", help="iperf3 UDP of 1400 B packets")
    parser.add_argument(
        "--server-fifo", action="store_true",
        help="run the iperf3 server SCHED_FIFO (a diagnostic: no wait for a CPU)",
    )  # fmt: skip
    parser.add_argument("flags", nargs=argparse.REMAINDER, help="-- flags for vpn up")
    args = parser.parse_args(argv)
    flags = args.flags[1:] if args.flags[:1] == ["--"] else args.flags
    from accessfabric.bench.vpn import tun_unavailable_reason

    reason = tun_unavailable_reason()
    if reason is not None:
        print(f"vpn_cpu: {reason}", file=sys.stderr)
        return 2
    lines = measure(
        args.seconds, flags, args.profile, args.strace, args.reverse, args.udp, args.server_fifo
    )
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
