"""The VPN between namespaces: client -> (fabric over veth) -> exit -> server.

ping and an iperf3 TCP flow from the client's tunnel address to the server through the
exit; ping latency while the iperf3 flow runs (the flow turns bulk, ping is interactive).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from accessfabric.sim import Topology
from tests.services.netns_nodes import (
    keygen,
    peer_table,
    require_netns_and_tun,
    start,
    wait_port,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.netns
FABRIC_PORT = 7443


@pytest.fixture
def vpn(tmp_path: Path) -> Iterator[tuple[Topology, str]]:
    require_netns_and_tun()
    if shutil.which("iperf3") is None:
        pytest.skip("iperf3 not installed (Debian package iperf3)")
    with Topology(prefix="afv") as topo:
        for host in ("client", "exit", "server"):
            topo.add_host(host)
        topo.link("client", "exit")
        topo.link("exit", "server")
        topo.route("server", "10.99.0.0/24", via="exit")
        server = topo.host_addr("server", "exit")
        exit_addr = topo.host_addr("exit", "client")
        exit_id = keygen(tmp_path / "exit.key")
        client_id = keygen(tmp_path / "client.key")
        exit_cfg = write_config(
            tmp_path / "exit.toml", tmp_path / "exit.key", f"{exit_addr}:{FABRIC_PORT}",
            f'[allow]\nvpn = ["{client_id}"]\n',  # default deny: the client (only)
        )  # fmt: skip
        peer = peer_table(exit_id, f"tcp://{exit_addr}:{FABRIC_PORT}", ["vpn"])
        client_cfg = write_config(tmp_path / "client.toml", tmp_path / "client.key", peer=peer)
        start(
            topo, "exit",
            ["vpn", "up", "--exit", "--config", str(exit_cfg), "--address", "10.99.0.1/24",
             "--forwarding"],
            tmp_path / "exit.log",
        )  # fmt: skip
        wait_port(topo, "exit", exit_addr, FABRIC_PORT)
        start(
            topo, "client",
            ["vpn", "up", "--config", str(client_cfg), "--address", "10.99.0.2/24",
             "--route", f"{server}/32"],
            tmp_path / "client.log",
        )  # fmt: skip

        def tunnel_up() -> bool:
            ping = ["ping", "-c", "1", "-W", "1", server]
            return topo.run("client", ping, check=False).returncode == 0

        try:
            wait_until(tunnel_up, 20, "a ping through the tunnel")
        except AssertionError:
            logs = [(tmp_path / f"{h}.log").read_text() for h in ("exit", "client")]
            raise AssertionError("\n".join(logs)) from None
        yield topo, server


def _ping_stats(output: str) -> tuple[float, float, float]:
    line = next(x for x in output.splitlines() if "min/avg/max" in x)
    low, avg, high = (float(v) for v in line.split("=")[1].split("/")[:3])
    return low, avg, high


def test_ping_and_iperf3_through_exit(vpn: tuple[Topology, str]) -> None:
    topo, server = vpn
    idle = topo.run("client", ["ping", "-c", "20", "-i", "0.05", server])
    idle_stats = _ping_stats(idle.stdout)
    iperf_server = topo.popen("server", ["iperf3", "-s", "-1"], stdout=subprocess.DEVNULL)
    wait_port(topo, "server", server, 5201)
    flow = topo.popen("client", ["iperf3", "-c", server, "-t", "4", "-J"], stdout=subprocess.PIPE)
    loaded = topo.run("client", ["ping", "-c", "40", "-i", "0.05", "-W", "2", server])
    out, _ = flow.communicate(timeout=30)
    iperf_server.wait(timeout=10)
    result = json.loads(out)
    mbit = result["end"]["sum_received"]["bits_per_second"] / 1e6
    loaded_stats = _ping_stats(loaded.stdout)
    print(
        f"\nvpn: iperf3 {mbit:.0f} Mbit/s; ping idle avg {idle_stats[1]:.2f} ms, "
        f"under bulk avg {loaded_stats[1]:.2f} ms max {loaded_stats[2]:.2f} ms"
    )
    assert mbit > 5
    # The TUN device's kernel queue is one FIFO for every flow before we can classify
    # anything: an occasional ping lost there while TCP fills it is expected.
    received = int(loaded.stdout.split(" received")[0].rsplit(" ", 1)[1])
    assert received >= 36
    assert loaded_stats[1] < 50  # interactive stays low while the bulk flow runs
