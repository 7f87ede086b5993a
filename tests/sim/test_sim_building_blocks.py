"""Pure helpers of the harness: units, address plan, nft/tc scripts, namespace names."""

from __future__ import annotations

import ipaddress

import pytest

from accessfabric.sim.addressing import AddressPlan
from accessfabric.sim.commands import CommandError, run_command
from accessfabric.sim.impairments import delete_loss_ruleset, loss_ruleset, tbf_argv
from accessfabric.sim.namespaces import NamespaceName
from accessfabric.sim.units import parse_duration, parse_rate


def test_parse_duration_and_rate() -> None:
    assert parse_duration("20ms") == pytest.approx(0.020)
    assert parse_duration("1.5s") == 1.5
    assert parse_duration("250us") == pytest.approx(0.00025)
    assert parse_duration(0.1) == 0.1
    assert parse_rate("800mbit") == 800e6
    assert parse_rate("10kbit") == 10e3
    for bad in ("20", "fast", "-1ms"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    with pytest.raises(ValueError):
        parse_rate("0mbit")


def test_address_plan_gives_disjoint_private_subnets() -> None:
    plan = AddressPlan()
    first, second = plan.link(0), plan.link(1)
    assert str(first.v4_a) == "10.231.0.1/30" and str(first.v4_b) == "10.231.0.2/30"
    assert str(second.v4_a) == "10.231.0.5/30"
    assert first.v4_a.network != second.v4_a.network
    assert str(first.v6_a) == "fd00:af::1/64"
    assert second.v6_b.ip == ipaddress.IPv6Address("fd00:af:0:1::2")
    with pytest.raises(ValueError):
        AddressPlan(v4_base="8.8.0.0/16")
    with pytest.raises(ValueError):
        plan.link(plan.capacity)


def test_loss_ruleset_syntax() -> None:
    script = loss_ruleset("veth0", 12.5)
    assert 'iifname "veth0" numgen random mod 10000 < 1250 drop' in script
    assert "hook prerouting" in script
    assert script.startswith("table inet af_loss_veth0 {}\ndelete table inet af_loss_veth0\n")
    assert delete_loss_ruleset("veth0").endswith("delete table inet af_loss_veth0\n")
    with pytest.raises(ValueError):
        loss_ruleset("veth0", 0)


def test_tbf_argv() -> None:
    assert tbf_argv("ns", "veth0", "10mbit", "32kb", "50ms")[-8:] == [
        "root", "tbf", "rate", "10mbit", "burst", "32kb", "latency", "50ms",
    ]  # fmt: skip


def test_namespace_name_round_trip() -> None:
    name = NamespaceName("af", 1234, "abc123", "exit-node")
    assert str(name) == "af-1234-abc123-exit-node"
    assert NamespaceName.parse(str(name)) == name
    assert NamespaceName.parse("some-other") is None


def test_command_error_names_command_and_stderr() -> None:
    with pytest.raises(CommandError) as info:
        run_command(["sh", "-c", "echo broken pipe dream >&2; exit 3"])
    message = str(info.value)
    assert "exit 3" in message and "sh -c" in message and "broken pipe dream" in message
    with pytest.raises(CommandError, match="not found"):
        run_command(["/nonexistent/tool"])
