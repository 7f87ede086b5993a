"""Topology in real namespaces: ping, routing, teardown, nft loss and tc tbf rate."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from accessfabric.sim import CommandError, Topology
from accessfabric.sim.namespaces import list_namespaces

pytestmark = pytest.mark.netns

THROUGHPUT_TOOL = str(Path(__file__).with_name("throughput_tool.py"))


def ping_loss_percent(output: str) -> float:
    match = re.search(r"([0-9.]+)% packet loss", output)
    assert match, output
    return float(match.group(1))


def test_two_hosts_ping_and_everything_is_removed(ping: str) -> None:
    with Topology(prefix="aft") as topo:
        topo.add_host("phone")
        topo.add_host("entry")
        link = topo.link("phone", "entry")
        names = topo.namespaces
        assert set(names) <= set(list_namespaces())
        assert link.address("phone") == topo.host_addr("phone", "entry")
        for src, dst in (("phone", "entry"), ("entry", "phone")):
            address = topo.host_addr(dst, src)
            done = topo.run(src, [ping, "-c", "3", "-i", "0.2", "-W", "1", address])
            assert ping_loss_percent(done.stdout) == 0.0
        six = topo.host_addr("entry", "phone", family=6)
        topo.run("phone", [ping, "-6", "-c", "1", "-W", "1", six])
        sleeper = topo.popen("entry", ["sleep", "60"])
    assert sleeper.poll() is not None
    assert not set(names) & set(list_namespaces())


def test_teardown_happens_when_the_body_fails() -> None:
    topo = Topology(prefix="aft")
    with pytest.raises(ZeroDivisionError), topo:
        topo.add_host("a")
        topo.add_host("b")
        topo.link("a", "b")
        _ = 1 / 0
    assert not set(topo.namespaces) & set(list_namespaces())


def test_routes_through_a_forwarding_host(topo: Topology, ping: str) -> None:
    topo.add_host("phone")
    topo.add_host("entry", forwarding=True)
    topo.add_host("exit")
    topo.link("phone", "entry")
    topo.link("entry", "exit")
    topo.route("phone", "default", via="entry")
    topo.route("exit", "10.231.0.0/30", via="entry")
    topo.route("phone", "default6", via="entry")
    topo.route("exit", "fd00:af::/64", via="entry")
    topo.run("phone", [ping, "-c", "2", "-i", "0.2", "-W", "1", topo.host_addr("exit", "entry")])
    six = topo.host_addr("exit", "entry", family=6)
    topo.run("phone", [ping, "-6", "-c", "2", "-i", "0.2", "-W", "1", six])


def test_command_errors_carry_command_and_stderr(topo: Topology) -> None:
    topo.add_host("a")
    with pytest.raises(CommandError, match=r"exit 4.*ip netns exec aft-.*no luck"):
        topo.run("a", ["sh", "-c", "echo no luck >&2; exit 4"])
    with pytest.raises(KeyError, match="unknown host"):
        topo.run("nobody", ["true"])


def test_cleanup_stale_removes_only_dead_owners(topo: Topology) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    tag = secrets.token_hex(3)  # concurrent runs of this test must not see each other's
    stale = f"afstale-{dead.pid}-{tag}-x"
    alive = f"afstale-{os.getpid()}-{tag}-y"
    subprocess.run(["ip", "netns", "add", stale], check=True)
    subprocess.run(["ip", "netns", "add", alive], check=True)
    try:
        assert stale in Topology.cleanup_stale("afstale")
        assert stale not in list_namespaces()
        assert alive in list_namespaces()
    finally:
        for name in (stale, alive):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def test_nft_loss_half_of_the_pings(topo: Topology, ping: str) -> None:
    topo.add_host("phone")
    topo.add_host("entry")
    topo.link("phone", "entry")
    topo.set_loss("phone", "entry", 50)
    # Dropped on arrival at entry: the phone's own stack never sees the drop.
    assert "numgen" not in topo.run("phone", ["nft", "list", "ruleset"]).stdout
    rules = topo.run("entry", ["nft", "list", "ruleset"]).stdout
    assert "numgen random mod 10000 < 5000 drop" in rules
    argv = [ping, "-q", "-c", "40", "-i", "0.05", "-W", "1", topo.host_addr("entry", "phone")]
    done = topo.run("phone", argv, check=False)
    assert 25.0 <= ping_loss_percent(done.stdout) <= 75.0, done.stdout
    topo.clear_impairments("phone", "entry")
    assert "numgen" not in topo.run("entry", ["nft", "list", "ruleset"]).stdout
    argv[argv.index("40")] = "5"
    assert ping_loss_percent(topo.run("phone", argv).stdout) == 0.0


def test_tbf_rate_limit_measured_with_tcp(topo: Topology) -> None:
    topo.add_host("sender")
    topo.add_host("receiver")
    topo.link("sender", "receiver")
    topo.set_rate("sender", "receiver", rate="10mbit", burst="32kb", latency="50ms")
    dev = topo.host_dev("sender", "receiver")
    show = ["tc", "-n", topo.ns("sender"), "qdisc", "show", "dev", dev]
    qdisc = subprocess.run(show, capture_output=True, text=True, check=True).stdout
    assert "tbf" in qdisc and "10Mbit" in qdisc
    server = topo.popen(
        "receiver", [sys.executable, THROUGHPUT_TOOL, "recv", "5201", "1.5"], stdout=subprocess.PIPE
    )
    assert server.stdout is not None
    assert server.stdout.readline().strip() == b"ready"
    address = topo.host_addr("receiver", "sender")
    topo.run("sender", [sys.executable, THROUGHPUT_TOOL, "send", address, "5201", "4"])
    result = json.loads(server.stdout.readline())
    mbit_per_s = result["bytes"] * 8 / result["seconds"] / 1e6
    assert 7.0 <= mbit_per_s <= 11.0, result
    topo.clear_impairments("sender", "receiver")
    topo.clear_impairments("sender", "receiver")  # idempotent
