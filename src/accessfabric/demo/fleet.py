"""Demo: five ``accessfabric node run`` processes with ``[control]`` and their traffic targets.

Every node enrolls itself with a role token and heartbeats its listeners and measured
sessions; the directory tells each one whom to dial:

* home (``service-host``) hosts ``web`` (a Python HTTP server) and ``term`` (a TCP echo
  server standing in for a remote shell, :mod:`accessfabric.demo.echo`), each a process
  of its own;
* relay-1 and relay-2 (``relay``) keep a session to home (their only static peer);
* entry (``entry``) learns the relays from its directory;
* laptop (``mobile-edge``) knows nothing but the control plane: its directory gives it
  entry, and its ``[[forwards]]`` (``web`` in class bulk, ``term`` interactive) take
  the control plane's route leases.

Laptop is started once the planner has measured links to plan over (entry to both
relays, both relays to home), so its first route leases carry a primary and an
alternate.  The planner picks between the two relays by measured RTT; the one on
laptop's primary route to ``web`` is then called relay-a, the other relay-b.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from accessfabric.demo.control import Control, create_grant, create_tokens
from accessfabric.demo.procs import COMMAND, DemoFailed, Processes, free_port
from accessfabric.identity.keys import NodeKey
from accessfabric.node.admin.status import fetch_status

ROLES = {
    "laptop": "mobile-edge",
    "entry": "entry",
    "relay-1": "relay",
    "relay-2": "relay",
    "home": "service-host",
}
SERVICE = "web"
TERM = "term"
"""The interactive service: a TCP echo server standing in for a remote shell."""
CONSOLE = "admin-console"
CONSOLE_HOST = "admin.localhost"
"""The console's name at entry's HTTP ingress (``*.localhost`` resolves to loopback)."""
HEARTBEAT = 0.5
"""Seconds between heartbeats: the demo wants the planner to learn its links quickly."""
WAIT = 30.0
PORTS = ("home", "http", "term", "forward_web", "forward_term", "metrics", "console", "ingress")
"""What :func:`start_fleet` picks a free port for."""
ECHO = "accessfabric.demo.echo"
"""The module of ``term``'s echo server and the interactive client (their own processes)."""


@dataclass
class Fleet:
    work: Path
    ids: dict[str, str] = field(default_factory=dict)
    """Process name -> node id."""
    labels: dict[str, str] = field(default_factory=dict)
    """Node id -> what the demo calls it (relay-1/relay-2 become relay-a/relay-b)."""
    ports: dict[str, int] = field(default_factory=dict)
    file_size: int = 0
    sha256: bytes = b""
    primary: list[str] = field(default_factory=list)
    """Node ids of laptop's primary route to ``web``, laptop first."""
    alternate: list[str] = field(default_factory=list)
    term_primary: list[str] = field(default_factory=list)
    admin_token: str = ""
    """The control plane's admin token: the console's login."""
    ready_after: float = 0.0
    """Seconds from the demo's start until laptop held its route leases."""

    def admin(self, name: str) -> Path:
        return self.work / f"{name}.admin.sock"

    def label(self, node_id: str) -> str:
        return self.labels.get(node_id, node_id[:12] + "…")

    def process(self, label: str) -> str:
        """The process name of the node the demo calls ``label``."""
        node_id = next(i for i, name in self.labels.items() if name == label)
        return next(name for name, i in self.ids.items() if i == node_id)

    def path(self, hops: list[str]) -> str:
        return " -> ".join(self.label(h) for h in hops)


