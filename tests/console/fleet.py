"""A real fleet for the console and ingress tests: a control plane, five node processes and
two console replicas, every one on loopback, started and stopped by the test.

* ``entry`` (entry): ``[[ingress]]`` HTTP and HTTPS listeners: ``admin.example`` ->
  ``admin-console`` (HTTPS: ``admin-console-tls``), ``web.example`` -> ``web``,
  ``ghost.example`` -> ``ghost`` (a service nobody hosts);
* ``relay`` (relay): keeps sessions to both hosts;
* ``host-a``, ``host-b`` (service-host): each hosts ``admin-console`` (active-active, a
  ``console serve`` process of its own) and ``web`` (a Python HTTP server with a blob);
  ``host-a`` also ``admin-console-tls`` (a console serving HTTPS for ``admin.example``);
* ``laptop`` (mobile-edge): enrolled, nothing else.

Who may reach ``admin-console`` and ``web``: only ``entry`` (its ingress) opens streams to
them; services are default-deny, and the hosts' config allows exactly that (``_config``).
"""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from accessfabric.control.kernel.api_tls import pinned_https_connection
from accessfabric.control.kernel.authority_key import parse_authority_key
from accessfabric.demo.procs import COMMAND, Processes, free_port
from accessfabric.identity.keys import NodeKey

ROLES = {
    "host-a": "service-host",
    "host-b": "service-host",
    "relay": "relay",
    "entry": "entry",
    "laptop": "mobile-edge",
}
HOSTS = ("host-a", "host-b")
REPLICA_TTL = 3.0
SERVICE_LEASE_TTL = 4.0
HEARTBEAT = 0.5
WAIT = 60.0
BLOB_SIZE = 24 * 1024 * 1024


def wait_for(what: str, check: Callable[[], Any], timeout: float = WAIT, step: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(step)


def self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class ConsoleFleet:
    work: Path
    procs: Processes
    control_url: str = ""
    admin_token: str = ""
    authority: str = ""
    ids: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    cert: Path | None = None

    # ---------------------------------------------------------------- control API

    def admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """The control API over TLS, its certificate pinned through the authority key."""
        data = None if body is None else json.dumps(body).encode()
        url = urllib.parse.urlsplit(self.control_url)
        assert url.hostname is not None and url.port is not None
        connection = pinned_https_connection(
            url.hostname, url.port, parse_authority_key(self.authority), timeout=10
        )
        try:
            connection.request(
                method, path, body=data,
                headers={"Authorization": f"Bearer {self.admin_token}",
                         "Content-Type": "application/json"},
            )  # fmt: skip
            response = connection.getresponse()
            payload = response.read()
        finally:
            connection.close()
        if response.status >= 400:
            raise urllib.error.HTTPError(
                self.control_url + path, response.status, payload.decode(errors="replace"),
                response.headers, None,
            )  # fmt: skip
        return json.loads(payload)

    def heartbeats(self) -> dict[str, int]:
        nodes = self.admin("GET", "/v1/admin/nodes")["nodes"]
        return {n["node_id"]: int(n.get("heartbeats", 0)) for n in nodes}

    def replicas(self, service: str) -> set[str]:
        for entry in self.admin("GET", "/v1/admin/services")["services"]:
            if entry["service"] == service:
                return {r["node_id"] for r in entry["replicas"] if r["active"]}
        return set()

    def name_of(self, node_id: str) -> str:
        return next(name for name, i in self.ids.items() if i == node_id)

    # ---------------------------------------------------------------- processes

    def check_alive(self, *names: str) -> None:
        for name in names:
            proc = self.procs.children.get(name)
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"{name} exited:\n{self.procs.tail(name, 40)}")

    def kill(self, name: str) -> None:
        """SIGKILL a node (and its console, as a host machine dying would)."""
        for child in (name, f"console-{name}"):
            proc = self.procs.children.pop(child, None)
            if proc is not None:
                proc.kill()
                proc.wait(10)

    def stop(self) -> None:
        self.procs.stop_all()


