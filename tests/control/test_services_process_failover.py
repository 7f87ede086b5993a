"""Service failover with real processes: the leader replica's agent is SIGKILLed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.control.test_api_cli import _env, _line, _run, _start, processes  # noqa: F401


def _services(url: str, admin: str) -> list[dict[str, Any]]:
    request = urllib.request.Request(
        url + "/v1/admin/services", headers={"Authorization": f"Bearer {admin}"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # loopback only
        services: list[dict[str, Any]] = json.loads(response.read())["services"]
        return services


def _leader(url: str, admin: str, service: str) -> tuple[str | None, int]:
    for view in _services(url, admin):
        if view["service"] == service:
            return view["leader"], int(view["epoch"])
    return None, 0


def _wait_leader(url: str, admin: str, want: str, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    leader, epoch = None, 0
    while time.monotonic() < deadline:
        leader, epoch = _leader(url, admin, "rdp")
        if leader == want:
            return epoch
        time.sleep(0.2)
    raise AssertionError(f"leader is {leader} (epoch {epoch}), expected {want}")


@pytest.mark.slow
def test_follower_takes_over_when_the_leader_process_is_killed(
    tmp_path: Path,
    processes: list[subprocess.Popen[str]],  # noqa: F811
) -> None:
    init = _run("init", "--data", str(tmp_path / "data"))
    assert init.returncode == 0, init.stderr
    authority = re.search(r"afauth1[a-z2-7]+", init.stdout)
    admin = re.search(r"afadm1_[0-9a-f]+_[a-z2-7]+", init.stdout)
    assert authority and admin
    server = _start(
        "serve", "--data", str(tmp_path / "data"), "--listen", "127.0.0.1:0",
        "--heartbeat-interval", "0.5s", "--replica-ttl", "2s",
        "--insecure-http",  # loopback; TLS is tested in test_api_cli and test_api_tls_limits
        env=_env(),
    )  # fmt: skip
    processes.append(server)
    url = _line(server, r"serving on (http://\S+)").group(1)
    env = _env(ACCESSFABRIC_CONTROL_URL=url, ACCESSFABRIC_ADMIN_TOKEN=admin.group(0))
    agents: dict[str, subprocess.Popen[str]] = {}
    ids: dict[str, str] = {}
    for name in ("host-a", "host-b"):
        key = tmp_path / f"{name}.key"
        keygen = subprocess.run(
            [sys.executable, "-m", "accessfabric", "keygen", "--out", str(key)],
            capture_output=True, text=True, env=_env(), timeout=30,
        )  # fmt: skip
        assert keygen.returncode == 0, keygen.stderr
        ids[name] = keygen.stdout.strip()
        token = _run(
            "token", "create", "--tenant", "acme", "--roles", "service-host", "--ttl", "10m",
            env=env,
        )  # fmt: skip
        assert token.returncode == 0, token.stderr
        agent = _start(
            "agent", "--key", str(key), "--authority", authority.group(0),
            "--state", str(tmp_path / f"{name}.state"), "--token", token.stdout.strip(),
            "--service", "rdp", "--service-mode", "leader-follower", env=env,
        )  # fmt: skip
        processes.append(agent)
        agents[name] = agent
        _line(agent, r"^enrolled ")
        if name == "host-a":  # host-a registers first: it is elected leader
            first_epoch = _wait_leader(url, admin.group(0), ids["host-a"], timeout=15)

    agents["host-a"].kill()  # SIGKILL: no goodbye, the replica lease must run out
    agents["host-a"].wait(timeout=10)
    killed_at = time.monotonic()
    new_epoch = _wait_leader(url, admin.group(0), ids["host-b"], timeout=15)
    took = time.monotonic() - killed_at
    assert new_epoch > first_epoch  # the take-over went through the epoch CAS
    assert took < 10, f"failover took {took:.1f} s with a 2 s replica TTL"
