"""``accessfabric bench vpn``: 1400-byte IP packets node to node through the VPN.

1. *fabric* (no root): two node runtimes in one process on loopback TCP+TLS, one
   session; 1400 B IPv4/UDP packets of 16 flows are handed to the VPN client as
   the TUN reader would hand them (bursts of up to 512), classified, batched into
   DATA frames and counted where the exit would write them to its TUN device.
   Baseline in the same run: the same bytes as 64 KiB writes on one plain stream.
   Both ends share one core, so the figure is a lower bound for one node.
2. *TUN* (root, namespaces, iperf3): ``vpn up`` client and exit processes in two
   namespaces, with TUN offloads (TSO/USO, the default) and without
   (``--no-offload``): iperf3 TCP, ``iperf3 -u -l 1372`` (1400 B IP packets) from the
   client through the tunnel to a server behind the exit, and the p99 of 20 ms pings
   while an iperf3 TCP flow runs.  Baseline: the same iperf3 runs over the plain
   veth underlay, in the same run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from accessfabric.bench.report import BenchReport, BenchResult
from accessfabric.bench.runqueue import SchedShare, process_schedstat, sched_share
from accessfabric.identity.keys import NodeKey
from accessfabric.node.config.node_config import NodeConfig, PeerConfig
from accessfabric.node.dialing.address import Endpoint
from accessfabric.node.runtime import NodeRuntime
from accessfabric.node.streams.connection import FabricStream
from accessfabric.percentile import percentile
from accessfabric.services.fabric import DirectStreamOpener
from accessfabric.services.vpn import VpnClient, VpnExit
from accessfabric.services.vpn_wire import VPN_SERVICE
from accessfabric.wire.registry import TrafficClass

PACKET = 1400
UDP_PAYLOAD = PACKET - 28
_T = TypeVar("_T")
LOOPBACK = Endpoint(carrier="tcp", host="127.0.0.1", port=0)


def udp_packet(flow: int, size: int = PACKET) -> bytes:
    """An IPv4/UDP packet 10.99.0.2:40000+flow -> 10.0.0.1:5201 (checksums not computed)."""
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, size, 0, 0, 64, 17, 0,
        bytes((10, 99, 0, 2)), bytes((10, 0, 0, 1)),
    )  # fmt: skip
    udp = struct.pack("!HHHH", 40000 + flow, 5201, size - 20, 0)
    return header + udp + bytes(size - 28)


async def _pair(work: Path) -> tuple[NodeRuntime, NodeRuntime]:
    client_key = NodeKey.generate()
    allow = {service: (client_key.node_id,) for service in (VPN_SERVICE, "sink")}  # deny others
    exit_node = NodeRuntime(
        NodeConfig(key_path=work / "x.key", cert_dir=work / "x", listen=(LOOPBACK,), allow=allow),
        key=NodeKey.generate(),
    )
    await exit_node.start()
    peer = PeerConfig(node_id=exit_node.node_id, endpoints=(exit_node.listeners[0].endpoint,))
    client = NodeRuntime(
        NodeConfig(key_path=work / "c.key", cert_dir=work / "c", peers=(peer,)),
        key=client_key,
    )
    await client.start()
    return client, exit_node


async def _fabric_vpn(seconds: float, shards: int) -> tuple[float, float, int]:
    """Packets/s, Mbit/s delivered, packets dropped (client outboxes full)."""
    with tempfile.TemporaryDirectory() as tmp:
        client_node, exit_node = await _pair(Path(tmp))
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)  # stand-ins for TUN fds
        a.setblocking(False)
        b.setblocking(False)
        delivered = [0]
        vpn_exit = VpnExit(b.fileno(), shards=shards)

        def count(packets: Sequence[bytes | memoryview]) -> None:
            delivered[0] += len(packets)

        vpn_exit.port.write = count  # type: ignore[method-assign]
        exit_node.dispatcher.register(VPN_SERVICE, vpn_exit.handle)
        opener = DirectStreamOpener(client_node.peers.session, {VPN_SERVICE: exit_node.node_id})
        vpn = VpnClient(opener, a.fileno(), shards=shards, heavy_bytes=1 << 40)
        bursts = [[udp_packet(flow) for flow in range(16)] * 32]  # 512 packets
        vpn._on_packets(bursts[0][:16])
        while delivered[0] < 16:
            await asyncio.sleep(0.01)
        delivered[0] = 0
        started = time.perf_counter()
        deadline = started + seconds
        while time.perf_counter() < deadline:
            queued = sum(o._size for o in vpn._outboxes.values())
            if queued < 1 << 20:
                vpn._on_packets(bursts[0])
            await asyncio.sleep(0)
        elapsed = time.perf_counter() - started
        got = delivered[0]
        dropped = vpn.counters.dropped
        await vpn.close()
        await vpn_exit.close()
        await client_node.shutdown()
        await exit_node.shutdown()
        a.close()
        b.close()
        return got / elapsed, got * PACKET * 8 / elapsed / 1e6, dropped


async def _fabric_bulk(seconds: float) -> float:
    """Mbit/s of 64 KiB writes on one reliable stream between the same two runtimes."""
    with tempfile.TemporaryDirectory() as tmp:
        client_node, exit_node = await _pair(Path(tmp))
        received = [0]

        async def sink(stream: FabricStream) -> None:
            while data := await stream.read(1 << 20):
                received[0] += len(data)

        exit_node.dispatcher.register("sink", sink)
        session = await client_node.peers.session(exit_node.node_id)
        stream = await session.open_stream("sink", TrafficClass.RELIABLE)
        chunk = os.urandom(64 * 1024)
        started = time.perf_counter()
        deadline = started + seconds
        while time.perf_counter() < deadline:
            stream.write(chunk)
            await stream.drain()
        elapsed = time.perf_counter() - started
        stream.close()
        await client_node.shutdown()
        await exit_node.shutdown()
        return received[0] * 8 / elapsed / 1e6


def tun_unavailable_reason() -> str | None:
    from accessfabric.sim import netns_unavailable_reason, tun_unavailable_reason

    if shutil.which("iperf3") is None:
        return "iperf3 not installed"
    return netns_unavailable_reason() or tun_unavailable_reason()


def udp_arrived(end: dict[str, Any]) -> tuple[int, float]:
    """(datagrams the server received, its seconds) from an iperf3 UDP client's ``-J``
    ``end`` object.

    The server's own count: ``sum_received`` (iperf3 >= 3.10; its ``packets`` is the
    highest sequence number seen, its ``lost_packets`` the gaps below it).  The client's
    ``sum`` holds the packets *sent* less those lost, so the datagrams sent after the
    last one that arrived (still queued on the path, or dropped, when the test ends)
    count as delivered: through a path with deep queues that overstated the rate by up
    to 2x (ADR 0065).  An iperf3 without ``sum_received`` is refused (``ValueError``)
    rather than its overstated figure reported."""
    summed = end.get("sum_received")
    if summed is None:
        raise ValueError(
            "this iperf3 reports no sum_received (older than 3.10): the client's own sum "
            "counts datagrams still queued at the end as delivered (ADR 0065)"
        )
    return summed["packets"] - summed["lost_packets"], summed["seconds"]


def _iperf_udp(run: list[str], server: str, seconds: float) -> tuple[float, float]:
    """(packets/s, Mbit/s of 1400 B IP packets) that arrived at the iperf3 server."""
    out = subprocess.run(
        [*run, "iperf3", "-c", server, "-u", "-b", "5G", "-l", str(UDP_PAYLOAD),
         "-t", str(seconds), "-J"],
        capture_output=True, text=True, timeout=seconds + 30, check=True,
    ).stdout  # fmt: skip
    packets, elapsed = udp_arrived(json.loads(out)["end"])
    return packets / elapsed, packets * PACKET * 8 / elapsed / 1e6


def _iperf_tcp(run: list[str], server: str, seconds: float) -> float:
    out = subprocess.run(
        [*run, "iperf3", "-c", server, "-t", str(seconds), "-J"],
        capture_output=True, text=True, timeout=seconds + 30, check=True,
    ).stdout  # fmt: skip
    bits: float = json.loads(out)["end"]["sum_received"]["bits_per_second"]
    return bits / 1e6


def _ping_p99_under_tcp(run: list[str], server: str, seconds: float) -> float:
    """p99 of 0.02 s pings (ms) while an iperf3 TCP flow runs through the same path."""
    flow = subprocess.Popen(
        [*run, "iperf3", "-c", server, "-t", str(seconds + 1), "-p", "5202"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(0.5)
        count = int(seconds / 0.02)
        out = subprocess.run(
            [*run, "ping", "-c", str(count), "-i", "0.02", "-W", "1", server],
            capture_output=True, text=True, timeout=seconds + 30, check=False,
        ).stdout  # fmt: skip
    finally:
        flow.wait(timeout=seconds + 30)
    return percentile(
        (float(x.split("time=")[1].split()[0]) for x in out.splitlines() if "time=" in x), 0.99
    )


@dataclass(frozen=True, slots=True)
class UdpLosses:
    """What one iperf3 UDP run lost where iperf3 cannot tell: datagrams at the client's
    TUN queue and the server's socket, records (up to 64 datagrams each with offloads on)
    in the client node; and how long the iperf3 server waited for a CPU."""

    client_ring: int
    """Dropped by the client's TUN device: its queue (``txqueuelen``) was full, the
    client node had not read them yet (``tx_dropped``)."""
    client_node: int
    """Records the client node read and dropped (its ``dropped``: a full outbox, or a
    stream that could not be opened)."""
    receiver_socket: int
    """Dropped at the iperf3 server's socket, its receive buffer full (``RcvbufErrors``)."""
    receiver_sched: SchedShare | None = None
    """The iperf3 server's time on a CPU and runnable but waiting for one (ADR 0069)."""

    def describe(self) -> str:
        text = (
            f"{self.client_ring:,} at the client's TUN queue, {self.client_node:,} records "
            f"dropped by the client node, {self.receiver_socket:,} at the server's "
            "socket (receive buffer full)"
        )
        if self.receiver_sched is not None:
            text += f"; the iperf3 server {self.receiver_sched.describe()}"
        return text