def _cli(*args: str) -> str:
    done = subprocess.run([*COMMAND, *args], capture_output=True, text=True, timeout=60, env=_env())
    assert done.returncode == 0, done.stderr
    return done.stdout


def _env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("ACCESSFABRIC_")}
    out["PYTHONUNBUFFERED"] = "1"
    return out


def _config(fleet: ConsoleFleet, name: str, token: str) -> Path:
    ports = fleet.ports
    lines = [f'key_path = "{name}.key"', f'roles = ["{ROLES[name]}"]', "drain_timeout = 1"]
    if name != "laptop":
        lines += ["[[listen]]", 'carrier = "tcp"', f'address = "127.0.0.1:{ports[name]}"']
    if name == "relay":
        for host in HOSTS:
            lines += [
                "[[peers]]", f'node_id = "{fleet.ids[host]}"',
                f'endpoints = ["tcp://127.0.0.1:{ports[host]}"]', 'connect = "always"',
            ]  # fmt: skip
    if name in HOSTS:
        # admin-console and web: reached only by the entry node's ingress (services are
        # default-deny: each replica allows exactly the entry node).
        entry = f'allow = ["{fleet.ids["entry"]}"]'
        lines += [
            "[[services]]", 'name = "admin-console"',
            f'target = "127.0.0.1:{ports["console-" + name]}"',
            'traffic_class = "interactive"', 'mode = "active-active"', entry,
            "[[services]]", 'name = "web"', f'target = "127.0.0.1:{ports["http-" + name]}"',
            'traffic_class = "bulk"', 'mode = "active-active"', entry,
        ]  # fmt: skip
        if name == "host-a":
            lines += [
                "[[services]]", 'name = "admin-console-tls"',
                f'target = "127.0.0.1:{ports["console-tls"]}"',
                'traffic_class = "interactive"', 'mode = "active-active"', entry,
            ]  # fmt: skip
    if name == "entry":
        lines += [
            "[[ingress]]", f'listen = "127.0.0.1:{ports["ingress-http"]}"', 'protocol = "http"',
            'hosts = { "admin.example" = "admin-console", "web.example" = "web", '
            '"ghost.example" = "ghost" }',
            'classes = { "web.example" = "bulk" }',
            "max_header_bytes = 8192", "header_timeout = 3",
            "[[ingress]]", f'listen = "127.0.0.1:{ports["ingress-https"]}"',
            'protocol = "https"',
            'hosts = { "admin.example" = "admin-console-tls", "ghost.example" = "ghost" }',
        ]  # fmt: skip
    lines += [
        "[control]", f'url = "{fleet.control_url}"', f'authority_key = "{fleet.authority}"',
        f'token = "{token}"', f"heartbeat_interval = {HEARTBEAT}",
    ]  # fmt: skip
    path = fleet.work / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _start_consoles(fleet: ConsoleFleet) -> None:
    token_file = fleet.work / "admin.token"
    token_file.write_text(fleet.admin_token + "\n")
    token_file.chmod(0o600)
    for host in HOSTS:
        listen = f"127.0.0.1:{fleet.ports['console-' + host]}"
        fleet.procs.start(
            f"console-{host}",
            [*COMMAND, "console", "serve", "--listen", listen,
             "--control", fleet.control_url, "--authority-key", fleet.authority,
             "--admin-token-file", str(token_file),
             "--served-by", host],
        )  # fmt: skip
    cert, key = self_signed(fleet.work, "admin.example")
    fleet.cert = cert
    fleet.procs.start(
        "console-tls",
        [*COMMAND, "console", "serve", "--listen", f"127.0.0.1:{fleet.ports['console-tls']}",
         "--control", fleet.control_url, "--authority-key", fleet.authority,
         "--admin-token-file", str(token_file),
         "--tls-cert", str(cert), "--tls-key", str(key), "--served-by", "host-a-tls"],
    )  # fmt: skip
    site = fleet.work / "site"
    site.mkdir()
    (site / "blob.bin").write_bytes(os.urandom(BLOB_SIZE))
    for host in HOSTS:
        fleet.procs.start(
            f"http-{host}",
            [sys.executable, "-m", "http.server", str(fleet.ports["http-" + host]),
             "--bind", "127.0.0.1"],
            cwd=site,
        )  # fmt: skip