def _config(name: str, fleet: Fleet, control: Control, token: str) -> Path:
    ports = fleet.ports
    lines = [
        f'key_path = "{name}.key"',
        f'roles = ["{ROLES[name]}"]',
        "drain_timeout = 2",
    ]
    if name == "laptop":
        lines.append(f'metrics_listen = "127.0.0.1:{ports["metrics"]}"')
    else:
        port = ports["home"] if name == "home" else 0
        lines += ["[[listen]]", 'carrier = "tcp"', f'address = "127.0.0.1:{port}"']
    if name == "home":
        lines += [
            "[[services]]", f'name = "{CONSOLE}"', f'target = "127.0.0.1:{ports["console"]}"',
            'traffic_class = "interactive"', 'mode = "active-active"',
            # default deny: only entry's ingress reaches the console (web and term: the
            # control plane's grant to the laptop's role, start_fleet)
            f'allow = ["{fleet.ids["entry"]}"]',
            "[[services]]", f'name = "{SERVICE}"', f'target = "127.0.0.1:{ports["http"]}"',
            'traffic_class = "bulk"',
            "[[services]]", f'name = "{TERM}"', f'target = "127.0.0.1:{ports["term"]}"',
            'traffic_class = "interactive"',
        ]  # fmt: skip
    if name == "laptop":
        lines += [
            "[[forwards]]", f'listen = "127.0.0.1:{ports["forward_web"]}"',
            f'service = "{SERVICE}"', 'traffic_class = "bulk"',
            "[[forwards]]", f'listen = "127.0.0.1:{ports["forward_term"]}"',
            f'service = "{TERM}"', 'traffic_class = "interactive"',
        ]  # fmt: skip
    if name == "entry":
        lines += [
            "[[ingress]]", f'listen = "127.0.0.1:{ports["ingress"]}"', 'protocol = "http"',
            f'hosts = {{ "{CONSOLE_HOST}" = "{CONSOLE}" }}',
        ]  # fmt: skip
    if name.startswith("relay-"):
        lines += [
            "[[peers]]", f'node_id = "{fleet.ids["home"]}"',
            f'endpoints = ["tcp://127.0.0.1:{ports["home"]}"]', 'connect = "always"',
        ]  # fmt: skip
    lines += [
        "[control]",
        (
            "urls = [" + ", ".join(f'"{url}"' for url in control.urls) + "]"
            if control.urls
            else f'url = "{control.url}"'
        ),
        f'authority_key = "{control.authority}"',
        f'token = "{token}"',
        f"heartbeat_interval = {HEARTBEAT}",
    ]
    path = fleet.work / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _site(fleet: Fleet, size: int) -> Path:
    site = fleet.work / "site"
    site.mkdir()
    blob = os.urandom(size)
    (site / "blob.bin").write_bytes(blob)
    fleet.file_size, fleet.sha256 = size, hashlib.sha256(blob).digest()
    return site


async def start_fleet(work: Path, procs: Processes, control: Control, size: int) -> Fleet:
    fleet = Fleet(work)
    for name in PORTS:
        fleet.ports[name] = free_port()
    for name in ROLES:
        key = NodeKey.generate()
        key.save(work / f"{name}.key")
        fleet.ids[name] = key.node_id
        fleet.labels[key.node_id] = name
    tokens = await create_tokens(control, ROLES.values())
    # Services are default deny: the laptop (mobile-edge, tenant demo) may reach both,
    # and every node's own echo (what `accessfabric ping` uses).
    await create_grant(control, "demo", (SERVICE, TERM, "echo"), roles=(ROLES["laptop"],))
    print(
        f"    grant: tenant demo, role {ROLES['laptop']} -> {SERVICE}, {TERM}, echo "
        "(accessfabric control grant create)"
    )
    site = _site(fleet, size)
    http = [sys.executable, "-m", "http.server", str(fleet.ports["http"]), "--bind", "127.0.0.1"]
    procs.start("http", http, cwd=site)
    _start_console(fleet, procs, control)
    procs.start("term", [sys.executable, "-m", ECHO, "serve", str(fleet.ports["term"])], cwd=work)
    for name in ("home", "relay-1", "relay-2"):
        _start_node(name, fleet, procs, control, tokens)
    await _wait_heard(fleet, procs, control, ("home", "relay-1", "relay-2"))
    _start_node("entry", fleet, procs, control, tokens)
    await _wait_port(fleet.ports["http"], "the demo HTTP server", procs, "http")
    await _wait_port(fleet.ports["term"], "the demo echo server", procs, "term")
    await _wait_links(fleet, procs, control)
    _start_node("laptop", fleet, procs, control, tokens)
    await _wait_leases(fleet, procs)
    return fleet


def _start_console(fleet: Fleet, procs: Processes, control: Control) -> None:
    """The admin console behind home (the fabric service ``admin-console``)."""
    fleet.admin_token = control.admin_token
    token_file = fleet.work / "admin.token"
    token_file.write_text(control.admin_token + "\n")
    token_file.chmod(0o600)
    procs.start(
        "console",
        [*COMMAND, "console", "serve", "--listen", f"127.0.0.1:{fleet.ports['console']}",
         "--control", control.url, "--authority-key", control.authority,
         "--admin-token-file", str(token_file), "--served-by", "home"],
    )  # fmt: skip


def console_url(fleet: Fleet) -> str:
    return f"http://{CONSOLE_HOST}:{fleet.ports['ingress']}/"


def _start_node(
    name: str, fleet: Fleet, procs: Processes, control: Control, tokens: dict[str, str]
) -> None:
    config = _config(name, fleet, control, tokens[ROLES[name]])
    procs.start(name, [*COMMAND, "node", "run", "--config", str(config)])


