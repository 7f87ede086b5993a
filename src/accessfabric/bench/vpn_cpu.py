"""CPU seconds per GiB of every process on the VPN path during iperf3 TCP (issue 18).

``python -m accessfabric.bench.vpn_cpu [--seconds S] [-- VPN-UP FLAGS...]`` (root,
namespaces, Debian ``iperf3``) builds ``bench vpn``'s topology (client -- exit --
server, ``vpn up`` client and exit), runs iperf3 TCP from the client through the
tunnel, and reads each process's CPU time (utime + stime of ``/proc/<pid>/stat``,
threads included) and syscalls (``/proc/<pid>/io``) before and after.  It prints
CPU s/GiB and the share of a core per process, how busy the whole machine was, and
the most two cores could carry with that work per byte, however it were split into
processes or workers: the measurement behind "a worker per TUN queue" (ADR 0039).
Flags after ``--`` go to both ``vpn up`` commands (``--queues 2``, ``--no-offload``).
Softirq time and the iperf3 client are not counted, so the bound is optimistic.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from accessfabric.identity.keys import NodeKey

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


def path_processes() -> dict[int, str]:
    """The VPN path's processes by pid: node processes and iperf3 servers."""
    found: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                command = handle.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "vpn up" in command:
            found[int(entry)] = "exit node" if "--exit" in command else "client node"
        elif command.startswith("iperf3 -s"):
            found[int(entry)] = "iperf3 server"
    return found


def _machine_busy() -> tuple[int, int]:
    with open("/proc/stat", encoding="ascii") as handle:
        fields = [int(x) for x in handle.readline().split()[1:9]]
    busy = sum(fields[0:3]) + sum(fields[5:8])
    return busy, sum(fields)


def measure(seconds: float, flags: list[str]) -> list[str]:
    """Report lines for one topology (``flags`` go to both ``vpn up`` commands)."""
    from accessfabric.sim import Topology

    command = [sys.executable, "-m", "accessfabric"]
    quiet = subprocess.DEVNULL
    lines: list[str] = []
    with tempfile.TemporaryDirectory() as tmp, Topology(prefix="afc") as topo:
        work = Path(tmp)
        for host in ("client", "exit", "server"):
            topo.add_host(host)
        topo.link("client", "exit")
        topo.link("exit", "server")
        topo.route("server", "10.99.0.0/24", via="exit")
        server, exit_addr = topo.host_addr("server", "exit"), topo.host_addr("exit", "client")
        ids = {name: NodeKey.generate() for name in ("exit", "client")}
        for name, key in ids.items():
            key.save(work / f"{name}.key")
        (work / "exit.toml").write_text(
            f'key_path = "{work}/exit.key"\ndrain_timeout = 1\n[[listen]]\ncarrier = "tcp"\n'
            f'address = "{exit_addr}:7443"\n[allow]\nvpn = ["{ids["client"].node_id}"]\n'
        )
        (work / "client.toml").write_text(
            f'key_path = "{work}/client.key"\ndrain_timeout = 1\n'
            f'[[peers]]\nnode_id = "{ids["exit"].node_id}"\n'
            f'endpoints = ["tcp://{exit_addr}:7443"]\nconnect = "always"\nservices = ["vpn"]\n'
        )
        topo.popen(
            "exit", [*command, "vpn", "up", "--exit", "--config", f"{work}/exit.toml",
                     "--address", "10.99.0.1/24", "--forwarding", *flags],
            stdout=quiet, stderr=quiet,
        )  # fmt: skip
        time.sleep(2.0)
        topo.popen(
            "client", [*command, "vpn", "up", "--config", f"{work}/client.toml",
                       "--address", "10.99.0.2/24", "--route", f"{server}/32", *flags],
            stdout=quiet, stderr=quiet,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while topo.run("client", ["ping", "-c1", "-W1", server], check=False).returncode:
            if time.monotonic() > deadline:
                raise RuntimeError("the tunnel did not come up")
        topo.popen("server", ["iperf3", "-s"], stdout=quiet, stderr=quiet)
        time.sleep(0.5)
        netns = ["ip", "netns", "exec", topo.ns("client")]
        flow = subprocess.Popen(
            [*netns, "iperf3", "-c", server, "-t", str(seconds), "-J"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            time.sleep(0.3)
            processes = path_processes()
            before = {pid: (process_cpu(pid), syscalls(pid)) for pid in processes}
            machine0 = _machine_busy()
            started = time.monotonic()
            out, _ = flow.communicate(timeout=seconds + 30)
            wall = time.monotonic() - started
        finally:  # the client runs in the namespace but outside the topology's processes
            if flow.poll() is None:
                flow.kill()
                flow.wait()
        machine1 = _machine_busy()
        after = {pid: (process_cpu(pid), syscalls(pid)) for pid in processes}
        received = json.loads(out)["end"]["sum_received"]
        gib = received["bytes"] / GIB
        busy = (machine1[0] - machine0[0]) / max(1, machine1[1] - machine0[1])
        lines.append(
            f"vpn up {' '.join(flags) or '(defaults)'}: iperf3 TCP "
            f"{received['bits_per_second'] / 1e6:,.0f} Mbit/s, {gib:.2f} GiB in {wall:.1f} s; "
            f"whole machine {busy:.0%} busy, load {os.getloadavg()[0]:.1f}"
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
    parser.add_argument("flags", nargs=argparse.REMAINDER, help="-- flags for vpn up")
    args = parser.parse_args(argv)
    flags = args.flags[1:] if args.flags[:1] == ["--"] else args.flags
    from accessfabric.bench.vpn import tun_unavailable_reason

    reason = tun_unavailable_reason()
    if reason is not None:
        print(f"vpn_cpu: {reason}", file=sys.stderr)
        return 2
    for line in measure(args.seconds, flags):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