def _sessions_up(fleet: ConsoleFleet, name: str) -> set[str]:
    done = subprocess.run(
        [*COMMAND, "status", "--socket", str(fleet.work / f"{name}.admin.sock"), "--json"],
        capture_output=True, text=True, timeout=20, env=_env(),
    )  # fmt: skip
    if done.returncode != 0:
        return set()
    status = json.loads(done.stdout)
    return {s["peer"] for s in status.get("sessions", []) if s.get("state") == "ready"}


def start_fleet(work: Path) -> ConsoleFleet:
    procs = Processes(work)
    fleet = ConsoleFleet(work, procs)
    try:
        _start(fleet)
    except BaseException:
        procs.stop_all()
        raise
    return fleet


def _start(fleet: ConsoleFleet) -> None:
    work, procs = fleet.work, fleet.procs
    init = _cli("control", "init", "--data", str(work / "control"))
    admin = re.search(r"afadm1_[a-z0-9_]+", init)
    authority = re.search(r"afauth1[a-z2-7]+", init)
    assert admin and authority, init
    fleet.admin_token, fleet.authority = admin.group(), authority.group()
    port = free_port()
    fleet.control_url = f"https://127.0.0.1:{port}"  # TLS, pinned (ADR 0017)
    procs.start(
        "control",
        [*COMMAND, "control", "serve", "--data", str(work / "control"), "--listen",
         f"127.0.0.1:{port}", "--heartbeat-interval", "1s", "--replica-ttl", f"{REPLICA_TTL}s",
         "--service-lease-ttl", f"{SERVICE_LEASE_TTL}s"],
    )  # fmt: skip
    wait_for("the control plane", lambda: "serving on" in procs.log("control"))
    for name in (*ROLES, "console-host-a", "console-host-b", "console-tls", "http-host-a",
                 "http-host-b", "ingress-http", "ingress-https"):  # fmt: skip
        fleet.ports[name] = free_port()
    for name in ROLES:
        key = NodeKey.generate()
        key.save(work / f"{name}.key")
        fleet.ids[name] = key.node_id
    tokens = {}
    for role in sorted(set(ROLES.values())):
        uses = sum(1 for r in ROLES.values() if r == role)
        body = {"tenant": "acme", "roles": [role], "ttl_s": 3600, "uses": uses}
        tokens[role] = fleet.admin("POST", "/v1/admin/tokens", body)["token"]
    _start_consoles(fleet)

    def start(name: str) -> None:
        config = _config(fleet, name, tokens[ROLES[name]])
        procs.start(name, [*COMMAND, "node", "run", "--config", str(config)])

    for name in (*HOSTS, "relay"):
        start(name)

    def heard(names: tuple[str, ...]) -> bool:
        fleet.check_alive(*names)
        beats = fleet.heartbeats()
        return all(beats.get(fleet.ids[n], 0) for n in names)

    wait_for("hosts and relay heartbeats", lambda: heard((*HOSTS, "relay")))
    start("entry")
    wait_for(
        "entry -> relay -> hosts sessions",
        lambda: (
            fleet.check_alive("entry", "relay")
            or (
                fleet.ids["relay"] in _sessions_up(fleet, "entry")
                and {fleet.ids[h] for h in HOSTS} <= _sessions_up(fleet, "relay")
            )
        ),
        step=0.3,
    )
    seen = fleet.heartbeats()
    wait_for(
        "heartbeats carrying the links",
        lambda: all(fleet.heartbeats()[fleet.ids[n]] > seen[fleet.ids[n]] for n in ROLES
                    if n != "laptop"),
    )  # fmt: skip
    start("laptop")
    wait_for("all five nodes heard", lambda: heard(tuple(ROLES)))
    wait_for("both console replicas registered",
             lambda: fleet.replicas("admin-console") == {fleet.ids[h] for h in HOSTS})  # fmt: skip