async def _wait_port(port: int, what: str, procs: Processes, name: str) -> None:
    deadline = time.monotonic() + WAIT
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            _check(procs, name, deadline, f"{what} did not start")
            await asyncio.sleep(0.1)


def _check(procs: Processes, name: str, deadline: float, what: str) -> None:
    if procs.children[name].poll() is not None or time.monotonic() > deadline:
        raise DemoFailed(f"{what}; the end of its log:\n{procs.tail(name)}")


async def _status(fleet: Fleet, name: str) -> dict[str, Any] | None:
    try:
        return await fetch_status(fleet.admin(name), timeout=2.0)
    except (OSError, aiohttp.ClientError, TimeoutError):
        return None


def _peers_up(status: dict[str, Any] | None) -> set[str]:
    if status is None:
        return set()
    return {s["peer"] for s in status.get("sessions", []) if s.get("state") == "ready"}


async def _heartbeats(control: Control) -> dict[str, int]:
    """Heartbeats per node, summed over every replica (each counts what it received)."""
    headers = {"Authorization": f"Bearer {control.admin_token}"}
    counts: dict[str, int] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as client:
        for url in control.urls or [control.url]:
            async with client.get(
                f"{url}/v1/admin/nodes", headers=headers, ssl=control.pin
            ) as response:
                body = await response.json()
            for node in body.get("nodes", []):
                counts[node["node_id"]] = counts.get(node["node_id"], 0) + int(
                    node.get("heartbeats", 0)
                )
    return counts


async def _wait_heard(
    fleet: Fleet, procs: Processes, control: Control, names: tuple[str, ...]
) -> None:
    """Until the control plane has a heartbeat from each of ``names``.

    Entry starts after that: a directory fetched between a node's enrollment and its
    first heartbeat lacks the node, and the directory's version does not change when
    the heartbeat arrives, so entry would not learn that relay until something else
    changed (a known gap of the control plane's directory versioning).
    """
    deadline = time.monotonic() + WAIT
    while True:
        heard = await _heartbeats(control)
        if all(heard.get(fleet.ids[n], 0) for n in names):
            return
        for name in names:
            _check(procs, name, deadline, f"{name} did not heartbeat")
        await asyncio.sleep(0.1)


async def _wait_links(fleet: Fleet, procs: Processes, control: Control) -> None:
    """Until entry has sessions to both relays, both relays to home, and each heartbeated."""
    ids = fleet.ids
    needs = {
        "entry": {ids["relay-1"], ids["relay-2"]},
        "relay-1": {ids["home"]},
        "relay-2": {ids["home"]},
    }
    deadline = time.monotonic() + WAIT
    waiting = dict(needs)
    while waiting:
        for name in list(waiting):
            _check(procs, name, deadline, f"{name} did not reach its peers")
            if waiting[name] <= _peers_up(await _status(fleet, name)):
                del waiting[name]
        await asyncio.sleep(0.1)
    seen = await _heartbeats(control)  # the next heartbeat of each carries the link RTTs
    while True:
        now = await _heartbeats(control)
        if all(now.get(ids[n], 0) > seen.get(ids[n], 0) for n in needs):
            return
        _check(procs, "entry", deadline, "the nodes stopped heartbeating")
        await asyncio.sleep(0.1)


async def _wait_leases(fleet: Fleet, procs: Processes) -> None:
    """Until laptop holds route leases for both forwards; learn the routes' paths."""
    deadline = time.monotonic() + WAIT
    wanted = {(SERVICE, "bulk"), (TERM, "interactive")}
    while True:
        _check(procs, "laptop", deadline, "laptop got no route leases")
        rows = (await _status(fleet, "laptop") or {}).get("routes", [])
        if wanted <= {(r["service"], r["class"]) for r in rows}:
            web = [r for r in rows if r["service"] == SERVICE]
            primary = next((r for r in web if r["rank"] == "primary"), web[0])
            alternate = next((r for r in web if r is not primary), None)
            fleet.primary = list(primary["path"])
            fleet.alternate = list((alternate or {}).get("path") or [])
            term = [r for r in rows if r["service"] == TERM]
            fleet.term_primary = list(
                next((r for r in term if r["rank"] == "primary"), term[0])["path"]
            )
            _name_relays(fleet)
            return
        await asyncio.sleep(0.2)


def _name_relays(fleet: Fleet) -> None:
    first = next((h for h in fleet.primary if fleet.labels.get(h, "").startswith("relay-")), None)
    order = ["relay-1", "relay-2"]
    if first == fleet.ids["relay-2"]:
        order.reverse()
    for name, label in zip(order, ("relay-a", "relay-b"), strict=True):
        fleet.labels[fleet.ids[name]] = label