def udp_receive_errors(snmp: str) -> int:
    """``RcvbufErrors`` of the ``Udp:`` rows of a ``/proc/net/snmp`` text."""
    rows = [line.split()[1:] for line in snmp.splitlines() if line.startswith("Udp:")]
    return int(dict(zip(rows[0], rows[1], strict=True))["RcvbufErrors"])


@dataclass(frozen=True, slots=True)
class UnderlayLosses:
    """What the underlay's iperf3 UDP run (no VPN: client to the exit's namespace over
    the veth) lost at its receiver: the baseline for :class:`UdpLosses` (ADR 0069)."""

    receiver_socket: int
    receiver_sched: SchedShare | None = None

    def describe(self) -> str:
        text = f"{self.receiver_socket:,} at the server's socket (receive buffer full)"
        if self.receiver_sched is not None:
            text += f"; the iperf3 server {self.receiver_sched.describe()}"
        return text


def _underlay_udp(
    tunnel: Tunnel, seconds: float, receiver: int
) -> tuple[tuple[float, float], UnderlayLosses]:
    """iperf3 UDP over the underlay to the exit's namespace (``receiver``: its iperf3
    server's pid), and what its socket lost."""
    topo = tunnel.topo
    errors0 = udp_receive_errors(topo.run("exit", ["cat", "/proc/net/snmp"]).stdout)
    sched0 = process_schedstat(receiver)
    started = time.monotonic()
    udp = _iperf_udp(tunnel.client_run, tunnel.exit_addr, seconds)
    elapsed = time.monotonic() - started
    sched1 = process_schedstat(receiver)
    errors1 = udp_receive_errors(topo.run("exit", ["cat", "/proc/net/snmp"]).stdout)
    share = None
    if sched0 is not None and sched1 is not None:
        share = sched_share(sched0, sched1, elapsed)
    return udp, UnderlayLosses(errors1 - errors0, share)


