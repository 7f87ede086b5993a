"""NAT type and reachability, probed through a real nftables NAT (node/dialing/nat_probe.py).

Namespaces: ``inside`` (the probing node) — ``nat`` (a router masquerading everything
it sends toward ``outside``) — ``outside`` (two entries, on two addresses, each a real
``node run`` with a ``[nat] listen`` reflector).  ``masquerade`` keeps a flow's mapping
across destinations (endpoint-independent) and lets in only replies (port-restricted
filtering); ``masquerade random`` maps every flow to a random port (endpoint-dependent:
symmetric).  The probing node's heartbeat-facing ``status`` and ``accessfabric netcheck``
must say so; probed from the router itself there is no NAT.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from accessfabric.identity.keys import NodeKey
from accessfabric.sim import Topology, netns_unavailable_reason
from tests.relay import netns_control as nc

pytestmark = [pytest.mark.netns]

REFLECTOR_PORT = 3478
OUTSIDE_B = "198.18.200.2"
"""The second entry's address (a /32 on the outside host, routed by the router)."""


@pytest.fixture(autouse=True)
def _need_netns() -> None:
    reason = netns_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)


def _write_node(workdir: Path, name: str, body: str) -> Path:
    NodeKey.generate().save(workdir / f"{name}.key")
    path = workdir / f"{name}.toml"
    path.write_text(f'key_path = "{name}.key"\nadmin_socket = "{workdir / name}.sock"\n{body}')
    return path


def _status_host(workdir: Path, name: str) -> dict[str, Any] | None:
    done = subprocess.run(
        [*nc.COMMAND, "status", "--json", "--socket", str(workdir / f"{name}.sock")],
        capture_output=True, text=True, env=nc.env(), timeout=20,
    )  # fmt: skip
    if done.returncode != 0:
        return None
    host = json.loads(done.stdout).get("host")
    row = host[0] if isinstance(host, list) and host else host
    return row if isinstance(row, dict) else None


def _wait_for_log(path: Path, text: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in (path.read_text(errors="replace") if path.exists() else ""):
        assert time.monotonic() < deadline, f"{path.name}: no {text!r}"
        time.sleep(0.05)


def _wait_for_nat_type(workdir: Path, name: str, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        row = _status_host(workdir, name)
        if row is not None and row.get("nat_mapped"):
            return row
        assert time.monotonic() < deadline, f"no NAT probe result: {row}"
        time.sleep(0.2)


@pytest.mark.parametrize(("mode", "expected", "mapping"), [
    ("masquerade", "port_restricted", "endpoint-independent"),
    ("masquerade random", "symmetric", "endpoint-dependent"),
])  # fmt: skip
def test_nat_type_through_nftables(tmp_path: Path, mode: str, expected: str, mapping: str) -> None:
    with Topology(prefix="afn") as topo:
        topo.add_host("inside")
        topo.add_host("nat", forwarding=True)
        topo.add_host("outside")
        topo.link("inside", "nat")
        topo.link("nat", "outside")
        topo.route("inside", "default", via="nat")
        outside_a = topo.host_addr("outside", "nat")
        out_dev = topo.host_dev("nat", "outside")
        topo.run("outside", ["ip", "addr", "add", f"{OUTSIDE_B}/32", "dev", out_dev])
        topo.route("nat", f"{OUTSIDE_B}/32", via="outside")
        topo.run(
            "nat", ["nft", "-f", "-"],
            input=(
                "table ip afnat {\n chain post {\n  type nat hook postrouting priority 100;\n"
                f'  oifname "{out_dev}" {mode}\n }}\n}}\n'
            ),
        )  # fmt: skip
        for name, address in (("entrya", outside_a), ("entryb", OUTSIDE_B)):
            config = _write_node(
                tmp_path, name, f'roles = ["entry"]\n[nat]\nlisten = "{address}:{REFLECTOR_PORT}"\n'
            )
            log = (tmp_path / f"{name}.log").open("wb")
            topo.popen("outside", [*nc.COMMAND, "node", "run", "--config", str(config)],
                       stdout=log, stderr=log, env=nc.env())  # fmt: skip
        for name in ("entrya", "entryb"):  # reflectors up before the laptop's first probe
            _wait_for_log(tmp_path / f"{name}.log", "nat reflector")
        reflectors = (
            f'reflectors = ["{outside_a}:{REFLECTOR_PORT}", "{OUTSIDE_B}:{REFLECTOR_PORT}"]'
        )
        body = f'roles = ["mobile-edge"]\n[nat]\n{reflectors}\ninterval = 2\ntimeout = 0.6\n'
        config = _write_node(tmp_path, "laptop", body)
        log = (tmp_path / "laptop.log").open("wb")
        topo.popen("inside", [*nc.COMMAND, "node", "run", "--config", str(config)],
                   stdout=log, stderr=log, env=nc.env())  # fmt: skip
        row = _wait_for_nat_type(tmp_path, "laptop")
        assert row["nat_type"] == expected, (row, (tmp_path / "laptop.log").read_text())
        assert row["nat_mapping"] == mapping
        assert row["nat_reachable"] is False  # conntrack lets in only replies
        assert row["nat_mapped"].startswith(topo.host_addr("nat", "outside") + ":")
        # netcheck from the same namespace prints the NAT type line
        done = topo.run("inside", [*nc.COMMAND, "netcheck", "--config", str(config)], check=False)
        assert f"NAT: {expected} (mapping {mapping}, inbound NOT reachable" in done.stdout, done
        if mode == "masquerade":  # the router itself: its own address, no NAT
            done = topo.run(
                "nat", [*nc.COMMAND, "netcheck", "--json", "--config", str(config)], check=False
            )
            report = json.loads(done.stdout)
            assert report["nat_type"] == "none", report
            assert report["nat_reachable"] is True, report
