"""A VPN between namespaces for tests: client -> (fabric over veth) -> exit -> server.

:func:`vpn_lab` starts ``vpn up`` exit and client processes with the given extra
arguments (``--no-offload`` on either side, ``--queues``) and waits for a ping through
the tunnel.  The helpers move a file over TCP (sha256 at both ends), ask a tiny UDP DNS
responder, and read ``accessfabric status`` of a node.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accessfabric.sim import Topology
from tests.services.netns_nodes import (
    COMMAND,
    env,
    keygen,
    peer_table,
    require_netns_and_tun,
    start,
    wait_port,
    wait_until,
    write_config,
)

FABRIC_PORT = 7443
HELPERS = Path(__file__).with_name("vpn_lab_tools.py")


@dataclass(frozen=True, slots=True)
class VpnLab:
    topo: Topology
    server: str
    configs: dict[str, Path]
    logs: dict[str, Path]

    def status(self, host: str) -> dict[str, Any]:
        done = self.topo.run(
            host, [*COMMAND, "status", "--json", "--config", str(self.configs[host])]
        )
        rows: list[dict[str, Any]] = json.loads(done.stdout)["vpn"]
        return rows[0]

    def tool(self, host: str, *argv: str) -> subprocess.Popen[bytes]:
        return self.topo.popen(
            host, [sys.executable, str(HELPERS), *argv], stdout=subprocess.PIPE, env=env()
        )

    def send_file(self, sender: str, receiver: str, path: Path, port: int) -> str:
        """Move ``path`` over TCP ``sender`` -> ``receiver`` (one of them is the server);
        returns the receiver's sha256."""
        if receiver == "server":
            sink = self.tool(receiver, "sink", self.server, str(port))
            wait_port(self.topo, receiver, self.server, port)
            source = self.tool(sender, "send", self.server, str(port), str(path))
        else:
            source = self.tool(sender, "serve-file", self.server, str(port), str(path))
            wait_port(self.topo, sender, self.server, port)
            sink = self.tool(receiver, "fetch", self.server, str(port))
        out, _ = sink.communicate(timeout=120)
        source.wait(timeout=30)
        return out.decode().strip()

    def logs_text(self) -> str:
        return "\n".join(f"--- {h}\n{p.read_text()}" for h, p in self.logs.items())


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def vpn_lab(
    tmp_path: Path, exit_args: tuple[str, ...] = (), client_args: tuple[str, ...] = ()
) -> Iterator[VpnLab]:
    require_netns_and_tun()
    with Topology(prefix="afo") as topo:
        for host in ("client", "exit", "server"):
            topo.add_host(host)
        topo.link("client", "exit")
        topo.link("exit", "server")
        topo.route("server", "10.99.0.0/24", via="exit")
        server = topo.host_addr("server", "exit")
        exit_addr = topo.host_addr("exit", "client")
        exit_id = keygen(tmp_path / "exit.key")
        keygen(tmp_path / "client.key")
        configs = {
            "exit": write_config(
                tmp_path / "exit.toml", tmp_path / "exit.key", f"{exit_addr}:{FABRIC_PORT}"
            ),
            "client": write_config(
                tmp_path / "client.toml",
                tmp_path / "client.key",
                peer=peer_table(exit_id, f"tcp://{exit_addr}:{FABRIC_PORT}", ["vpn"]),
            ),
        }
        logs = {host: tmp_path / f"{host}.log" for host in configs}
        start(
            topo, "exit",
            ["vpn", "up", "--exit", "--config", str(configs["exit"]), "--address",
             "10.99.0.1/24", "--forwarding", *exit_args],
            logs["exit"],
        )  # fmt: skip
        wait_port(topo, "exit", exit_addr, FABRIC_PORT)
        start(
            topo, "client",
            ["vpn", "up", "--config", str(configs["client"]), "--address", "10.99.0.2/24",
             "--route", f"{server}/32", *client_args],
            logs["client"],
        )  # fmt: skip
        lab = VpnLab(topo, server, configs, logs)

        def tunnel_up() -> bool:
            ping = ["ping", "-c", "1", "-W", "1", server]
            return topo.run("client", ping, check=False).returncode == 0

        try:
            wait_until(tunnel_up, 20, "a ping through the tunnel")
        except AssertionError:
            raise AssertionError(lab.logs_text()) from None
        yield lab
