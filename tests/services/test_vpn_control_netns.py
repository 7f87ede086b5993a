"""``vpn up`` under a real control plane, in namespaces (issue 13, items 2 and 3).

ctl runs ``control serve``; exit runs ``vpn up --exit`` with a ``[[services]]`` ``web``
(an HTTP server on the server host); client runs ``vpn up`` with a ``[[forwards]]`` to
``web`` and no static peer: it finds the exit through the directory and reaches both
``vpn`` and ``web`` through route leases only.

* the exit registers exactly what its process serves — ``vpn`` and ``web`` — with the
  control plane (before: only ``web``, which ``vpn up`` did not serve);
* the client gets a route lease for ``vpn`` and pings the server through the tunnel;
* the client's ``[[forwards]]`` listener runs in the same ``vpn up`` process and carries an
  HTTP request to ``web`` on the exit (before: it silently never started).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from accessfabric.sim import Topology
from tests.services.netns_nodes import (
    COMMAND,
    env,
    require_netns_and_tun,
    start,
    wait_port,
    wait_until,
)

pytestmark = pytest.mark.netns
FABRIC_PORT = 7443
CONTROL_PORT = 8600
WEB_PORT = 8080
FORWARD_PORT = 9100


class Plane:
    """``control init`` + ``control serve`` in the ``ctl`` namespace."""

    def __init__(self, topo: Topology, workdir: Path) -> None:
        self.topo = topo
        data = workdir / "control-data"
        done = subprocess.run(
            [*COMMAND, "control", "init", "--data", str(data)],
            capture_output=True, text=True, env=env(), check=True,
        )  # fmt: skip
        lines = done.stdout.splitlines()
        self.authority = lines[0].split(": ", 1)[1].strip()
        self.admin_token = lines[1].split(": ", 1)[1].strip()
        argv = [
            *COMMAND, "control", "serve", "--data", str(data),
            "--listen", f"0.0.0.0:{CONTROL_PORT}", "--heartbeat-interval", "1s",
        ]  # fmt: skip
        log = (workdir / "control.log").open("wb")
        self.popen = topo.popen("ctl", argv, stdout=subprocess.PIPE, stderr=log, env=env())
        assert self.popen.stdout is not None
        line = self.popen.stdout.readline().decode()
        assert line.startswith("control plane serving"), line

    def url(self, host: str) -> str:
        return f"https://{self.topo.host_addr('ctl', host)}:{CONTROL_PORT}"  # ADR 0017

    def token(self, roles: str) -> str:
        argv = [
            *COMMAND, "control", "token", "create", "--tenant", "acme", "--roles", roles,
            "--server", f"https://127.0.0.1:{CONTROL_PORT}", "--admin-token", self.admin_token,
            "--authority-key", self.authority,
        ]  # fmt: skip
        return self.topo.run("ctl", argv).stdout.strip()

    def grant(self, services: str, roles: str) -> str:
        """``control grant create``: admit the tenant's nodes of ``roles`` to ``services``."""
        argv = [
            *COMMAND, "control", "grant", "create", "--tenant", "acme", "--services", services,
            "--roles", roles, "--server", f"https://127.0.0.1:{CONTROL_PORT}",
            "--admin-token", self.admin_token, "--authority-key", self.authority,
        ]  # fmt: skip
        return self.topo.run("ctl", argv).stdout.strip()

    def services(self) -> dict[str, set[str]]:
        """``GET /v1/admin/services``: service -> node ids of its replicas."""
        script = (  # over TLS, the certificate pinned through the authority key
            "import sys\n"
            "from accessfabric.control.kernel.api_tls import pinned_https_connection\n"
            "from accessfabric.control.kernel.authority_key import parse_authority_key\n"
            "c = pinned_https_connection('127.0.0.1', int(sys.argv[1]), "
            "parse_authority_key(sys.argv[3]), 5)\n"
            "c.request('GET', '/v1/admin/services', headers={'Authorization': "
            "'Bearer ' + sys.argv[2]})\n"
            "print(c.getresponse().read().decode())\n"
        )
        argv = [sys.executable, "-c", script, str(CONTROL_PORT), self.admin_token, self.authority]
        done = self.topo.run("ctl", argv)
        body: dict[str, Any] = json.loads(done.stdout)
        return {s["service"]: {r["node_id"] for r in s["replicas"]} for s in body["services"]}


def _config(path: Path, key: Path, plane: Plane, host: str, token: str, extra: str) -> Path:
    path.write_text(
        f'key_path = "{key}"\nadmin_socket = "{path.with_suffix(".sock")}"\n'
        f"drain_timeout = 1\n{extra}"
        f'[control]\nurl = "{plane.url(host)}"\nauthority_key = "{plane.authority}"\n'
        f'token = "{token}"\nstate_dir = "{path.with_suffix(".control")}"\nbackoff_max = 1\n'
    )
    return path