def _loss_counters(tunnel: Tunnel) -> tuple[int, int, int]:
    topo = tunnel.topo
    client = tunnel.status("client")
    link = json.loads(
        topo.run("client", ["ip", "-j", "-s", "link", "show", client["device"]]).stdout
    )
    snmp = topo.run("server", ["cat", "/proc/net/snmp"]).stdout
    return link[0]["stats64"]["tx"]["dropped"], client["dropped"], udp_receive_errors(snmp)


def _counted_udp(
    tunnel: Tunnel, seconds: float, receiver: int | None = None
) -> tuple[tuple[float, float], UdpLosses]:
    """iperf3 UDP through the tunnel, where its datagrams were lost, and (``receiver``:
    the iperf3 server's pid) how long the server waited for a CPU meanwhile."""
    before = _loss_counters(tunnel)
    sched0 = process_schedstat(receiver) if receiver is not None else None
    started = time.monotonic()
    udp = _iperf_udp(tunnel.client_run, tunnel.server, seconds)
    elapsed = time.monotonic() - started
    sched1 = process_schedstat(receiver) if receiver is not None else None
    after = _loss_counters(tunnel)
    ring, node, socket_ = (b - a for a, b in zip(before, after, strict=True))
    share = None
    if sched0 is not None and sched1 is not None:
        share = sched_share(sched0, sched1, elapsed)
    return udp, UdpLosses(ring, node, socket_, receiver_sched=share)


