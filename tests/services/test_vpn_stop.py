"""``vpn up`` stops at once on Ctrl-C: its idle tunnel streams do not hold up the drain."""

from __future__ import annotations

import datetime
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from accessfabric.sim import Topology
from tests.services.netns_nodes import (
    env,
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


def test_vpn_up_exits_within_a_second_of_ctrl_c(tmp_path: Path) -> None:
    require_netns_and_tun()
    with Topology(prefix="afs") as topo:
        topo.add_host("client")
        topo.add_host("exit")
        topo.link("client", "exit")
        exit_addr = topo.host_addr("exit", "client")
        exit_id = keygen(tmp_path / "exit.key")
        client_id = keygen(tmp_path / "client.key")
        exit_cfg = write_config(
            tmp_path / "exit.toml",
            tmp_path / "exit.key",
            f"{exit_addr}:{FABRIC_PORT}",
            f'[allow]\nvpn = ["{client_id}"]\n',  # default deny: the client only
        )
        peer = peer_table(exit_id, f"tcp://{exit_addr}:{FABRIC_PORT}", ["vpn"])
        client_cfg = write_config(tmp_path / "client.toml", tmp_path / "client.key", peer=peer)
        exit_proc = start(
            topo, "exit", ["vpn", "up", "--exit", "--config", str(exit_cfg),
                           "--address", "10.99.0.1/24", "--json"], tmp_path / "exit.log",
        )  # fmt: skip
        wait_port(topo, "exit", exit_addr, FABRIC_PORT)
        client = start(
            topo, "client", ["vpn", "up", "--config", str(client_cfg),
                             "--address", "10.99.0.2/24"], tmp_path / "client.log",
        )  # fmt: skip
        try:

            def tunnel_up() -> bool:  # opens the tunnel's stream, which then stays idle
                ping = ["ping", "-c", "1", "-W", "1", "10.99.0.1"]
                return topo.run("client", ping, check=False).returncode == 0

            wait_until(tunnel_up, 20, "a ping through the tunnel")
            started = time.monotonic()
            client.send_signal(signal.SIGINT)
            assert client.wait(15) == 0
            elapsed = time.monotonic() - started
            log = (tmp_path / "client.log").read_text()
            assert "drained=True" in log, log
            assert elapsed < 1.0, f"vpn up took {elapsed:.2f} s to stop\n{log}"
            exit_proc.send_signal(signal.SIGINT)
            assert exit_proc.wait(15) == 0
            # --json: one JSON object per line, RFC 3339 UTC timestamps
            lines = [json.loads(line) for line in (tmp_path / "exit.log").read_text().splitlines()]
            assert {"node starting", "listening"} <= {line.get("event") for line in lines}, lines
            for line in lines:
                datetime.datetime.strptime(line["ts"], "%Y-%m-%dT%H:%M:%S.%fZ")
        finally:
            for process in (client, exit_proc):
                if process.poll() is None:
                    process.kill()
                    process.wait()


def test_vpn_up_names_a_device_in_use(tmp_path: Path) -> None:
    require_netns_and_tun()
    keygen(tmp_path / "n.key")
    config = write_config(tmp_path / "n.toml", tmp_path / "n.key")
    holder = (
        "from accessfabric.services.tun import open_tun; import sys, time; "
        "open_tun('afbusy0'); print('held', flush=True); time.sleep(60)"
    )
    script = (
        f'{sys.executable} -c "{holder}" > {tmp_path}/held & '
        f"until grep -q held {tmp_path}/held; do sleep 0.1; done; "
        f"{sys.executable} -m accessfabric vpn up --config {config} --dev afbusy0; "
        'code=$?; kill %1; wait; exit "$code"'
    )
    done = subprocess.run(
        ["unshare", "--net", "bash", "-c", script], capture_output=True, text=True,
        timeout=60, env=env(),
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "device 'afbusy0' exists and is in use" in last, done.stderr
    assert "Traceback" not in done.stderr
