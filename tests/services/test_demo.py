"""``accessfabric demo`` end to end (short): real nodes, relay-a killed, exit 0, nothing left."""

from __future__ import annotations

import datetime
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path


def _left(work: str) -> list[str]:
    """Processes of the run that ``work`` names: by command line, or by working directory
    (the HTTP server and the echo ends run in it, their command lines do not name it)."""
    found = subprocess.run(["pgrep", "-f", work], capture_output=True, text=True).stdout.split()
    for proc in Path("/proc").iterdir():
        try:
            if os.readlink(proc / "cwd").startswith(work):
                found.append(f"{proc.name} (cwd)")
        except OSError:
            continue
    return found


def test_demo_short_run() -> None:
    """Run with ``--json``: the human output on stderr, one JSON summary on stdout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCESSFABRIC_")}
    done = subprocess.run(
        [sys.executable, "-m", "accessfabric", "demo", "--duration", "4", "--size-mib", "4",
         "--json"],
        capture_output=True, text=True, timeout=150, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stderr
    summary = json.loads(done.stdout)
    assert summary["ok"] is True and summary["exit_code"] == 0
    datetime.datetime.strptime(summary["time"], "%Y-%m-%dT%H:%M:%S.%fZ")
    names = [n["name"] for n in summary["nodes"]]
    assert names == ["laptop", "entry", "relay-a", "relay-b", "home"]
    assert summary["routes"] == {
        "primary": ["laptop", "entry", "relay-a", "home"],
        "alternate": ["laptop", "entry", "relay-b", "home"],
    }
    assert summary["bulk"]["copies"] >= 1 and summary["bulk"]["sha256_mismatches"] == 0
    assert summary["bulk"]["file_bytes"] == 4 << 20
    assert summary["failover"]["streams_resumed"] >= 2
    assert summary["failover"]["recovery_ms"] is not None
    interactive = summary["interactive"]
    assert interactive["echoes"] > 0 and interactive["p99_ms"] > 0
    assert interactive["p99_outside_failover_ms"] > 0
    assert interactive["failover_echoes"] >= 1  # those sent in the second after the kill
    assert interactive["over_10ms_count"] >= len(interactive["over_10ms"])
    for slow in interactive["over_10ms"]:  # each echo above 10 ms, with when it was sent
        assert slow["rtt_ms"] > 10 and 0 <= slow["at_s"] < 4 + 1
        assert isinstance(slow["failover"], bool)
    assert summary["errors"] == [] and summary["control"] == {"store": "sqlite"}
    # laptop pings home through the fabric: a route lease to home's echo, via a relay
    ping = summary["ping"]
    assert ping["ok"] and ping["via"] == "relays" and len(ping["rtts_ms"]) == 3, ping
    assert ping["path"][:2] == ["laptop", "entry"] and ping["path"][-1] == "home", ping
    assert ping["path"][2] in ("relay-a", "relay-b"), ping
    assert re.search(r"laptop -> entry -> relay-\w -> home: 3 round trips end to end", out)
    for name, roles in (("laptop", "mobile-edge"), ("entry", "entry"), ("relay-a", "relay"),
                        ("relay-b", "relay"), ("home", "service-host")):  # fmt: skip
        assert re.search(rf"^    {name} +afn1\w+…  roles {roles}$", out, re.M), name
    assert "primary    laptop -> entry -> relay-a -> home" in out
    assert "alternate  laptop -> entry -> relay-b -> home" in out
    assert "relay-a KILLED (SIGKILL)" in out
    assert re.search(r"\d stream\(s\) resumed via relay-b", out)  # the live view saw it
    copies = re.search(r"bulk downloads +(\d+) x 4 MiB", out)
    assert copies and int(copies.group(1)) >= 1
    assert "sha256            verified for every copy" in out
    failovers = re.search(r"relay-a killed +(\d+) streams resumed via relay-b", out)
    assert failovers and int(failovers.group(1)) >= 2  # the download and the echo session
    recovery = re.search(r"recovery +(\d+) ms from the kill", out)
    assert recovery, out
    assert re.search(
        r"p50 \d+\.\d\d ms, p99 \d+\.\d\d ms \(outside the failover's first second: "
        r"\d+\.\d\d ms, \d+ left out\)",
        out,
    )
    assert "result            ok" in out
    work = out.split("in ", 1)[1].split()[0]
    assert summary["work_dir"] == work
    assert not os.path.exists(work)  # the temp dir is gone
    assert _left(work) == []  # no process of this run remains


def test_demo_stopped_by_sigterm_leaves_nothing() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCESSFABRIC_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "accessfabric", "demo", "--duration", "60", "--size-mib", "4"],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    first = proc.stdout.readline()
    work = first.split("in ", 1)[1].split()[0]
    console = ""
    for line in proc.stdout:  # until the traffic runs through the nodes
        if "admin console" in line:
            console = line.split(": ", 1)[1].strip()
        if "bulk Mbit/s" in line:
            break
    # The console, served by home, answers through entry's HTTP ingress by host name.
    match = re.fullmatch(r"http://(admin\.localhost):(\d+)/", console)
    assert match, console
    login = subprocess.run(
        ["curl", "-sS", "-m", "10", "--resolve", f"{match[1]}:{match[2]}:127.0.0.1",
         console + "login"], capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert "<h1>Log in</h1>" in login.stdout, login.stdout + login.stderr
    running = subprocess.run(["pgrep", "-f", work], capture_output=True, text=True)
    assert len(running.stdout.split()) >= 6  # control plane and five nodes
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 130
    proc.stdout.close()
    assert not os.path.exists(work)
    assert _left(work) == []


def test_demo_on_etcd_survives_the_etcd_leader_and_a_replica_dying() -> None:
    from accessfabric.control.server.store.etcd_cluster import etcd_binary

    if etcd_binary() is None:
        import pytest

        pytest.skip("etcd is not installed on this machine (apt-get install etcd-server)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCESSFABRIC_")}
    done = subprocess.run(
        [sys.executable, "-m", "accessfabric", "demo", "--control", "etcd",
         "--duration", "6", "--size-mib", "4"],
        capture_output=True, text=True, timeout=180, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert re.search(r"etcd: 3 members \S+, \S+, \S+ \(leader m\d\)", out)
    assert re.search(r"SIGKILL etcd leader m\d", out)
    assert "SIGKILL control replica https://127.0.0.1:" in out
    assert "sha256            verified for every copy" in out
    assert "control result    ok" in out
    for name in ("laptop", "entry", "relay-b", "home"):
        assert re.search(rf"^      {name} +healthy +last heartbeat", out, re.M), name
    work = out.split("in ", 1)[1].split()[0]
    assert not os.path.exists(work)
    assert _left(work) == []  # etcd members and replicas included