@dataclass(frozen=True, slots=True)
class TunFigures:
    tcp_mbit: float
    udp: tuple[float, float]
    """(packets/s, Mbit/s) of iperf3 UDP 1400 B."""
    ping_p99_ms: float
    underlay_tcp_mbit: float
    underlay_udp: tuple[float, float]
    offloads: str
    udp_losses: UdpLosses | None = None
    """Where the tunnel's UDP run lost datagrams (None when not counted)."""
    underlay_udp_losses: UnderlayLosses | None = None
    """The same for the underlay run: what its receiver's socket lost (ADR 0069)."""


@dataclass(frozen=True, slots=True)
class Tunnel:
    """A running ``vpn up`` client and exit in their namespaces (:func:`vpn_tunnel`)."""

    topo: Any
    """The :class:`~accessfabric.sim.Topology` (hosts ``client``, ``exit``, ``server``)."""
    server: str
    """The server's address behind the exit (routed through the tunnel)."""
    exit_addr: str
    """The exit's underlay address on the client's link (not through the tunnel)."""
    client_run: list[str]
    """Prefix that runs a command in the client's namespace."""
    exit_log: Path
    configs: dict[str, Path]
    """The node config of ``client`` and ``exit``."""

    def status(self, host: str) -> dict[str, Any]:
        """The VPN's counters of ``host`` (``client`` or ``exit``): ``status --json``."""
        done = self.topo.run(
            host,
            [sys.executable, "-m", "accessfabric", "status", "--json", "--config",
             str(self.configs[host])],
        )  # fmt: skip
        row: dict[str, Any] = json.loads(done.stdout)["vpn"][0]
        return row

    def offloads(self) -> str:
        """What the exit's kernel took (its start-up log line), ``?`` when not found."""
        return next(
            (line.split("offloads=")[1].split()[0]
             for line in self.exit_log.read_text().splitlines() if "offloads=" in line),
            "?",
        )  # fmt: skip


