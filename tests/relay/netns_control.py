"""A real control plane and five ``node run`` processes in network namespaces.

``ctl`` runs ``accessfabric control serve`` on the SQLite data directory that
``control init`` made; it has a link to every node and nothing else.  phone, entry,
relaya, relayb and home enroll with tokens, heartbeat, and keep their data-plane
sessions up as static peers (phone -> entry -> relaya | relayb -> home), whose RTTs
the planner turns into routes.  home hosts the service ``web`` (a TCP echo server in
its namespace); phone forwards ``127.0.0.1:FORWARD_PORT`` to it through route leases.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from accessfabric.identity.keys import NodeKey
from accessfabric.sim import Topology
from tests.relay.netns_fabric import Proc

COMMAND = [sys.executable, "-m", "accessfabric"]
REPO = Path(__file__).resolve().parents[2]
FABRIC_PORT = 7443
CONTROL_PORT = 8600
ECHO_PORT = 9000
FORWARD_PORT = 9100
SERVICE = "web"
HOSTS = ("phone", "entry", "relaya", "relayb", "home")
LINKS = (("phone", "entry"), ("entry", "relaya"), ("entry", "relayb"),
         ("relaya", "home"), ("relayb", "home"))  # fmt: skip
PEERS = {"phone": ["entry"], "entry": ["relaya", "relayb"], "relaya": ["home"],
         "relayb": ["home"]}  # fmt: skip
LISTEN_TOWARDS = {"entry": ["phone"], "relaya": ["entry"], "relayb": ["entry"],
                  "home": ["relaya", "relayb"]}  # fmt: skip
ROLES = {"phone": "mobile-edge", "entry": "entry", "relaya": "relay", "relayb": "relay",
         "home": "service-host"}  # fmt: skip


def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("ACCESSFABRIC_")}
    out["PYTHONUNBUFFERED"] = "1"
    return out


class JsonLines(Proc):
    """A process that speaks one JSON object per line on stdin/stdout."""

    def ready(self, timeout: float = 20.0) -> None:
        assert self.next(timeout).get("event") == "ready"

    def ask(self, timeout: float = 10.0, **command: Any) -> dict[str, Any]:
        assert self.popen.stdin is not None
        self.popen.stdin.write(json.dumps(command).encode() + b"\n")
        self.popen.stdin.flush()
        return self.next(timeout)


class ControlFabric:
    """The control plane and ``hosts`` as nodes of tenant acme (with ``roles``); a
    subclass changes the topology (:meth:`add_links`) and the node configs (:meth:`config`)."""

    hosts: tuple[str, ...] = HOSTS
    roles: dict[str, str] = ROLES
    client_host = "phone"

    def __init__(self, topo: Topology, workdir: Path, *, route_lease_ttl: float) -> None:
        self.topo = topo
        self.workdir = workdir
        self.route_lease_ttl = route_lease_ttl
        self.data = workdir / "control-data"
        self.nodes: dict[str, subprocess.Popen[bytes]] = {}
        self.control: subprocess.Popen[bytes] | None = None
        self.control_starts = 0
        topo.add_host("ctl")
        for host in self.hosts:
            topo.add_host(host)
            topo.link("ctl", host)
        self.add_links()
        self.keys = {host: NodeKey.generate() for host in self.hosts}
        for host, key in self.keys.items():
            key.save(workdir / f"{host}.key")
        self.ids = {host: key.node_id for host, key in self.keys.items()}
        self.authority = self.admin_token = ""

    def add_links(self) -> None:
        """The data-plane links (each node also has one to ``ctl``)."""
        for a, b in LINKS:
            self.topo.link(a, b)

    def init_control(self) -> None:
        """``control init``: the authority key, the SQLite store and an admin token."""
        done = subprocess.run(
            [*COMMAND, "control", "init", "--data", str(self.data)],
            capture_output=True, text=True, env=env(), check=True,
        )  # fmt: skip
        lines = done.stdout.splitlines()
        self.authority = lines[0].split(": ", 1)[1].strip()
        self.admin_token = lines[1].split(": ", 1)[1].strip()

    # ------------------------------------------------------------ control plane

    def control_url(self, host: str) -> str:
        return f"https://{self.topo.host_addr('ctl', host)}:{CONTROL_PORT}"  # ADR 0017

    def start_control(self) -> None:
        """Start ``control serve`` on the data directory; :meth:`wait_control` waits for it."""
        self.control_starts += 1
        log = (self.workdir / f"control-{self.control_starts}.log").open("wb")
        argv = [
            *COMMAND, "control", "serve", "--data", str(self.data),
            "--listen", f"0.0.0.0:{CONTROL_PORT}", "--heartbeat-interval", "1s",
            "--route-lease-ttl", f"{self.route_lease_ttl}s",
        ]  # fmt: skip
        self.control = self.topo.popen("ctl", argv, stdout=subprocess.PIPE, stderr=log, env=env())

    def wait_control(self) -> None:
        assert self.control is not None and self.control.stdout is not None
        line = self.control.stdout.readline().decode()
        assert line.startswith("control plane serving"), line

    def stop_control(self, signum: signal.Signals) -> float:
        """Send ``signum`` to ``control serve``, wait for it to end; the time it was sent."""
        assert self.control is not None
        at = time.time()
        os.killpg(self.control.pid, signum)
        self.control.wait(10)
        self.control = None
        return at

    def tokens(self) -> dict[str, str]:
        """One enrollment token per node: ``control token create`` for each, in one process."""
        script = (
            "import contextlib, io, json, sys\n"
            "from accessfabric.control.server.cli import main\n"
            "out = {}\n"
            "for host, argv in json.loads(sys.argv[1]).items():\n"
            "    text = io.StringIO()\n"
            "    with contextlib.redirect_stdout(text):\n"
            "        assert main(argv) == 0, host\n"
            "    out[host] = text.getvalue().strip()\n"
            "print(json.dumps(out))\n"
        )
        server = [
            "--server", f"https://127.0.0.1:{CONTROL_PORT}", "--admin-token", self.admin_token,
            "--authority-key", self.authority,
        ]  # fmt: skip
        create = ["control", "token", "create", "--tenant", "acme"]
        commands = {host: [*create, "--roles", self.roles[host], *server] for host in self.hosts}
        # default deny: home serves the tenant's nodes only once a grant admits them
        grant = ["control", "grant", "create", "--tenant", "acme", "--services", SERVICE]
        commands["grant"] = [*grant, *server]
        done = self.topo.run("ctl", [sys.executable, "-c", script, json.dumps(commands)])
        tokens: dict[str, str] = json.loads(done.stdout)
        del tokens["grant"]
        return tokens

    # ------------------------------------------------------------ nodes

    def admin_socket(self, host: str) -> Path:
        return self.workdir / f"{host}.sock"

    def state_dir(self, host: str) -> Path:
        return self.workdir / f"{host}.control"

    def config_head(self, host: str) -> str:
        """The start of ``host``'s node.toml: key, role, admin socket."""
        return (
            f'key_path = "{host}.key"\nroles = ["{self.roles[host]}"]\n'
            f'admin_socket = "{self.admin_socket(host)}"\ndrain_timeout = 1\n'
        )

    def write_config(self, host: str, text: str, token: str) -> Path:
        """``text`` and the ``[control]`` table as ``host``'s node.toml."""
        text += (
            f'[control]\nurl = "{self.control_url(host)}"\n'
            f'authority_key = "{self.authority}"\ntoken = "{token}"\n'
            f'state_dir = "{self.state_dir(host)}"\nbackoff_max = 1\n'
        )
        path = self.workdir / f"{host}.toml"
        path.write_text(text)
        return path

    def config(self, host: str, token: str) -> Path:
        topo = self.topo
        text = self.config_head(host)
        for peer in LISTEN_TOWARDS.get(host, []):
            address = topo.host_addr(host, peer)
            text += f'[[listen]]\ncarrier = "tcp"\naddress = "{address}:{FABRIC_PORT}"\n'
        for peer in PEERS.get(host, []):
            url = f"tcp://{topo.host_addr(peer, host)}:{FABRIC_PORT}"
            text += (
                f'[[peers]]\nnode_id = "{self.ids[peer]}"\nname = "{peer}"\n'
                f'endpoints = ["{url}"]\nconnect = "always"\n'
            )
        if host == "home":
            text += f'[[services]]\nname = "{SERVICE}"\ntarget = "127.0.0.1:{ECHO_PORT}"\n'
        if host == "phone":
            text += f'[[forwards]]\nlisten = "127.0.0.1:{FORWARD_PORT}"\nservice = "{SERVICE}"\n'
        return self.write_config(host, text, token)

    def start_nodes(self) -> None:
        tokens = self.tokens()
        for host in self.hosts:
            config = self.config(host, tokens[host])
            log = (self.workdir / f"{host}.log").open("wb")
            self.nodes[host] = self.topo.popen(
                host, [*COMMAND, "node", "run", "--config", str(config)],
                stdout=log, stderr=log, env=env(),
            )  # fmt: skip

    def log(self, host: str) -> str:
        return (self.workdir / f"{host}.log").read_text(errors="replace")

    def status(self, host: str) -> dict[str, Any]:
        """``accessfabric status --json`` of a node."""
        done = subprocess.run(
            [*COMMAND, "status", "--json", "--socket", str(self.admin_socket(host))],
            capture_output=True, text=True, env=env(), timeout=20,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        status: dict[str, Any] = json.loads(done.stdout)
        return status

    def route_document(self, host: str) -> dict[str, Any]:
        """``host``'s cached route leases to the service (the node's own cache file)."""
        path = self.state_dir(host) / "routes" / f"{SERVICE}.reliable.json"
        try:
            document: dict[str, Any] = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):  # not there yet, or being replaced
            return {}
        return document

    def lease_expiry(self, host: str) -> float:
        """When the longest-lived of ``host``'s cached route leases expires (Unix time)."""
        routes = self.route_document(host).get("routes", [])
        return max((r["expires_ms"] for r in routes), default=0) / 1000

    # ------------------------------------------------------------ TCP ends

    def driver(self, host: str, mode: str, address: str) -> JsonLines:
        """Start ``tcp_driver`` (:meth:`JsonLines.ready`: until it is ready)."""
        popen = self.topo.popen(
            host, [sys.executable, "-m", "tests.relay.tcp_driver", mode, address],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=(self.workdir / f"{host}-{mode}.log").open("wb"), env=env(), cwd=str(REPO),
        )  # fmt: skip
        return JsonLines(popen)

    def start(self) -> JsonLines:
        """Control plane, echo server, nodes and the client host's TCP client; the client."""
        self.init_control()
        self.start_control()
        echo = self.driver("home", "serve", f"127.0.0.1:{ECHO_PORT}")
        client = self.driver(self.client_host, "client", f"127.0.0.1:{FORWARD_PORT}")
        self.wait_control()
        self.start_nodes()
        echo.ready()
        client.ready()
        return client
