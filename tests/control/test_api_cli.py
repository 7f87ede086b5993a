"""Real processes: ``control init`` + ``control serve`` + three agents + ``control nodes``."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

COMMAND = [sys.executable, "-m", "accessfabric.control.server.cli", "control"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCESSFABRIC_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *args], capture_output=True, text=True, timeout=30, env=env or _env()
    )


def _start(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*COMMAND, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )


def _line(process: subprocess.Popen[str], pattern: str, timeout: float = 15.0) -> re.Match[str]:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        match = re.search(pattern, line)
        if match:
            return match
        if not line and process.poll() is not None:
            break
    raise AssertionError(f"no line matching {pattern!r}")


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    if process.stdout is not None:
        process.stdout.close()


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in reversed(started):
        _stop(process)


@pytest.mark.slow
def test_three_nodes_show_up_in_control_nodes(
    tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    init = _run("init", "--data", str(tmp_path / "data"))
    assert init.returncode == 0, init.stderr
    authority = re.search(r"afauth1[a-z2-7]+", init.stdout)
    admin = re.search(r"afadm1_[0-9a-f]+_[a-z2-7]+", init.stdout)
    assert authority and admin
    again = _run("init", "--data", str(tmp_path / "data"))
    assert again.returncode == 2 and "already initialised" in again.stderr
    assert "Traceback" not in again.stderr

    server = _start(
        "serve",
        "--data",
        str(tmp_path / "data"),
        "--listen",
        "127.0.0.1:0",
        "--heartbeat-interval",
        "0.5s",
        env=_env(),
    )
    processes.append(server)
    url = _line(server, r"serving on (https://\S+)").group(1)  # TLS by default (ADR 0017)
    env = _env(
        ACCESSFABRIC_CONTROL_URL=url,
        ACCESSFABRIC_ADMIN_TOKEN=admin.group(0),
        ACCESSFABRIC_AUTHORITY_KEY=authority.group(0),
    )

    denied = _run(
        "nodes",
        env=_env(ACCESSFABRIC_CONTROL_URL=url, ACCESSFABRIC_AUTHORITY_KEY=authority.group(0)),
    )
    assert denied.returncode == 2 and "admin token" in denied.stderr
    bad = _run("token", "create", "--tenant", "acme", "--roles", "wizard", env=env)
    assert bad.returncode == 2 and "unknown role" in bad.stderr and "Traceback" not in bad.stderr
    assert (
        _run("token", "create", "--tenant", "acme", "--roles", "x", "--ttl", "soon").returncode == 2
    )

    ids = {}
    for name, roles in (
        ("laptop", "mobile-edge"),
        ("relay", "entry,relay"),
        ("host", "service-host"),
    ):
        key = tmp_path / f"{name}.key"
        keygen = subprocess.run(
            [sys.executable, "-m", "accessfabric", "keygen", "--out", str(key)],
            capture_output=True,
            text=True,
            env=_env(),
            timeout=30,
        )
        assert keygen.returncode == 0, keygen.stderr
        ids[name] = keygen.stdout.strip()
        token = _run(
            "token", "create", "--tenant", "acme", "--roles", roles, "--ttl", "10m", env=env
        )
        assert token.returncode == 0, token.stderr
        ids[f"{name}-token"] = token.stdout.strip()
    for name, extra in (
        ("laptop", ["--peer", f"{ids['relay']}=20"]),
        ("relay", ["--peer", f"{ids['host']}=5", "--peer", f"{ids['laptop']}=20"]),
        ("host", ["--service", "rdp", "--peer", f"{ids['relay']}=5"]),
    ):
        agent = _start(
            "agent",
            "--key",
            str(tmp_path / f"{name}.key"),
            "--authority",
            authority.group(0),
            "--state",
            str(tmp_path / f"{name}.state"),
            "--token",
            ids[f"{name}-token"],
            *extra,
            env=env,
        )
        processes.append(agent)
        _line(agent, r"^enrolled ")

    deadline = time.monotonic() + 15
    listing: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        nodes = _run("nodes", "--json", env=env)
        assert nodes.returncode == 0, nodes.stderr
        listing = json.loads(nodes.stdout)
        if len(listing) == 3 and all(n["health"] == "healthy" for n in listing):
            break
        time.sleep(0.3)
    assert {n["node_id"]: n["roles"] for n in listing} == {
        ids["laptop"]: ["mobile-edge"],
        ids["relay"]: ["entry", "relay"],
        ids["host"]: ["service-host"],
    }
    assert all(n["health"] == "healthy" for n in listing), listing
    table = _run("nodes", env=env).stdout
    assert table.splitlines()[0].split()[:4] == ["NODE", "ROLES", "TENANT", "HEALTH"]
    assert all(ids[name] in table for name in ("laptop", "relay", "host"))

    lease_args = [
        "lease",
        "--key",
        str(tmp_path / "laptop.key"),
        "--authority",
        authority.group(0),
        "--state",
        str(tmp_path / "laptop.state"),
        "--service",
        "rdp",
    ]
    lease = _run(*lease_args, env=env)
    assert lease.returncode == 0, lease.stderr
    assert f"{ids['laptop']} -> {ids['relay']} -> {ids['host']}" in lease.stdout

    revoke = _run("revoke-role", ids["relay"], "entry", env=env)
    assert revoke.returncode == 0 and "roles now relay" in revoke.stdout
    listing = json.loads(_run("nodes", "--json", env=env).stdout)
    assert {n["node_id"]: n["roles"] for n in listing}[ids["relay"]] == ["relay"]

    _stop(server)
    cached = _run(*lease_args, env=env)
    assert cached.returncode == 0, cached.stderr
    assert "(from cache) control plane UNREACHABLE" in cached.stdout
    unreachable = _run("nodes", env=env)
    assert unreachable.returncode == 3 and "cannot reach" in unreachable.stderr