@contextlib.contextmanager
def vpn_tunnel(flags: Sequence[str] = (), prefix: str = "afb") -> Iterator[Tunnel]:
    """Namespaces client -- exit -- server, ``vpn up`` exit and client (``flags`` go to
    both), one fabric hop over TCP+TLS; yields once a ping crosses the tunnel.  Root."""
    from accessfabric.sim import Topology

    command = [sys.executable, "-m", "accessfabric"]
    with tempfile.TemporaryDirectory() as tmp, Topology(prefix=prefix) as topo:
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
            f'address = "{exit_addr}:7443"\n'
            f'[allow]\nvpn = ["{ids["client"].node_id}"]\n'  # default deny: the client only
        )
        (work / "client.toml").write_text(
            f'key_path = "{work}/client.key"\ndrain_timeout = 1\n'
            f'[[peers]]\nnode_id = "{ids["exit"].node_id}"\n'
            f'endpoints = ["tcp://{exit_addr}:7443"]\nconnect = "always"\nservices = ["vpn"]\n'
        )
        exit_log = work / "exit.log"
        with exit_log.open("wb") as log_file:
            topo.popen(
                "exit", [*command, "vpn", "up", "--exit", "--config", f"{work}/exit.toml",
                         "--address", "10.99.0.1/24", "--forwarding", *flags],
                stdout=log_file, stderr=log_file,
            )  # fmt: skip
        time.sleep(2.0)
        quiet = subprocess.DEVNULL
        topo.popen(
            "client", [*command, "vpn", "up", "--config", f"{work}/client.toml",
                       "--address", "10.99.0.2/24", "--route", f"{server}/32", *flags],
            stdout=quiet, stderr=quiet,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while topo.run("client", ["ping", "-c1", "-W1", server], check=False).returncode:
            if time.monotonic() > deadline:
                raise RuntimeError("the tunnel did not come up")
        configs = {name: work / f"{name}.toml" for name in ("client", "exit")}
        client_run = ["ip", "netns", "exec", topo.ns("client")]
        yield Tunnel(topo, server, exit_addr, client_run, exit_log, configs)


def _tun_vpn(seconds: float, offload: bool = True) -> TunFigures:
    """iperf3 TCP and UDP through ``vpn up`` (one fabric hop) and over the veth underlay."""
    with vpn_tunnel([] if offload else ["--no-offload"]) as tunnel:
        quiet = subprocess.DEVNULL
        receiver = tunnel.topo.popen("server", ["iperf3", "-s"], stdout=quiet, stderr=quiet)
        tunnel.topo.popen("server", ["iperf3", "-s", "-p", "5202"], stdout=quiet, stderr=quiet)
        underlay = tunnel.topo.popen("exit", ["iperf3", "-s"], stdout=quiet, stderr=quiet)
        tunnel.topo.popen("exit", ["iperf3", "-s", "-p", "5202"], stdout=quiet, stderr=quiet)
        time.sleep(0.5)
        run, server, exit_addr = tunnel.client_run, tunnel.server, tunnel.exit_addr
        tcp_mbit = _iperf_tcp(run, server, seconds)
        underlay_tcp_mbit = _iperf_tcp(run, exit_addr, seconds)
        udp, losses = _counted_udp(tunnel, seconds, receiver.pid)  # `ip netns exec` execs
        underlay_udp, underlay_losses = _underlay_udp(tunnel, seconds, underlay.pid)
        return TunFigures(
            tcp_mbit=tcp_mbit,
            underlay_tcp_mbit=underlay_tcp_mbit,
            udp=udp,
            underlay_udp=underlay_udp,
            ping_p99_ms=_ping_p99_under_tcp(run, server, seconds),
            offloads=tunnel.offloads(),
            udp_losses=losses,
            underlay_udp_losses=underlay_losses,
        )


def _run(main: Coroutine[Any, Any, _T]) -> _T:
    """On uvloop when installed (what ``node run`` uses), else asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    result: _T = uvloop.run(main)
    return result


def run(quick: bool) -> BenchReport:
    report = BenchReport("vpn")
    seconds = 3.0 if quick else 8.0
    pps, mbps, dropped = _run(_fabric_vpn(seconds, shards=2))
    bulk = _run(_fabric_bulk(seconds))
    report.add(
        BenchResult(
            metric="fabric VPN 1400 B packets Mbit/s", value=mbps, unit="Mbit/s",
            baseline_metric="fabric 64 KiB stream writes Mbit/s", baseline_value=bulk,
        )
    )  # fmt: skip
    report.add(
        BenchResult(
            metric="fabric VPN 1400 B packets/s", value=pps, unit="packets/s",
            baseline_metric="target 1 Gbit/s of 1400 B packets", baseline_value=1e9 / 8 / PACKET,
        )
    )  # fmt: skip
    report.notes["fabric"] = (
        f"both nodes in one process on one core, one TLS session, {dropped} packets dropped "
        "at full outboxes; counted where the exit writes its TUN"
    )
    reason = tun_unavailable_reason()
    if reason is None:
        on = _tun_vpn(seconds, offload=True)
        off = _tun_vpn(seconds, offload=False)
        report.add(
            BenchResult(
                metric="TUN VPN offloads on, iperf3 TCP Mbit/s", value=on.tcp_mbit,
                unit="Mbit/s", baseline_metric="iperf3 TCP over the veth underlay",
                baseline_value=on.underlay_tcp_mbit,
            )
        )  # fmt: skip
        report.add(
            BenchResult(
                metric="TUN VPN offloads off, iperf3 TCP Mbit/s", value=off.tcp_mbit,
                unit="Mbit/s", baseline_metric="iperf3 TCP over the veth underlay",
                baseline_value=off.underlay_tcp_mbit,
            )
        )  # fmt: skip
        for label, figures in (("on", on), ("off", off)):
            report.add(
                BenchResult(
                    metric=f"TUN VPN offloads {label}, iperf3 UDP 1400 B Mbit/s",
                    value=figures.udp[1], unit="Mbit/s",
                    baseline_metric="iperf3 UDP over the veth underlay",
                    baseline_value=figures.underlay_udp[1],
                )
            )  # fmt: skip
        report.add(
            BenchResult(
                metric="TUN VPN offloads on, iperf3 UDP packets/s", value=on.udp[0],
                unit="packets/s", baseline_metric="underlay packets/s",
                baseline_value=on.underlay_udp[0],
            )
        )  # fmt: skip
        report.add(
            BenchResult(
                metric="TUN VPN offloads on, ping p99 under iperf3 TCP", value=on.ping_p99_ms,
                unit="ms", baseline_metric="target", baseline_value=5.0,
            )
        )  # fmt: skip
        report.notes["tun"] = (
            f"client and exit are separate processes (2 cores shared with iperf3); "
            f"offloads the kernel took: {on.offloads}"
        )
        for label, figures in (("on", on), ("off", off)):
            if figures.udp_losses is not None:
                report.notes[f"udp_lost_offloads_{label}"] = figures.udp_losses.describe()
            if figures.underlay_udp_losses is not None:
                report.notes[f"udp_lost_underlay_{label}"] = figures.underlay_udp_losses.describe()
    else:
        report.notes["tun"] = f"skipped: {reason}"
    report.notes["machine"] = f"{os.cpu_count()} CPU, CPython {sys.version.split()[0]}"
    return report