def _status(config: Path) -> dict[str, Any]:
    done = subprocess.run(
        [*COMMAND, "status", "--json", "--config", str(config)],
        capture_output=True, text=True, env=env(), timeout=20,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    status: dict[str, Any] = json.loads(done.stdout)
    return status


def _node_id(key: Path) -> str:
    done = subprocess.run(
        [*COMMAND, "keygen", "--out", str(key)], capture_output=True, text=True, env=env()
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_vpn_exit_registers_what_it_serves_and_the_client_reaches_it(tmp_path: Path) -> None:
    require_netns_and_tun()
    with Topology(prefix="afq") as topo:
        for host in ("ctl", "client", "exit", "server"):
            topo.add_host(host)
        topo.link("ctl", "client")
        topo.link("ctl", "exit")
        topo.link("client", "exit")
        topo.link("exit", "server")
        topo.route("server", "10.99.0.0/24", via="exit")
        server = topo.host_addr("server", "exit")
        exit_addr = topo.host_addr("exit", "client")
        plane = Plane(topo, tmp_path)
        plane.grant("vpn,web", "mobile-edge")  # default deny: the client's role may reach both
        exit_id = _node_id(tmp_path / "exit.key")
        client_id = _node_id(tmp_path / "client.key")
        web = topo.popen(
            "server", [sys.executable, "-m", "http.server", "--bind", server, str(WEB_PORT)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=str(tmp_path),
        )  # fmt: skip
        (tmp_path / "hello.txt").write_text("hello through the exit's web service\n")
        exit_cfg = _config(
            tmp_path / "exit.toml", tmp_path / "exit.key", plane, "exit",
            plane.token("entry,exit,service-host"),
            f'roles = ["entry", "exit", "service-host"]\n'
            f'[[listen]]\ncarrier = "tcp"\naddress = "{exit_addr}:{FABRIC_PORT}"\n'
            f'[[services]]\nname = "web"\ntarget = "{server}:{WEB_PORT}"\n',
        )  # fmt: skip
        client_cfg = _config(
            tmp_path / "client.toml", tmp_path / "client.key", plane, "client",
            plane.token("mobile-edge"),
            f'[[forwards]]\nlisten = "127.0.0.1:{FORWARD_PORT}"\nservice = "web"\n',
        )  # fmt: skip
        start(
            topo, "exit",
            ["vpn", "up", "--exit", "--config", str(exit_cfg), "--address", "10.99.0.1/24",
             "--forwarding"],
            tmp_path / "exit.log",
        )  # fmt: skip
        wait_port(topo, "exit", exit_addr, FABRIC_PORT)
        wait_port(topo, "server", server, WEB_PORT)
        start(
            topo, "client",
            ["vpn", "up", "--config", str(client_cfg), "--address", "10.99.0.2/24",
             "--route", f"{server}/32"],
            tmp_path / "client.log",
        )  # fmt: skip

        def logs() -> str:
            return "\n".join((tmp_path / f"{h}.log").read_text() for h in ("exit", "client"))

        try:
            # advertised == served: the exit is a replica of `vpn` and `web`, nothing else
            def registered() -> bool:
                return {s for s, nodes in plane.services().items() if exit_id in nodes} == {
                    "vpn",
                    "web",
                }

            wait_until(registered, 30, "the exit's vpn and web replicas")
            exit_status = _status(exit_cfg)
            served = {row["service"] for row in exit_status["services"]}
            served |= {"vpn"} if exit_status.get("vpn") else set()
            assert served == {"vpn", "web"}

            # the client reaches `vpn` on a route lease: a ping through the tunnel
            def tunnel_up() -> bool:
                ping = ["ping", "-c", "1", "-W", "1", server]
                return topo.run("client", ping, check=False).returncode == 0

            wait_until(tunnel_up, 45, "a ping through the tunnel")
            leases = _status(client_cfg)["leases"]
            assert any(row["service"] == "vpn" and row["kind"] == "route" for row in leases)

            # the client's [[forwards]] runs in the same process and reaches `web`
            curl = [
                "curl", "-sS", "--max-time", "5",
                f"http://127.0.0.1:{FORWARD_PORT}/hello.txt",
            ]  # fmt: skip
            done = topo.run("client", curl, check=False)
            assert done.stdout == "hello through the exit's web service\n", done.stderr
            # the client serves nothing, so it advertises nothing
            assert not any(client_id in nodes for nodes in plane.services().values())
        except AssertionError as error:
            raise AssertionError(f"{error}\n{logs()}") from None
        finally:
            web.terminate()
