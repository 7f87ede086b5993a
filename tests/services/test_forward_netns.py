"""Real clients and servers through ``node run`` with ``[[forwards]]`` between namespaces:
OpenSSH (sshd with a throw-away host key, key-based login as root) and iperf3."""

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
    write_config,
)

pytestmark = pytest.mark.netns
FABRIC_PORT = 7443
SSHD = "/usr/sbin/sshd"


@pytest.fixture
def forwards(tmp_path: Path) -> Iterator[Topology]:
    require_netns_and_tun()
    for tool in (SSHD, "ssh", "iperf3", "ssh-keygen"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (openssh-server, openssh-client, iperf3)")
    for name in ("host_key", "user_key"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / name)],
            check=True,
        )
    (tmp_path / "authorized_keys").write_text((tmp_path / "user_key.pub").read_text())
    (tmp_path / "sshd_config").write_text(
        f"ListenAddress 127.0.0.1:2222\nHostKey {tmp_path / 'host_key'}\n"
        f"AuthorizedKeysFile {tmp_path / 'authorized_keys'}\nStrictModes no\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nUsePAM no\n"
        f"PidFile {tmp_path / 'sshd.pid'}\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)
    with Topology(prefix="aff") as topo:
        topo.add_host("laptop")
        topo.add_host("home")
        topo.link("laptop", "home")
        home = topo.host_addr("home", "laptop")
        home_id = keygen(tmp_path / "home.key")
        laptop_id = keygen(tmp_path / "laptop.key")
        services = (  # default deny: the laptop (only) may reach them
            '[[services]]\nname = "ssh"\ntarget = "127.0.0.1:2222"\n'
            f'traffic_class = "interactive"\nallow = ["{laptop_id}"]\n'
            '[[services]]\nname = "iperf"\ntarget = "127.0.0.1:5201"\ntraffic_class = "bulk"\n'
            f'allow = ["{laptop_id}"]\n'
        )
        home_cfg = write_config(
            tmp_path / "home.toml", tmp_path / "home.key", f"{home}:{FABRIC_PORT}", services
        )
        forwards = (
            '[[forwards]]\nlisten = "127.0.0.1:12222"\nservice = "ssh"\n'
            '[[forwards]]\nlisten = "127.0.0.1:15201"\nservice = "iperf"\n'
        )
        peer = peer_table(home_id, f"tcp://{home}:{FABRIC_PORT}", ["ssh", "iperf"])
        laptop_cfg = write_config(
            tmp_path / "laptop.toml", tmp_path / "laptop.key", peer=forwards + peer
        )
        quiet = subprocess.DEVNULL
        topo.popen(
            "home",
            [SSHD, "-D", "-e", "-f", str(tmp_path / "sshd_config")],
            stdout=quiet,
            stderr=quiet,
        )
        topo.popen("home", ["iperf3", "-s"], stdout=quiet, stderr=quiet)
        start(topo, "home", ["node", "run", "--config", str(home_cfg)], tmp_path / "home.log")
        wait_port(topo, "home", home, FABRIC_PORT)
        wait_port(topo, "home", "127.0.0.1", 2222)
        start(topo, "laptop", ["node", "run", "--config", str(laptop_cfg)], tmp_path / "l.log")
        wait_port(topo, "laptop", "127.0.0.1", 12222)
        wait_port(topo, "laptop", "127.0.0.1", 15201)
        yield topo


def test_ssh_command_and_iperf3_through_forwards(forwards: Topology, tmp_path: Path) -> None:
    topo = forwards
    ssh = [
        "ssh", "-i", str(tmp_path / "user_key"), "-p", "12222",
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "BatchMode=yes", "root@127.0.0.1",
    ]  # fmt: skip
    done = topo.run("laptop", [*ssh, "echo through-the-fabric; uname -s"], timeout=30)
    assert done.stdout.split() == ["through-the-fabric", "Linux"]
    # stdin EOF (half-close) must reach the remote command and its output come back
    done = topo.run("laptop", [*ssh, "sha256sum"], input="x" * 100000, timeout=30)
    assert (
        done.stdout.split()[0]
        == (
            subprocess.run(
                ["sha256sum"], input="x" * 100000, capture_output=True, text=True
            ).stdout.split()[0]
        )
    )
    result = topo.run("laptop", ["iperf3", "-c", "127.0.0.1", "-p", "15201", "-t", "3", "-J"])
    mbit = json.loads(result.stdout)["end"]["sum_received"]["bits_per_second"] / 1e6
    reverse = topo.run(
        "laptop", ["iperf3", "-c", "127.0.0.1", "-p", "15201", "-t", "2", "-R", "-J"]
    )
    mbit_r = json.loads(reverse.stdout)["end"]["sum_received"]["bits_per_second"] / 1e6
    print(f"\nforward: iperf3 {mbit:.0f} Mbit/s up, {mbit_r:.0f} Mbit/s down (-R)")
    assert mbit > 10 and mbit_r > 10
